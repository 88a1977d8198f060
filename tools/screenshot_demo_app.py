"""Regenerate the README's screenshot of the demo page (docs/demo_app.png).

    python tools/screenshot_demo_app.py model.weights=output/demo_mix-tiny/model_final.pth
    python tools/screenshot_demo_app.py --output /tmp/page.png model.weights=...

Serves the page with ``tools/demo_app.py`` (the arguments are its Hydra overrides) on a free
loopback port, opens it in the system Chromium (as the browser test does), loads the first demo
validation image, clicks one of its shapes, drags a box around another and saves a screenshot.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import sca  # noqa: F401  (detectron2 compatibility first)
from sca.app.browser_testing import open_page, point_on_segment, screen_point, serve_demo_app

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(ROOT / "docs" / "demo_app.png"))
    args, overrides = parser.parse_known_args(argv)
    from detectron2.data import DatasetCatalog

    import sca.data.datasets  # noqa: F401  (registers the demo splits)

    record = DatasetCatalog.get("sca_demo_val")[0]
    with tempfile.TemporaryDirectory() as work:
        with serve_demo_app([*overrides, "app.examples=6"], Path(work) / "app.log") as server:
            with open_page(server.url, viewport=(1400, 1050)) as (page, requests):
                page.set_input_files("#sca-image input[type=file]", record["file_name"])
                page.wait_for_selector("#sca-status :text('encoded once')")
                page.mouse.click(*screen_point(page, *point_on_segment(record, 0)))
                page.wait_for_selector("#sca-status :text('1 region(s)')")
                x, y, w, h = record["segments_info"][1]["bbox"]
                page.mouse.move(*screen_point(page, x - 1, y - 1))
                page.mouse.down()
                page.mouse.move(*screen_point(page, x + w + 1, y + h + 1), steps=8)
                page.mouse.up()
                page.wait_for_selector("#sca-status :text('2 region(s)')")
                page.wait_for_timeout(500)  # the overlays' images
                Path(args.output).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=args.output, full_page=True)
                assert not requests.blocked, requests.blocked
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
