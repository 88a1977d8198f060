"""Hydra configuration: typed schema, start-up errors that name the key, saved resolved config."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from sca.config import ConfigError, validate
from sca.config_loading import load_config

ROOT = Path(__file__).resolve().parent.parent


def test_default_config_composes_and_interpolates():
    cfg = load_config()
    assert cfg.data.name == "demo_mix" and cfg.model.name == "tiny"
    assert list(cfg.data.sources) == ["demo", "demo_refs"]  # the main job mixes two sources
    for source in cfg.data.sources.values():
        assert source.mapper.image_size == cfg.model.image_size == 64  # interpolated from the model
    assert cfg.data.test_mapper.mask_size == cfg.model.mask_size
    assert cfg.output_dir == "output/demo_mix-tiny"


@pytest.mark.parametrize("preset", ["sam_vit_b_gpt2", "sam_vit_b_gpt2_large", "sam_vit_l_gpt2_large", "sam_vit_h_gpt2_large"])
def test_real_size_presets_compose(preset):
    cfg = load_config([f"model={preset}"])
    assert cfg.model.mixer_layers == 12 and cfg.model.num_caption_tokens == 8
    assert cfg.model.sam.startswith("facebook/sam-vit-") and cfg.model.language_model.startswith("gpt2")
    assert not cfg.model.train_sam and not cfg.model.train_language_model


def test_unknown_key_is_named():
    with pytest.raises(ConfigCompositionException) as error:
        load_config(["solver.max_itr=10"])
    assert "max_itr" in str(error.value.__cause__ or error.value)


def test_wrong_type_is_named():
    with pytest.raises(ConfigCompositionException) as error:
        load_config(["solver.max_iter=ten"])
    assert "max_iter" in str(error.value.__cause__ or error.value)


def test_cross_key_validation():
    with pytest.raises(ConfigError, match="prompt.weights.*'lasso'"):
        load_config(["+data.sources.demo.mapper.prompt.weights.lasso=1.0"])
    with pytest.raises(ConfigError, match="task_type.*'poetry'"):
        load_config(["data.sources.demo.task_type=poetry"])
    with pytest.raises(ConfigError, match="data.test_task_types.sca_demo_refs_val: 'poetry'"):
        load_config(["data=demo_mix", "data.test_task_types.sca_demo_refs_val=poetry"])
    cfg = load_config()
    cfg.solver.lr_scheduler = "linear"
    with pytest.raises(ConfigError, match="solver.lr_scheduler"):
        validate(cfg)


def test_train_net_reports_bad_keys_at_start_up(tmp_path):
    result = subprocess.run(
        [sys.executable, "train_net.py", f"output_dir={tmp_path}", "model.mixer_layerz=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "mixer_layerz" in result.stderr + result.stdout
    assert not (tmp_path / "model_final.pth").exists()
