"""Browser tooling for the demo page (its test and its README screenshot): serve the page from
``tools/demo_app.py`` on a free loopback port and drive the system's Chromium through Playwright.

No browser is downloaded: Playwright launches Debian's ``chromium`` (``$SCA_CHROMIUM`` or
``/usr/bin/chromium``; ``tools/setup_env.sh`` installs it). Every request the page makes is logged
and any request that leaves the loopback interface is blocked, so a test can assert there were none.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

__all__ = [
    "CHROMIUM_ARGS",
    "DemoServer",
    "RequestLog",
    "chromium_path",
    "free_port",
    "open_page",
    "point_on_segment",
    "screen_point",
    "serve_demo_app",
]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
]
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def chromium_path() -> str:
    """The system Chromium. Raises FileNotFoundError (never a skip) when it is missing."""
    path = os.environ.get("SCA_CHROMIUM", "/usr/bin/chromium")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"no Chromium executable at {path}: run tools/setup_env.sh (apt-get install chromium) or set SCA_CHROMIUM"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DemoServer:
    url: str
    log_path: Path
    process: subprocess.Popen

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def serve_demo_app(overrides: list[str], log_path: Path, timeout: float = 300.0):
    """Run ``tools/demo_app.py overrides app.port=<free port>`` until the block ends; yields a
    :class:`DemoServer` once the page is served. Raises RuntimeError (with the log) if it is not."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1")
    command = [sys.executable, str(ROOT / "tools" / "demo_app.py"), *overrides, f"app.port={port}"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = DemoServer(f"http://127.0.0.1:{port}/", log_path, process)
    try:
        deadline = time.monotonic() + timeout
        while "Running on local URL" not in server.log():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the demo app did not start (exit code {process.poll()}):\n{server.log()[-4000:]}")
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class RequestLog:
    """Every URL the page requested; ``blocked`` holds those that would have left the machine."""

    requested: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def route(self, route) -> None:
        url = route.request.url
        self.requested.append(url)
        host = urlsplit(url).hostname or ""
        if url.startswith(("data:", "blob:")) or host in LOOPBACK_HOSTS or host.startswith("127."):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()


@contextlib.contextmanager
def open_page(url: str, viewport: tuple[int, int] = (1400, 1000)):
    """A Chromium page at ``url`` with its :class:`RequestLog`; yields ``(page, log)``."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    requests = RequestLog()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.route("**/*", requests.route)
            page.goto(url)
            page.wait_for_selector("#sca-image")
            yield page, requests
        finally:
            browser.close()


def screen_point(page, x: float, y: float) -> tuple[float, float]:
    """Image pixel (x, y) of the clickable image -> page coordinates (the image is drawn with
    ``object-fit: contain``, centred in its element)."""
    page.wait_for_function("() => { const i = document.querySelector('#sca-image img'); return i && i.complete && i.naturalWidth > 0; }")
    image = page.locator("#sca-image img").first
    box = image.bounding_box()
    natural_width, natural_height = image.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    scale = min(box["width"] / natural_width, box["height"] / natural_height)
    left = box["x"] + (box["width"] - natural_width * scale) / 2
    top = box["y"] + (box["height"] - natural_height * scale) / 2
    return left + x * scale, top + y * scale


def point_on_segment(record: dict, index: int = 0) -> tuple[float, float]:
    """A pixel centre inside segment ``index`` of a panoptic record (e.g. a demo image's shape):
    the segment's pixel nearest its centroid (a ring's centroid lies in its hole)."""
    from panopticapi.utils import rgb2id

    ids = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))
    ys, xs = np.nonzero(ids == record["segments_info"][index]["id"])
    nearest = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
    return float(xs[nearest]) + 0.5, float(ys[nearest]) + 0.5
