"""The demo page: uploads, sessions (one encoding per image), checkpoint messages, and the page in a
real browser (the system's Chromium through Playwright), offline."""

import contextlib
import io
import json
import re
import urllib.request

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from sca.app import split_overrides
from sca.app.browser_testing import chromium_path, open_page, point_on_segment, screen_point, serve_demo_app
from sca.app.session import DemoSession, UploadError, load_predictor, read_upload
from sca.config_loading import load_config
from sca.evaluation.caption_evaluator import load_predictions
from sca.modeling.build import build_model
from sca.predictor import AnythingConfig


def _save_tiny_checkpoint(directory, overrides=()):
    cfg = load_config(["model=tiny", *overrides])
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(directory)).save("model")
    return str(directory / "model.pth")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-initialised tiny captioner saved as a detectron2 checkpoint."""
    return _save_tiny_checkpoint(tmp_path_factory.mktemp("demo_app_model"))


# The untrained model's single click mask is empty everywhere; SAM's 3 candidates give the page's
# "caption everything" (filters opened up) non-empty masks to keep.
UNTRAINED_CLICKS = ["model.single_mask_prompt_types=[box,mask]"]


@pytest.fixture(scope="module")
def predictor(checkpoint):
    predictor, notice = load_predictor(load_config(["model=tiny", f"model.weights={checkpoint}", *UNTRAINED_CLICKS]), "cpu")
    assert predictor is not None and notice == ""
    return predictor


@pytest.fixture(scope="module")
def demo_image(demo_records):
    """A demo validation image and a point on its first shape (image pixels)."""
    record = demo_records["sca_demo_val"][0]
    return record["file_name"], point_on_segment(record, 0)


def test_command_line_splits_hydra_overrides_from_app_options():
    assert split_overrides(["model=tiny", "app.port=7861", "model.weights=a.pth", "app.host=0.0.0.0"]) == (
        ["model=tiny", "model.weights=a.pth"],
        ["port=7861", "host=0.0.0.0"],
    )


def test_uploads_are_checked_and_very_large_images_resized(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(UploadError, match="'notes.txt' is not an image"):
        read_upload(text, 2048, 200)
    huge = tmp_path / "huge.png"
    Image.new("RGB", (10_000, 10_000), (30, 60, 90)).save(huge)
    image, notice = read_upload(huge, 2048, 200)
    assert image.shape == (2048, 2048, 3) and image.dtype == np.uint8 and (image[0, 0] == (30, 60, 90)).all()
    assert "(10000×10000) was resized to 2048×2048" in notice
    with pytest.raises(UploadError, match="100 megapixels.*up to 50"):
        read_upload(huge, 2048, 50)
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    assert read_upload(small, 2048, 200)[1] == ""


def test_missing_and_unfitting_checkpoints_are_messages(tmp_path):
    predictor, notice = load_predictor(load_config(["model=tiny", f"model.weights={tmp_path / 'missing.pth'}"]), "cpu")
    assert predictor is None and "Cannot load the captioner" in notice and "missing.pth" in notice
    other = _save_tiny_checkpoint(tmp_path, ["model.num_caption_tokens=3", "model.mixer_layers=1"])
    predictor, notice = load_predictor(load_config(["model=tiny", f"model.weights={other}"]), "cpu")
    assert predictor is None and "does not fit this model" in notice and "parameters missing" in notice
    predictor, notice = load_predictor(load_config(["model=tiny"]), "cpu")
    assert predictor is not None and "random weights" in notice


def test_session_encodes_the_image_once_for_all_prompts(predictor, demo_image, monkeypatch):
    path, (x, y) = demo_image
    calls = []
    encode = predictor.captioner.region_decoder.encode_images
    monkeypatch.setattr(predictor.captioner.region_decoder, "encode_images", lambda pixels: calls.append(1) or encode(pixels))
    image = np.asarray(Image.open(path).convert("RGB"))
    session = DemoSession.start(predictor, image, "shape.jpg")
    session.points, session.labels = [[x, y]], [1]
    assert session.predict_prompts(predictor) == []
    session.points.append([2.0, 2.0])
    session.labels.append(0)
    session.boxes.append([-10.0, 5.0, 40.0, 30.0])
    notices = session.predict_prompts(predictor)
    assert "clipped" in notices[0]
    session.predict_everything(predictor, AnythingConfig(points_per_side=3, pred_iou_thresh=0, stability_score_thresh=0))
    assert len(calls) == 1
    # The session's regions equal the predictor's answer for the same prompts on the raw image.
    session.clear()
    session.points, session.labels = [[x, y], [2.0, 2.0]], [1, 0]
    session.predict_prompts(predictor)
    direct = predictor(image, points=[[[x, y], [2.0, 2.0]]], point_labels=[[1, 0]])
    assert session.regions[0].prompt == direct[0].prompt == {"type": "point", "points": [[x, y], [2.0, 2.0]], "labels": [1, 0]}
    assert session.regions[0].caption == direct[0].caption and np.array_equal(session.regions[0].mask, direct[0].mask)
    saved = session.predictions("recognition")[0]
    assert saved["caption"] == direct[0].caption and saved["image_id"] == "shape.jpg" and saved["mask"]["size"] == list(image.shape[:2])
    with pytest.raises(ValueError, match="point_labels"):
        predictor.predict(session.encoded, points=[[[x, y]]], point_labels=[[2]])


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def _wait_status(page, pattern: str, timeout: float = 120_000) -> str:
    try:
        page.wait_for_function(
            "p => new RegExp(p).test(document.querySelector('#sca-status').innerText)", arg=pattern, timeout=timeout
        )
    except PlaywrightTimeout:
        values = page.evaluate("() => [...document.querySelectorAll('input[type=number]')].map(e => e.value)")
        raise AssertionError(f"status {page.inner_text('#sca-status')!r} never matched {pattern!r}; number inputs {values}") from None
    return page.inner_text("#sca-status")


def _table_rows(page) -> list[list[str]]:
    rows = page.locator("#sca-table tbody tr")
    return [[cell.strip() for cell in rows.nth(i).locator("td").all_text_contents()] for i in range(rows.count())]


def _set_slider(page, elem_id: str, value) -> None:
    """Type ``value`` into a slider's number field until its range input shows it too (a field
    filled while the accordion is still mounting its sliders loses the value)."""
    field, track = page.locator(f"#{elem_id} input[type=number]"), page.locator(f"#{elem_id} input[type=range]")
    for _ in range(5):
        field.fill(str(value))
        field.press("Tab")
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_function(
                "([f, t, v]) => Number(f.value) === v && Number(t.value) === v",
                arg=[field.element_handle(), track.element_handle(), value],
                timeout=2_000,
            )
            return
    raise AssertionError(f"slider #{elem_id} did not take the value {value} (shows {field.input_value()!r})")


@pytest.mark.slow
def test_page_in_a_real_browser(checkpoint, predictor, demo_image, tmp_path):
    chromium_path()  # a missing browser fails here, loudly
    path, (x, y) = demo_image
    image = np.asarray(Image.open(path).convert("RGB"))
    with serve_demo_app([f"model.weights={checkpoint}", *UNTRAINED_CLICKS, "app.examples=2", "app.max_side=1024"], tmp_path / "app.log") as server:
        with open_page(server.url) as (page, requests):
            # Upload, then click on a shape: one region, captioned by the model.
            page.set_input_files("#sca-image input[type=file]", path)
            _wait_status(page, "encoded once")
            page.mouse.click(*screen_point(page, x, y))
            _wait_status(page, r"^1 region")
            [[_, caption, score, _]] = _table_rows(page)
            regions = json.loads(_fetch(page.locator("#sca-download a").first.get_attribute("href")))
            clicked = regions[0]["prompt"]["points"]
            assert abs(clicked[0][0] - x) <= 2 and abs(clicked[0][1] - y) <= 2
            expected = predictor(image, points=clicked)[0]
            assert caption == expected.caption.strip() and caption
            assert float(score) == pytest.approx(expected.iou_score, abs=2e-3)
            assert caption in page.inner_text("#sca-regions .legend")
            # The overlay: a mask layer with visible (non-transparent) pixels.
            mask_layer = Image.open(io.BytesIO(_fetch(page.locator("#sca-regions img.mask").first.get_attribute("src"))))
            assert np.asarray(mask_layer.convert("RGBA"))[..., 3].any()

            # A negative point joins the same region; a box dragged past the image border is clipped.
            page.locator("#sca-mode label", has_text="negative point").click()
            page.mouse.click(*screen_point(page, 3, 3))
            _wait_status(page, r"^1 region.*2 point\(s\), 1 negative")
            regions = json.loads(_fetch(page.locator("#sca-download a").first.get_attribute("href")))
            assert regions[0]["prompt"]["labels"] == [1, 0]
            page.mouse.move(*screen_point(page, 10, 10))
            page.mouse.down()
            page.mouse.move(*screen_point(page, image.shape[1] + 30, 60), steps=6)
            page.mouse.up()
            status = _wait_status(page, r"^2 region")
            assert "clipped to the image" in status
            regions = json.loads(_fetch(page.locator("#sca-download a").first.get_attribute("href")))
            assert regions[0]["prompt"]["type"] == "box" and regions[0]["prompt"]["box"][2] == pytest.approx(image.shape[1])

            # Caption everything, with the filters opened up for the untrained model.
            page.get_by_text("Caption everything settings").click()
            _set_slider(page, "sca-grid", 4)
            _set_slider(page, "sca-iou", 0)
            _set_slider(page, "sca-stability", 0)
            page.click("#sca-everything")
            status = _wait_status(page, r"Caption everything: 16 grid points, predicted IoU ≥ 0.00, stability ≥ 0.00")
            count = int(re.match(r"(\d+) region", status).group(1))
            assert count >= 1 and len(_table_rows(page)) == count
            regions = load_predictions_from(page, tmp_path)
            assert len(regions) == count and all(r["prompt"]["type"] == "point" for r in regions)
            assert page.locator("#sca-regions img.mask").count() == count

            # Not an image: refused by the page (by type) or by the server (by content); a large
            # image is resized with a notice.
            notes = tmp_path / "notes.txt"
            notes.write_text("hello")
            page.set_input_files("#sca-image input[type=file]", str(notes))
            page.get_by_text("Invalid file type: notes.txt").wait_for()
            fake = tmp_path / "fake.png"
            fake.write_text("not a PNG")
            page.set_input_files("#sca-image input[type=file]", str(fake))
            assert "'fake.png' is not an image" in _wait_status(page, "Upload rejected")
            large = tmp_path / "large.png"
            Image.new("RGB", (3000, 1500), (200, 30, 30)).save(large)
            page.set_input_files("#sca-image input[type=file]", str(large))
            assert "resized to 1024×512" in _wait_status(page, "resized")

            # An example (a demo validation image) loads and encodes.
            page.locator("#sca-examples button.gallery-item").nth(1).click()
            assert "image 111×114" not in _wait_status(page, r"image \d+×\d+, encoded once")

            # Offline: no request left the loopback interface, from the page or from the server.
            assert requests.requested and requests.blocked == []
        outbound = [line for line in server.log().splitlines() if "HTTP Request:" in line and "//127.0.0.1" not in line]
        assert outbound == []


def load_predictions_from(page, tmp_path) -> list[dict]:
    """The page's predictions.json download, read back with the evaluation's loader."""
    target = tmp_path / "predictions.json"
    target.write_bytes(_fetch(page.locator("#sca-download a").first.get_attribute("href")))
    by_image = load_predictions(str(target))
    assert len(by_image) == 1
    return next(iter(by_image.values()))


@pytest.mark.slow
def test_missing_checkpoint_is_shown_on_the_page_and_console(tmp_path):
    missing = tmp_path / "missing.pth"
    with serve_demo_app([f"model.weights={missing}", "app.examples=0"], tmp_path / "app.log") as server:
        page_config = json.loads(_fetch(server.url + "config"))
        log = server.log()
    shown = [c["props"].get("value") for c in page_config["components"] if c.get("props", {}).get("elem_id") == "sca-notice"]
    assert shown and "Cannot load the captioner" in shown[0] and str(missing) in shown[0]
    assert "Cannot load the captioner" in log and "Traceback" not in log
