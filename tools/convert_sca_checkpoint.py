"""Convert a reference SCA checkpoint (``ScaMultitaskV2Model.save_pretrained``) to this project's layout.

    python tools/convert_sca_checkpoint.py segment-caption-anything-gpt2_large-pt_vg sca-gpt2_large-pt_vg

SRC holds the reference's ``config.json`` and weights (``model.safetensors`` or
``pytorch_model.bin``, sharded or not; pickles are read with ``weights_only=True``). DST gets
``SCACaptioner.save_pretrained``'s layout (``sam/``, ``language_model/``, the caption head) plus
``tokenizer/`` when SRC has one; use it with ``model=<preset> model.weights=DST``. Loading is
strict: tensors without a place or missing parameters stop the conversion with their names. The
matching preset of ``conf/model/`` is printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import sca  # noqa: F401  (detectron2 compatibility first)
from sca.checkpoints.presets import matching_presets
from sca.checkpoints.reference_sca import load_reference_captioner, read_reference_config, reference_architecture
from sca.checkpoints.weight_files import CheckpointError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="reference checkpoint folder")
    parser.add_argument("dst", help="output folder (this project's save_pretrained layout)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    source, destination = Path(args.src), Path(args.dst)
    try:
        architecture = reference_architecture(read_reference_config(source))
        captioner = load_reference_captioner(source)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    captioner.save_pretrained(destination)
    if (source / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(source).save_pretrained(destination / "tokenizer")
    presets = matching_presets(architecture)
    print(f"wrote {destination} ({architecture.summary()})")
    print(f"matching preset: model={presets[0]}" if presets else "no preset in conf/model/ matches this architecture")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
