"""Every ``train_net.py`` command of the README composes as written; those that run on this machine
(tiny model, demo data, one CPU process) train and evaluate at a few iterations."""

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from sca.config import ConfigError
from sca.config_loading import load_config
from sca.engine.launch import run

README = Path(__file__).resolve().parent.parent / "README.md"
DEFAULT_OUTPUT = "output/demo_mix-tiny"
# what this machine lacks for a command: pretrained weights and real datasets, GPUs, several processes
NOT_HERE = re.compile(r"model=sam_|DETECTRON2_DATASETS=|data=vg_|dist\.|torchrun")


def readme_commands() -> list[str]:
    """The README's ``python train_net.py ...`` commands, in order, without their comments: the lines
    of its code blocks (shell variables assigned earlier in the block expanded) and inline code."""
    commands, variables, in_block = [], {}, False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_block, variables = not in_block, {}
            continue
        if in_block:
            for name, value in re.findall(r'(?:^|;\s*)([A-Z]\w*)=("[^"]*"|[^\s;]+)', line):
                variables[name] = re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), value.strip('"'))
            if "python train_net.py" in line:
                command = line.split("  #")[0].strip()
                commands.append(re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), command))
        else:
            commands += re.findall(r"`(python train_net\.py[^`]*)`", line)
    return commands


def overrides_of(command: str) -> list[str]:
    """The Hydra overrides of a command; placeholders (``data=...``, ``<run>/...``) left out."""
    words = shlex.split(command)
    words = words[words.index(next(w for w in words if w.endswith("train_net.py"))) + 1 :]
    return [w for w in words if not w.endswith("=...") and "<" not in w]


def test_the_readme_has_the_commands_this_test_runs():
    commands = readme_commands()
    assert any("prompt.weights" in c for c in commands) and any("resume=true" in c for c in commands)
    assert sum(not NOT_HERE.search(c) for c in commands) >= 6


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_composes(command):
    load_config(overrides_of(command))


def test_unknown_keys_are_never_accepted_silently():
    for spelling in ("+solver.max_itr=5", "++solver.max_itr=5", "+max_itr=5"):
        with pytest.raises(ConfigError, match="unknown config key.*max_itr"):
            load_config([spelling])
    with pytest.raises(Exception, match="max_itr"):
        load_config(["solver.max_itr=5"])


@pytest.mark.slow  # trains the tiny model a few iterations per command: ~1 minute
def test_the_runnable_readme_commands_train_and_evaluate(tmp_path):
    runnable = [c for c in readme_commands() if not NOT_HERE.search(c)]
    checkpoint = tmp_path / "model_final.pth"
    for iteration, command in enumerate(runnable, start=2):
        command = command.replace(DEFAULT_OUTPUT, str(tmp_path)).replace("model.weights=...", f"model.weights={checkpoint}")
        overrides = overrides_of(command) + [
            f"output_dir={tmp_path}", f"solver.max_iter={iteration}", "evaluation.max_images=2",
            "evaluation.metrics=[exact_match]", "log_period=1",
        ]  # fmt: skip
        cfg = load_config(overrides)
        shutil.rmtree(tmp_path / "eval", ignore_errors=True)
        run(cfg)
        for split in cfg.data.test_datasets:
            assert json.loads((tmp_path / "eval" / split / "metrics.json").read_text())["num_regions"] > 0, command
        assert checkpoint.is_file()
