#!/usr/bin/env bash
# One-command setup: creates .venv and installs SCA with every dependency, detectron2 included.
#
#   bash tools/setup_env.sh            # VENV=path to choose another location
#
# detectron2 is not on PyPI under its own name. Upstream installs from git; where GitHub is not
# reachable we fall back to PyPI's pb1-detectron2 0.6 sdist (its Python package is byte-identical
# to upstream v0.6 but it lacks the C++ sources), checked against its sha256 and built without
# extensions. sca/compat.py supplies what that build lacks at import time.
# Running the script again is fast: a stamp of the inputs skips the installs when nothing changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
D2_GIT="https://github.com/facebookresearch/detectron2.git"
D2_SDIST_FILE="pb1-detectron2-0.6.tar.gz"
D2_SDIST_SHA256="5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"

log() { printf '[setup] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtualenv at $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

stamp_file="$VENV/.sca-setup-stamp"
stamp="$(cat "$ROOT/pyproject.toml" "$ROOT/tools/setup_env.sh" | sha256sum | cut -d' ' -f1)"

install_detectron2() {
    if "$PY" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('detectron2') is None)"; then
        log "detectron2 already installed"
        return
    fi
    if timeout 20 git ls-remote "$D2_GIT" HEAD >/dev/null 2>&1; then
        log "installing detectron2 from upstream git"
        "${PIP[@]}" install --no-build-isolation "git+$D2_GIT"
        return
    fi
    log "GitHub not reachable: installing pb1-detectron2 0.6 from PyPI without compiled extensions"
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    "$PY" "$ROOT/tools/fetch_sdist.py" pb1-detectron2 "$D2_SDIST_FILE" "$D2_SDIST_SHA256" "$work"
    tar -xzf "$work/$D2_SDIST_FILE" -C "$work"
    local src="$work/pb1-detectron2-0.6"
    # The sdist lacks detectron2/layers/csrc: build the pure-Python package only.
    grep -q 'ext_modules=get_extensions(),' "$src/setup.py" \
        || { echo "unexpected setup.py in $D2_SDIST_FILE" >&2; return 1; }
    sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$src/setup.py"
    "${PIP[@]}" install --no-build-isolation "$src"
}

# The demo page's browser test drives Debian's Chromium through Playwright (no browser download).
if [ ! -x "${SCA_CHROMIUM:-/usr/bin/chromium}" ]; then
    log "installing Chromium (Debian package) for the demo page's browser test"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi

if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
    log "dependencies up to date (stamp matches); verifying"
else
    "${PIP[@]}" install --upgrade "pip>=24" "setuptools>=68" wheel
    # torch first and pinned: the CUDA build of this pair runs on CPU and GPU alike (see README).
    "${PIP[@]}" install "torch==2.14.1" "torchvision==0.29.1"
    "${PIP[@]}" install -e "$ROOT[test]"
    # The demo page (tools/demo_app.py): resolved together with the project, gradio's pins (Pillow < 13,
    # fastapi/starlette) make pip backtrack fiftyone to 1.13, whose graphql pins break its import. So
    # gradio goes in without re-resolving the installed packages, then the dependencies it adds.
    "${PIP[@]}" install --no-deps "gradio==6.31.0" "gradio-client==2.7.2" "hf-gradio==0.4.1"
    "${PIP[@]}" install "fastapi>=0.115,<1" "groovy~=0.1" "orjson~=3.0" "python-multipart>=0.0.18" \
        "safehttpx>=0.1.7,<0.2" "semantic-version~=2.0" "tomlkit>=0.12,<1" pydub "uvicorn>=0.14"
    # panopticapi-lite pins numpy<2 although its code runs on numpy 2.
    "${PIP[@]}" install --no-deps "panopticapi-lite==0.2.0"
    install_detectron2
    echo "$stamp" > "$stamp_file"
fi

"$PY" "$ROOT/tools/check_install.py"
log "done. Activate with: source $VENV/bin/activate"
