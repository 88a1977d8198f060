#!/usr/bin/env python
"""RefCOCO / RefCOCO+ / RefCOCOg: convert the refs pickles to JSON once, with restricted unpickling.

    python datasets/prepare_refcoco.py [--root DIR]

Reads, under the datasets root ($DETECTRON2_DATASETS, else ./datasets), whichever of these exist:
    refcoco/{instances.json, refs(unc).p, refs(google).p}
    refcoco+/{instances.json, refs(unc).p}
    refcocog/{instances.json, refs(umd).p, refs(google).p}
Writes next to each pickle:
    refs(<split_by>).json      the same list of refs; the loaders read it instead of the pickle

A pickle can run code when loaded: it is read with an unpickler that accepts plain containers,
strings and numbers only, and anything else stops the script with the file named. The summary
gives, per file, the refs and sentences of each split and the refs whose annotation is absent from
``instances.json``. A JSON that exists is kept (delete it to convert again).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from sca.data.datasets.refer_format import converted_refs_file, load_refs
from sca.data.datasets.register_refcoco import REFER_SPLITS
from sca.data.preparation import PreparationError, argument_parser, datasets_root, run, save_json

DOWNLOAD = "https://github.com/lichengunc/refer (refcoco.zip, refcoco+.zip, refcocog.zip)"


def refs_files(root: Path) -> list[Path]:
    """The refs pickles present under ``root``, in the order of :data:`REFER_SPLITS`."""
    return [root / dataset / f"refs({split_by}).p" for dataset, schemes in REFER_SPLITS.items() for split_by in schemes
            if (root / dataset / f"refs({split_by}).p").is_file()]


def summary(refs: list[dict], annotation_ids: set[int] | None) -> str:
    refs_per_split = Counter(r["split"] for r in refs)
    sentences_per_split = Counter()
    for r in refs:
        sentences_per_split[r["split"]] += len(r["sentences"])
    parts = [f"{split} {refs_per_split[split]} refs / {sentences_per_split[split]} sentences" for split in sorted(refs_per_split)]
    if annotation_ids is not None:
        parts.append(f"refs of annotations absent from instances.json {sum(r['ann_id'] not in annotation_ids for r in refs)}")
    return ", ".join(parts)


def main() -> None:
    parser = argument_parser(__doc__)
    args = parser.parse_args()
    root = datasets_root(args.root)
    files = refs_files(root)
    if not files:
        raise PreparationError(f"no refs(<split_by>).p under {root}/{{refcoco,refcoco+,refcocog}}\n  download them from {DOWNLOAD}")
    for path in tqdm(files, desc="refs pickles", unit="file", dynamic_ncols=True):
        target = Path(converted_refs_file(str(path)))
        if target.exists():
            tqdm.write(f"{target}: exists, kept (delete it to convert again)")
            continue
        try:
            refs = load_refs(str(path))
        except ValueError as error:
            raise PreparationError(str(error)) from None
        instances = path.parent / "instances.json"
        annotation_ids = {a["id"] for a in json.loads(instances.read_text())["annotations"]} if instances.is_file() else None
        save_json(target, refs)
        tqdm.write(f"{target}: {summary(refs, annotation_ids)}")


if __name__ == "__main__":
    run(main)
