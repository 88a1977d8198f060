"""The training-step benchmark runs end to end on the tiny preset and reports every part, both
precisions and FLOPs (its real-size figures are in the README; this run only proves the tool works)."""

import re

import pytest

pytestmark = pytest.mark.slow


def table(out: str) -> dict[str, list[str]]:
    """Rows of the printed table: label -> one value per setting (the header row under "")."""
    lines = out[out.index("\n   ") + 1 :].splitlines()  # the table starts with the header row's blank label
    return {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line) for line in lines if line.strip())}


def test_train_step_benchmark_reports_parts_precisions_and_flops(load_tool, capsys):
    tool = load_tool("benchmark_train_step")
    tool.main(["--images", "1", "--regions", "2", "--steps", "1", "--warmup", "1", "--threads", "1", "model=tiny"])
    out = capsys.readouterr().out
    assert re.search(r"model tiny .*torch threads 1, 1 images x 2 regions = 2 regions, 8 caption tokens, 1 timed steps", out)
    rows = table(out)
    assert rows[""] == ["fp32", "bf16"]
    parts = ["image encoder", "SAM decoder", "caption mixer", "LM forward + loss", "other forward", "backward", "optimizer"]
    ms = {part: [float(v) for v in rows[f"{part} ms"]] for part in [*parts, "step"]}
    for setting in range(2):
        step = ms["step"][setting]
        assert step > 0 and all(ms[part][setting] >= 0 for part in parts)
        assert ms["image encoder"][setting] > 0 and ms["caption mixer"][setting] > 0 and ms["backward"][setting] > 0
        assert sum(ms[part][setting] for part in parts) <= 1.2 * step  # the parts do not overlap
    assert rows["speed-up vs fp32"][0] == "1.00x"
    flops = [float(v) for v in rows["GFLOP/step"]]
    assert all(f > 0 for f in flops) and flops[0] == flops[1]  # autocast changes dtypes, not the work
    assert all(float(v) > 0 for v in rows["peak RSS MiB"])
    assert "MFU %" not in rows  # CUDA only
    assert all(float(v) >= 0 for v in rows["load average after"])
