"""Serve the interactive region-captioning page (Gradio) on 127.0.0.1.

    python tools/demo_app.py model.weights=output/demo_mix-tiny/model_final.pth
    python tools/demo_app.py model=sam_vit_b_gpt2 model.weights=/ckpt/model_final.pth app.port=7861
    python tools/demo_app.py model.weights=... app.host=0.0.0.0       # also reachable from other machines

Arguments are Hydra overrides of conf/config.yaml, as for train_net.py (model=..., model.weights=...,
model.generation.num_beams=3, device=cpu); ``app.*`` are the page's options (sca/app/page.py,
DemoAppConfig: host, port, max_side, max_megapixels, examples, device). Upload an image or pick one of
the demo's validation images, click points or drag boxes, or caption everything. A missing or
unfitting checkpoint is reported on the page and here; the page works offline (no analytics, no CDN).
"""

import sys

import sca  # noqa: F401  (detectron2 compatibility first)
from sca.app import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
