"""End-to-end runs of train_net.py on the demo data (slow: each trains the tiny model on CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def train_net(*overrides, timeout=900):
    # One OpenMP thread: on a CI box shared with other jobs, more threads oversubscribe the cores
    # and slow training several-fold.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "train_net.py", *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def caption_metrics(output_dir: Path, split: str = "sca_demo_val") -> dict:
    return json.loads((output_dir / "eval" / split / "metrics.json").read_text())


def logged(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]


def test_short_training_learns_image_conditioned_captions(tmp_path):
    trained, untrained = tmp_path / "trained", tmp_path / "untrained"
    eval_subset = "evaluation.max_images=60"
    train_net(f"output_dir={trained}", "solver.max_iter=500", "solver.checkpoint_period=1000", "log_period=10", eval_subset)
    train_net(f"output_dir={untrained}", "eval_only=true", eval_subset)
    after, before = caption_metrics(trained), caption_metrics(untrained)
    assert before["exact_match"] <= before["image_blind_exact_match"]
    # Clearly above what any image-blind caption can reach: the colour at least is read from the image.
    assert after["exact_match"] >= 2 * after["image_blind_exact_match"]
    assert after["CIDEr_D"] > before["CIDEr_D"] + 50
    # SAM trains too: box-prompted masks overlap their shapes clearly better (untrained: ~11 mIoU),
    # and the IoU head picks non-empty candidates.
    assert after["mask_mIoU"] > before["mask_mIoU"] + 15
    assert after["empty_mask_percent"] <= 5
    losses = [row["loss_caption/demo"] for row in logged(trained) if "loss_caption/demo" in row]
    assert losses[-1] < 0.2 * losses[0]
    # The main job mixes two sources: the referring source trains in some steps and is evaluated too.
    assert any("loss_caption/demo_refs" in row for row in logged(trained))
    refs_after, refs_before = caption_metrics(trained, "sca_demo_refs_val"), caption_metrics(untrained, "sca_demo_refs_val")
    assert refs_after["num_regions"] > 0 and refs_after["CIDEr_D"] > refs_before["CIDEr_D"] + 50
    # Outputs: resolved config, checkpoint, JSON metrics with the evaluation, TensorBoard events.
    assert "image_size: 64" in (trained / "config.yaml").read_text()
    assert (trained / "model_final.pth").is_file()
    assert any("sca_demo_val/caption/exact_match" in row for row in logged(trained))
    assert list(trained.glob("events.out.tfevents.*"))


def test_resume_continues_at_the_saved_iteration_and_eval_only_reproduces(tmp_path):
    run = tmp_path / "run"
    common = [f"output_dir={run}", "solver.checkpoint_period=4", "log_period=1", "evaluation.max_images=8"]
    train_net(*common, "solver.max_iter=6")
    assert torch.load(run / "model_final.pth", weights_only=False)["iteration"] == 5
    log = train_net(*common, "solver.max_iter=10", "resume=true")
    assert "Starting training from iteration 6" in log
    assert torch.load(run / "model_final.pth", weights_only=False)["iteration"] == 9
    iterations = [row["iteration"] for row in logged(run) if "loss_caption/demo" in row]
    assert iterations == list(range(10))  # every step once: none repeated, none skipped
    final = caption_metrics(run)
    evaluated = tmp_path / "eval"
    train_net(f"output_dir={evaluated}", "eval_only=true", f"model.weights={run / 'model_final.pth'}", "evaluation.max_images=8")
    assert caption_metrics(evaluated) == final
