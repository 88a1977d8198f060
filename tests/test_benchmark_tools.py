"""The loader and annotation-memory benchmarks run end to end at toy sizes and report every figure
(their real-size figures are in the README; these runs only prove the tools work)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run_tool(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_loader_benchmark_compares_both_loaders_and_reports_memory_per_worker_count():
    out = run_tool(
        "tools/benchmark_loader.py", "--workers", "1", "--batch-size", "2", "--image-size", "64", "--steps", "3",
        "--warmup", "1", "--repeats", "1", "--records", "300", "--rss-workers", "1", "2",
    )
    rows = re.findall(r"^(zip of detectron2 loaders|multi-source \(this project\)|multi-source, lists)\s+(\S+)\s+(\d+)\s+(\d+)\s+1\s+([\d.]+)", out, re.M)
    assert [(name, records, workers) for name, records, workers, *_ in rows] == [
        ("zip of detectron2 loaders", "demo", "1"),
        ("multi-source (this project)", "demo", "1"),
        ("multi-source (this project)", "300", "1"),
        ("multi-source (this project)", "300", "2"),
        ("multi-source, lists", "300", "2"),
    ]
    processes = {(name, records, workers): int(procs) for name, records, workers, procs, _ in rows}
    # one worker per source for the baseline (3 sources), one budget for ours: loader process + workers
    assert processes[("zip of detectron2 loaders", "demo", "1")] == 4 and processes[("multi-source (this project)", "demo", "1")] == 2
    assert all(float(rate) > 0 for *_, rate in rows)
    assert re.search(r"this loader / baseline: throughput [\d.]+x .* peak RSS [\d.]+x", out)


def test_annotation_memory_tool_measures_every_scenario(tmp_path):
    out = run_tool("tools/measure_annotation_memory.py", "--root", str(tmp_path), "--images", "300", "--boxes", "3000")
    for scenario in ("import only", "sca records", "sca records -> d2 serialized", "train loader", "d2 load_coco_json"):
        assert re.search(rf"^{re.escape(scenario)}\s+\d+ MB\s+-?\d+ MB\s+-?\d+ MB", out, re.M), scenario
    assert "(read" not in out  # every scenario saw the same 300 images / 3000 boxes


def test_annotation_memory_tool_measures_visual_genome(tmp_path):
    out = run_tool("tools/measure_annotation_memory.py", "--source", "vg", "--root", str(tmp_path), "--images", "300", "--boxes", "3000")
    for scenario in ("import only", "sca records", "train loader", "list of dicts"):
        assert re.search(rf"^{re.escape(scenario)}\s+\d+ MB\s+-?\d+ MB\s+-?\d+ MB", out, re.M), scenario
    assert "(read" not in out  # the list-of-dicts baseline read the same train images and regions
    assert (tmp_path / "vg-300-images-3000-boxes/vg/densecap_splits.json").is_file()
