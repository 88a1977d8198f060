"""Download one source distribution from pip's package index and verify its sha256.

    python tools/fetch_sdist.py NAME FILENAME SHA256 DEST_DIR

Used by tools/setup_env.sh for detectron2's PyPI sdist, which ``pip download`` refuses because its
metadata declares a direct-URL dependency (under an extra we do not use). The index is the one pip
is configured with (``pip config get global.index-url``), else pip's default.
"""

import hashlib
import html.parser
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path


class _Links(html.parser.HTMLParser):
    """Collects ``<a href>`` targets of a PEP 503 simple-index page."""

    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.extend(value for key, value in attrs if key == "href")


def index_url() -> str:
    out = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    from pip._internal.models.index import PyPI

    return PyPI.simple_url


def main(name: str, filename: str, sha256: str, dest: str) -> int:
    page_url = f"{index_url().rstrip('/')}/{name}/"
    with urllib.request.urlopen(page_url, timeout=120) as response:
        parser = _Links()
        parser.feed(response.read().decode("utf-8"))
    matches = [h for h in parser.hrefs if urllib.parse.urlparse(h).path.endswith("/" + filename)]
    if not matches:
        print(f"{filename} not found on {page_url}", file=sys.stderr)
        return 1
    target = Path(dest) / filename
    urllib.request.urlretrieve(urllib.parse.urljoin(page_url, matches[0].split("#")[0]), target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != sha256:
        target.unlink()
        print(f"sha256 mismatch for {filename}: got {digest}, expected {sha256}", file=sys.stderr)
        return 1
    print(f"fetched {filename} (sha256 verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
