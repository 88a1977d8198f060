"""Compose the Hydra config outside ``train_net.py`` (tools, tests): same files, same validation;
or read back the resolved ``config.yaml`` a run saved in its output directory."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sca.config import SCAConfig, register_configs, to_config, validate

__all__ = ["CONFIG_DIR", "load_config", "load_saved_config"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


def load_config(overrides: list[str] | None = None) -> SCAConfig:
    """``conf/config.yaml`` with Hydra-style ``overrides`` (e.g. ``["model=sam_vit_b_gpt2"]``), validated."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    return to_config(cfg)


def load_saved_config(path: str | Path, overrides: list[str] | None = None) -> SCAConfig:
    """A run's saved ``config.yaml`` (typed by the schema) with dotlist ``overrides``, validated."""
    saved = OmegaConf.load(path)
    cfg = OmegaConf.merge(OmegaConf.structured(SCAConfig), saved, OmegaConf.from_dotlist(list(overrides or [])))
    config = OmegaConf.to_object(cfg)
    validate(config)
    return config
