"""A caption tokenizer fitted to the training captions (``model.caption_vocab_size``)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sca.config_loading import load_config
from sca.data.caption_corpus import training_captions
from sca.data.caption_tokenizer import FITTED_TOKENIZER_DIR, CaptionTokenizer, fit_caption_tokenizer, load_gpt2_tokenizer
from sca.data.datasets.register_demo import DEMO_CATEGORIES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_captions(demo_records):
    return list(training_captions(load_config([]).data))


def test_the_corpus_holds_class_names_of_recognition_sources_and_sentences_of_caption_sources(demo_captions):
    names = [c["name"] for c in DEMO_CATEGORIES]
    assert demo_captions[: len(names)] == names  # source demo (recognition): its class captions
    sentences = demo_captions[len(names) :]
    assert len(sentences) > 1000 and not set(sentences) <= set(names)  # source demo_refs: referring sentences
    refs_only = load_config([]).data
    refs_only.sources.pop("demo")
    assert list(training_captions(refs_only)) == sentences


def test_a_tokenizer_fitted_to_the_demo_captions_is_small_exact_and_deterministic(demo_captions):
    fitted = CaptionTokenizer(fit_caption_tokenizer(demo_captions, 512), max_tokens=8)
    assert 257 < len(fitted) <= 512
    # each demo word is one token: class names are two, every referring sentence fits max_tokens
    assert all(len(ids) == 3 for ids in fitted.encode([c["name"] for c in DEMO_CATEGORIES]))
    encoded = fitted.encode(demo_captions)
    assert max(map(len, encoded)) <= 8 and fitted.decode(encoded) == demo_captions
    unseen = "a Zebra, 7 ü!"  # unseen text still encodes (byte by byte) and decodes exactly
    assert CaptionTokenizer(fitted.tokenizer, max_tokens=64).decode(CaptionTokenizer(fitted.tokenizer, 64).encode([unseen])) == [unseen]
    assert fit_caption_tokenizer(demo_captions, 512).get_vocab() == fitted.tokenizer.get_vocab()
    with pytest.raises(ValueError, match="256 bytes"):
        fit_caption_tokenizer(demo_captions, 200)



def test_remembered_encodings_equal_fresh_ones_and_callers_cannot_change_them(monkeypatch):
    tokenizer = CaptionTokenizer(load_gpt2_tokenizer(), max_tokens=4)
    captions = ["red ring", "the blue square left of a green triangle", "red ring"]
    first = tokenizer.encode(captions)
    assert first == [CaptionTokenizer(load_gpt2_tokenizer(), max_tokens=4).encode([c])[0] for c in captions]
    assert len(first[1]) == 4 and first[1][-1] == tokenizer.eos_token_id  # truncated, EOS kept
    first[0].append(99)
    monkeypatch.setattr(CaptionTokenizer, "MEMORY", 3)
    calls = []
    call = tokenizer.tokenizer.__class__.__call__
    monkeypatch.setattr(tokenizer.tokenizer.__class__, "__call__", lambda self, texts, **kw: calls.append(list(texts)) or call(self, texts, **kw))
    assert tokenizer.encode(["red ring"]) == [first[2]]  # remembered: no tokenizer call, unchanged by the caller
    assert tokenizer.encode(["green ring", "yellow ring"])[1][-1] == tokenizer.eos_token_id  # 4 > MEMORY: forgotten, refilled
    assert calls == [["green ring", "yellow ring"]] and len(tokenizer._encoded) == 2

@pytest.mark.slow
def test_a_training_run_saves_its_tokenizer_and_the_predictor_reads_it_wherever_the_run_moves(tmp_path):
    import torch

    from sca.predictor import RegionCaptionPredictor

    trained_run = tmp_path / "run"
    overrides = [f"output_dir={trained_run}", "solver.max_iter=4", "data.num_workers=0",
                 "evaluation.max_images=2", "evaluation.metrics=[exact_match]"]
    result = subprocess.run([sys.executable, "train_net.py", *overrides], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = trained_run / FITTED_TOKENIZER_DIR
    assert saved.is_dir() and f"tokenizer: {saved}" in (trained_run / "config.yaml").read_text()
    moved = tmp_path / "moved"
    shutil.copytree(trained_run, moved)
    predictor = RegionCaptionPredictor.from_output_dir(str(moved), device="cpu")
    assert predictor.cfg.model.tokenizer == str(moved / FITTED_TOKENIZER_DIR)
    vocabulary = len(predictor.model.tokenizer)
    assert vocabulary < 1000
    lm = predictor.captioner.language_model
    assert lm.get_input_embeddings().weight.shape[0] == vocabulary
    assert lm.config.eos_token_id == lm.config.bos_token_id == predictor.model.tokenizer.eos_token_id < vocabulary
    weights = torch.load(moved / "model_final.pth", weights_only=False)["model"]
    assert any(value.shape[0] == vocabulary for key, value in weights.items() if key.endswith("wte.weight"))
    # a checkpoint of the run (eval_only, fine-tuning) brings the tokenizer saved next to it
    from sca.modeling.build import build_tokenizer

    assert len(build_tokenizer(load_config([f"model.weights={moved / 'model_final.pth'}"]).model)) == vocabulary
    regions = predictor(torch.zeros(40, 50, 3, dtype=torch.uint8).numpy(), boxes=[[5, 5, 30, 30]])
    assert len(regions) == 1 and isinstance(regions[0].caption, str)
