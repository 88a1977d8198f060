"""The Gradio page: upload or pick an image, click points or drag boxes, or caption everything.

Offline by construction: Gradio's analytics and Hugging Face telemetry are off (set before Gradio
is imported), the theme uses the system's fonts (Gradio's default loads Google Fonts), and the
page is served on 127.0.0.1 unless ``app.host`` says otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402

from sca.app.session import DemoSession, UploadError, read_upload  # noqa: E402
from sca.predictor import AnythingConfig, RegionCaptionPredictor  # noqa: E402

__all__ = ["DemoAppConfig", "build_page", "launch_page"]

logger = logging.getLogger(__name__)


@dataclass
class DemoAppConfig:
    """Server and page options (``app.*`` on the command line of ``tools/demo_app.py``)."""

    host: str = "127.0.0.1"
    port: int = 7860
    max_side: int = 2048  # larger uploads are resized (with a notice)
    max_megapixels: float = 150.0  # larger uploads are refused (PIL itself refuses 179 megapixels and more)
    examples: int = 6  # demo validation images offered as examples (0: none)
    device: str = ""  # empty: the config's device ("auto": CUDA when available)


POSITIVE, NEGATIVE = "positive point", "negative point"
DRAG_PIXELS = 5  # a shorter pointer move is a click
IMAGE_HEIGHT = 420  # CSS pixels of the image panels

# Prompts are read in the page: a click (pointer down and up in place) is "point:x,y", a drag
# "box:x0,y0,x1,y1", in image pixels; the text goes into the hidden prompt field and the hidden
# prompt button sends it. The image is drawn with object-fit: contain (CSS below), centred.
PROMPT_JS = """
() => {
  const image = (e) => (e.target instanceof HTMLImageElement && e.target.closest('#sca-image')) ? e.target : null;
  const toPixels = (img, clientX, clientY) => {
    const r = img.getBoundingClientRect();
    const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    const left = r.left + (r.width - img.naturalWidth * scale) / 2, top = r.top + (r.height - img.naturalHeight * scale) / 2;
    return [(clientX - left) / scale, (clientY - top) / scale];
  };
  const send = (text) => {
    const field = document.querySelector('#sca-prompt textarea, #sca-prompt input');
    field.value = text;
    field.dispatchEvent(new Event('input', {bubbles: true}));
    setTimeout(() => document.querySelector('#sca-prompt-button').click(), 50);
  };
  let start = null;
  document.addEventListener('dragstart', (e) => { if (image(e)) e.preventDefault(); }, true);
  document.addEventListener('click', (e) => { if (image(e)) { e.stopPropagation(); e.preventDefault(); } }, true);
  document.addEventListener('pointerdown', (e) => {
    const img = image(e);
    start = img ? {img, x: e.clientX, y: e.clientY} : null;
  }, true);
  document.addEventListener('pointerup', (e) => {
    if (!start) return;
    const s = start; start = null;
    const a = toPixels(s.img, s.x, s.y), b = toPixels(s.img, e.clientX, e.clientY);
    const round = (values) => values.map((v) => v.toFixed(1)).join(',');
    if (Math.hypot(e.clientX - s.x, e.clientY - s.y) < %d) send('point:' + round(a));
    else send('box:' + round([...a, ...b]));
  }, true);
}
""" % DRAG_PIXELS

THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "SFMono-Regular", "monospace"]
)

# Gradio draws small images at their natural size ("scale-down"); "contain" scales the demo's
# ~100-pixel images up to the panel (PROMPT_JS maps the pointer accordingly).
CSS = "#sca-image img { object-fit: contain !important; cursor: crosshair; }"

INTRO = """## SCA: segment and caption anything
Upload an image (or pick an example), then **click** on it to add a point (positive or negative:
all points form one region), **drag** to draw a box (one region each), or press **Caption
everything**. The image is encoded once per upload; each prompt runs only the mask decoder,
caption mixer and language model."""


def _upload_path(payload) -> str | None:
    """The file behind a raw (not preprocessed) image value: a FileData dict, an object or a path."""
    if payload is None:
        return None
    if isinstance(payload, dict):
        return payload.get("path")
    return str(getattr(payload, "path", payload))


class DemoPage:
    """The page's event handlers around one predictor (``None`` when the model failed to load)."""

    def __init__(self, predictor: RegionCaptionPredictor | None, notice: str, options: DemoAppConfig):
        self.predictor, self.notice, self.options = predictor, notice, options
        self.download_dir = Path(tempfile.mkdtemp(prefix="sca-demo-app-"))
        self.task_types = list(predictor.captioner.head_config.task_types) if predictor else []
        self.default_task_type = predictor.cfg.data.test_task_type if predictor else None

    # ---- outputs ----------------------------------------------------------------------------
    def _outputs(self, session: DemoSession | None, lines: list[str], task_type: str | None = None):
        """(state, clickable image, overlays, status, table, download) for ``session``."""
        if session is None:
            return None, None, None, "\n\n".join(lines), [], None
        height, width = session.image.shape[:2]
        negatives = session.labels.count(0)
        summary = (
            f"**{len(session.regions)} region(s)** · prompts: {len(session.points)} point(s), {negatives} negative, "
            f"{len(session.boxes)} box(es) · image {width}×{height}, encoded once in "
            f"{session.encode_seconds:.2f} s · last prediction {1000 * session.seconds:.0f} ms"
        )
        download = None
        if session.regions:
            folder = Path(tempfile.mkdtemp(dir=self.download_dir))
            download = folder / "predictions.json"
            download.write_text(json.dumps(session.predictions(task_type or self.default_task_type)))
            download = str(download)
        overlays = (session.image, session.overlays())
        return session, session.marked_image(), overlays, "\n\n".join([summary, *lines]), session.rows(), download

    def _unavailable(self, session):
        return self._outputs(session, [f"**The model is not available:** {self.notice}"])

    # ---- events -----------------------------------------------------------------------------
    def upload(self, payload, task_type):
        """A new image (upload or example): read, resize if needed, encode once."""
        path = _upload_path(payload)
        if path is None:
            return self._outputs(None, ["Upload an image to start."])
        if self.predictor is None:
            return self._unavailable(None)
        try:
            image, notice = read_upload(path, self.options.max_side, self.options.max_megapixels)
        except UploadError as error:
            logger.warning("upload rejected: %s", error)
            return self._outputs(None, [f"**Upload rejected:** {error}"])
        name = Path(payload.get("orig_name") or path).name if isinstance(payload, dict) else Path(path).name
        session = DemoSession.start(self.predictor, image, name)
        lines = [notice] if notice else []
        return self._outputs(session, lines + ["Click on the image or drag a box."], task_type)

    def prompt(self, session: DemoSession | None, text: str, mode: str, task_type: str):
        """A prompt read in the page: "point:x,y" (added to the point region) or "box:x0,y0,x1,y1"."""
        if session is None or self.predictor is None:
            return self._unavailable(session) if self.predictor is None else self._outputs(None, ["Upload an image first."])
        kind, _, numbers = text.partition(":")
        try:
            values = [float(v) for v in numbers.split(",")]
        except ValueError:
            values = []
        if (kind, len(values)) == ("point", 2):
            session.points.append(values)
            session.labels.append(0 if mode == NEGATIVE else 1)
        elif (kind, len(values)) == ("box", 4):
            x0, y0, x1, y1 = values
            session.boxes.append([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)])
        else:
            return self._outputs(session, [f"**Not a prompt:** '{text}' (expected point:x,y or box:x0,y0,x1,y1)."], task_type)
        try:
            notices = session.predict_prompts(self.predictor, task_type)
        except ValueError as error:  # e.g. a box with no area inside the image
            (session.boxes if kind == "box" else session.points).pop()
            if kind == "point":
                session.labels.pop()
            session.predict_prompts(self.predictor, task_type)
            return self._outputs(session, [f"**Prompt ignored:** {error}"], task_type)
        return self._outputs(session, notices, task_type)

    def everything(self, session, task_type, points_per_side, pred_iou_thresh, stability_thresh, max_regions):
        if session is None or self.predictor is None:
            return self._unavailable(session) if self.predictor is None else self._outputs(None, ["Upload an image first."])
        settings = replace(
            self.predictor.anything,
            points_per_side=int(points_per_side),
            pred_iou_thresh=float(pred_iou_thresh),
            stability_score_thresh=float(stability_thresh),
            max_regions=int(max_regions),
        )
        session.predict_everything(self.predictor, settings, task_type)
        lines = [
            f"Caption everything: {settings.points_per_side ** 2} grid points, predicted IoU ≥ {settings.pred_iou_thresh:.2f}, "
            f"stability ≥ {settings.stability_score_thresh:.2f}, at most {settings.max_regions} regions."
        ]
        if not session.regions:
            lines.append("No grid mask passed the filters: lower the thresholds under *Caption everything settings*.")
        return self._outputs(session, lines, task_type)

    def clear(self, session, task_type):
        if session is None:
            return self._outputs(None, ["Upload an image to start."])
        session.clear()
        return self._outputs(session, ["Prompts cleared."], task_type)


