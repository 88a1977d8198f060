"""Reading the weight files of a ``save_pretrained`` folder, safely.

A folder holds ``model.safetensors``, ``pytorch_model.bin``, or a sharded form of either
(``model.safetensors.index.json`` / ``pytorch_model.bin.index.json`` whose ``weight_map`` names
the shard of every tensor). Pickled files are read with ``torch.load(weights_only=True)``: a
pickle that holds anything but tensors and plain containers is refused before any of its code
runs. A missing, truncated or corrupt file is an error that names it.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

__all__ = ["CheckpointError", "WEIGHT_FILE_NAMES", "find_weight_files", "read_weight_file", "read_weights"]

# In the order transformers prefers them.
WEIGHT_FILE_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


class CheckpointError(ValueError):
    """A checkpoint cannot be used as it is; the message names the file or key and why."""


def find_weight_files(folder: str | Path) -> list[Path]:
    """The weight files of ``folder`` (several for a sharded checkpoint), checked to exist."""
    return _locate(Path(folder))[0]


def _locate(folder: Path) -> tuple[list[Path], dict[str, str] | None]:
    """Weight files and, for a sharded checkpoint, its ``weight_map``."""
    for name in WEIGHT_FILE_NAMES:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path], None
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{path}: not a shard index with a 'weight_map' ({type(error).__name__}: {error})") from error
        shards = [folder / shard for shard in dict.fromkeys(weight_map.values())]
        missing = [str(shard) for shard in shards if not shard.is_file()]
        if missing:
            raise CheckpointError(f"{path} names shard(s) that do not exist: {missing}")
        return shards, weight_map
    present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise CheckpointError(f"{folder}: no weight file (looked for {list(WEIGHT_FILE_NAMES)}; found {present})")


def read_weight_file(path: str | Path) -> dict[str, torch.Tensor]:
    """One ``.safetensors`` or pickled (``.bin``) file -> ``{name: tensor}`` on the CPU."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: unreadable safetensors file (truncated or corrupt?): {error}") from error
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if "weights only load failed" in str(error).lower():
                raise CheckpointError(
                    f"{path}: refused: its pickle holds objects other than tensors, which could run code when "
                    f"loaded (nothing was executed). Convert it with a trusted tool, or use safetensors. Details: "
                    f"{str(error).splitlines()[0]}"
                ) from error
            raise CheckpointError(f"{path}: unreadable pickle (truncated or corrupt?): {error}") from error
        except (RuntimeError, EOFError, OSError, ValueError) as error:
            raise CheckpointError(f"{path}: unreadable weight file (truncated or corrupt?): {error}") from error
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a flat mapping of names to tensors (a state dict)")
    return state


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of ``folder``'s checkpoint, shards merged; a name in two shards is an error."""
    paths, weight_map = _locate(Path(folder))
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        shard = read_weight_file(path)
        repeated = sorted(set(shard) & set(state))
        if repeated:
            raise CheckpointError(f"{path}: tensors also stored in another shard: {repeated[:5]}")
        if weight_map is not None:
            absent = sorted(name for name, file in weight_map.items() if file == path.name and name not in shard)
            if absent:
                raise CheckpointError(f"{path}: lacks {len(absent)} tensor(s) its index assigns to it, e.g. {absent[:5]}")
        state.update(shard)
    return state
