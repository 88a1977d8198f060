"""A training run's own caption vocabulary (``model.caption_vocab_size``): GPT-2's byte-level BPE
recipe fitted to the training captions once per output directory, for a language model trained
from scratch. The tokenizer is saved in ``<output_dir>/caption_tokenizer`` (a resumed run and the
predictor read it from there) and named in ``model.tokenizer``, so the saved config names it too.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

from detectron2.utils import comm

from sca.config import SCAConfig
from sca.data.caption_corpus import training_captions
from sca.data.caption_tokenizer import FITTED_TOKENIZER_DIR, fit_caption_tokenizer, fitted_tokenizer_of

__all__ = ["use_fitted_caption_tokenizer"]

logger = logging.getLogger(__name__)


def use_fitted_caption_tokenizer(cfg: SCAConfig) -> None:
    """Fit (rank 0, unless the output directory holds one already) and name the run's caption
    tokenizer in ``cfg.model.tokenizer``. Nothing to do without ``model.caption_vocab_size``, with a
    named tokenizer or pretrained language model, or for evaluation; a run starting from a checkpoint of such a run keeps that
    run's tokenizer; without registered training captions the bundled GPT-2 BPE stays (with a warning)."""
    model = cfg.model
    if cfg.eval_only or model.caption_vocab_size <= 0 or model.tokenizer or model.language_model:
        return
    previous = fitted_tokenizer_of(model.weights)
    if previous:
        model.tokenizer = previous
        return
    directory = os.path.join(cfg.output_dir, FITTED_TOKENIZER_DIR)
    if comm.is_main_process() and not os.path.isdir(directory):
        start = time.perf_counter()
        captions = list(training_captions(cfg.data))
        if captions:
            tokenizer = fit_caption_tokenizer(captions, model.caption_vocab_size)
            staging = directory + ".partial"
            shutil.rmtree(staging, ignore_errors=True)
            tokenizer.save_pretrained(staging)
            os.replace(staging, directory)
            logger.info(
                "caption tokenizer: %d tokens fitted to %d training captions in %.1f s, saved in %s",
                len(tokenizer), len(captions), time.perf_counter() - start, directory,
            )
    comm.synchronize()
    if os.path.isdir(directory):
        model.tokenizer = directory
    else:
        logger.warning("model.caption_vocab_size: the training sources hold no registered captions; keeping GPT-2's BPE")