def build_page(predictor: RegionCaptionPredictor | None, notice: str, options: DemoAppConfig, examples: list[str]) -> gr.Blocks:
    """The page's layout and events. ``notice`` (a load failure or warning) is shown at the top."""
    page = DemoPage(predictor, notice, options)
    defaults = predictor.anything if predictor is not None else AnythingConfig()  # the sliders start at the model's
    with gr.Blocks(title="SCA: segment and caption anything", analytics_enabled=False) as blocks:
        gr.Markdown(INTRO)
        gr.Markdown(f"**{notice}**" if notice else "", elem_id="sca-notice", visible=bool(notice))
        state = gr.State(None)
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    label="Image: click to add a point, drag to draw a box",
                    type="filepath",
                    sources=["upload"],
                    height=IMAGE_HEIGHT,
                    elem_id="sca-image",
                )
                mode = gr.Radio([POSITIVE, NEGATIVE], value=POSITIVE, label="A click adds a", elem_id="sca-mode")
                with gr.Row():
                    everything = gr.Button("Caption everything", variant="primary", elem_id="sca-everything")
                    clear = gr.Button("Clear prompts", elem_id="sca-clear")
                task_type = gr.Dropdown(page.task_types, value=page.default_task_type, label="Task type", elem_id="sca-task")
                with gr.Accordion("Caption everything settings", open=False):
                    points_per_side = gr.Slider(2, 64, value=defaults.points_per_side, step=1, label="grid points per side", elem_id="sca-grid")
                    pred_iou = gr.Slider(0, 1, value=defaults.pred_iou_thresh, step=0.05, label="min predicted IoU", elem_id="sca-iou")
                    stability = gr.Slider(0, 1, value=defaults.stability_score_thresh, step=0.05, label="min stability score", elem_id="sca-stability")
                    max_regions = gr.Slider(1, 256, value=defaults.max_regions, step=1, label="max regions", elem_id="sca-max-regions")
            with gr.Column():
                overlays = gr.AnnotatedImage(label="Masks and captions", height=IMAGE_HEIGHT, elem_id="sca-regions")
                status = gr.Markdown("Upload an image to start.", elem_id="sca-status")
                table = gr.Dataframe(
                    headers=["#", "caption", "IoU score", "mask box (x0, y0, x1, y1)"],
                    label="Regions",
                    interactive=False,
                    elem_id="sca-table",
                )
                download = gr.File(label="predictions.json", elem_id="sca-download")
        prompt = gr.Textbox(visible="hidden", elem_id="sca-prompt")
        prompt_button = gr.Button(visible="hidden", elem_id="sca-prompt-button")
        outputs = [state, image, overlays, status, table, download]
        image.upload(page.upload, [image, task_type], outputs, preprocess=False)
        prompt_button.click(page.prompt, [state, prompt, mode, task_type], outputs, api_name="prompt")
        everything.click(page.everything, [state, task_type, points_per_side, pred_iou, stability, max_regions], outputs)
        clear.click(page.clear, [state, task_type], outputs)
        if examples:
            gr.Examples(
                [[path] for path in examples],
                [image],
                outputs,
                fn=lambda payload: page.upload(payload, None),
                run_on_click=True,
                preprocess=False,
                label="Examples (demo validation images)",
                elem_id="sca-examples",
            )
    return blocks


def launch_page(blocks: gr.Blocks, options: DemoAppConfig, allowed_paths: list[str]) -> None:
    """Serve ``blocks`` on ``options.host:options.port`` (blocking)."""
    blocks.queue(default_concurrency_limit=1)  # one model, one prediction at a time
    blocks.launch(
        server_name=options.host,
        server_port=options.port,
        share=False,
        theme=THEME,
        css=CSS,
        js=PROMPT_JS,
        ssr_mode=False,
        show_error=True,
        allowed_paths=allowed_paths,
        max_file_size=f"{int(options.max_megapixels * 4)}mb",
    )
