"""The interactive region-captioning page (Gradio), built on :mod:`sca.predictor`.

``session`` holds what the page does (uploads, prompts, outputs); ``page`` lays it out in Gradio;
:func:`main` is ``tools/demo_app.py``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["main", "split_overrides", "demo_examples"]

logger = logging.getLogger(__name__)


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Command-line arguments -> (Hydra overrides of conf/config.yaml, ``app.*`` dotlist without the prefix)."""
    app = [arg[len("app."):] for arg in argv if arg.startswith("app.")]
    return [arg for arg in argv if not arg.startswith("app.")], app


def demo_examples(count: int) -> list[str]:
    """The first ``count`` images of the demo's validation split (generated on first use)."""
    if count <= 0:
        return []
    from detectron2.data import DatasetCatalog

    import sca.data.datasets  # noqa: F401  (registers the demo splits)

    return [record["file_name"] for record in DatasetCatalog.get("sca_demo_val")[:count]]


def main(argv: list[str]) -> int:
    """Compose the config, load the predictor (a failure becomes the page's message) and serve the page."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if any(arg in ("-h", "--help") for arg in argv):
        print(sys.modules["__main__"].__doc__ or __doc__)
        return 0
    from sca.app.page import DemoAppConfig, build_page, launch_page
    from sca.app.session import load_predictor
    from sca.config_loading import load_config

    overrides, app_dotlist = split_overrides(argv)
    try:
        options = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DemoAppConfig), OmegaConf.from_dotlist(app_dotlist)))
    except OmegaConfBaseException as error:
        print(f"error: app options: {error}", file=sys.stderr)
        return 2
    cfg = load_config(overrides)
    device = options.device or (None if cfg.device == "auto" else cfg.device)
    predictor, notice = load_predictor(cfg, device)
    if predictor is None:
        logger.error("%s", notice)
    elif notice:
        logger.warning("%s", notice)
    examples = demo_examples(options.examples)
    blocks = build_page(predictor, notice, options, examples)
    launch_page(blocks, options, allowed_paths=sorted({str(Path(p).parent) for p in examples}))
    return 0
