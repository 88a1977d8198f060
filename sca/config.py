"""Structured configs (dataclasses) for Hydra, registered in its ConfigStore, plus validation.

``conf/config.yaml`` starts from the ``sca_base`` schema below, so every group file and every
command-line override is checked against these types: an unknown key or a wrong type fails at
start-up with a message that names it. :func:`validate` adds the checks types cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, OmegaConf

from sca.data.caption_normalization import CAPTION_NORMALIZATIONS
from sca.data.prompts import PROMPT_TYPES

__all__ = [
    "PromptConfig",
    "MapperConfig",
    "StreamConfig",
    "SourceConfig",
    "DataConfig",
    "GenerationConfig",
    "EmbeddingCacheConfig",
    "AnythingConfig",
    "ModelConfig",
    "SolverConfig",
    "DenseCapEvalConfig",
    "EvalConfig",
    "TEST_PROTOCOLS",
    "DistConfig",
    "SCAConfig",
    "ConfigError",
    "StartupError",
    "register_configs",
    "to_config",
    "validate",
]


TEST_PROTOCOLS = ("gt_boxes", "densecap")


class StartupError(Exception):
    """The run cannot start; the message names the key or path and what to do. ``train_net.py``
    prints it as one line and exits with status 2 (:mod:`sca.engine.preflight`)."""


class ConfigError(StartupError, ValueError):
    """A configuration value is inconsistent; the message names the key."""


@dataclass
class PromptConfig:
    """How a region is prompted: one prompt type is sampled per region from ``weights``."""

    # every prompt type is listed, so that an override naming them all merges into it; a type left
    # out of an override keeps its value
    weights: Dict[str, float] = field(default_factory=lambda: {"box": 1.0, "point": 0.0, "mask": 0.0})
    num_points: int = 1  # positive points sampled inside the mask for a point prompt


@dataclass
class MapperConfig:
    """Per-source mapper options (dataset dict -> region sample)."""

    image_size: int = II("model.image_size")  # input side: longest side resized to it, padded square
    augmentation: str = "lsj"  # training augmentation: "lsj" (flip, ResizeScale, FixedSizeCrop) or "none"
    min_scale: float = 0.1
    max_scale: float = 2.0
    max_regions: int = 16  # regions sampled (without replacement) per training image
    min_region_area: int = 4  # pixels, after augmentation; smaller regions are dropped
    mask_size: int = II("model.mask_size")  # side of the region masks for mask prompts / mask loss
    prompt: PromptConfig = field(default_factory=PromptConfig)
    # free-text captions (Visual Genome): "densecap" lowercases, deletes punctuation and drops regions
    # of more than 15 words (sca.data.caption_normalization); "none" keeps the phrase as written
    caption_normalization: str = "none"


@dataclass
class StreamConfig:
    """A streaming source (:mod:`sca.data.streaming`): tar shards read by index, never a catalog."""

    # tar paths, brace patterns ("/data/sa_{000000..000999}.tar"), "pipe:" commands, or a shard-list
    # JSON written by tools/index_shards.py or tools/write_shards.py (sample counts known up front)
    shards: List[str] = field(default_factory=list)
    format: str = "sca"  # "sca": tools/write_shards.py shards; "sa1b": SA-1B's own tars
    captions: str = ""  # sa1b: caption side table (.jsonl / .parquet); "{shard}" = the shard's name
    shuffle_buffer: int = 1000  # samples shuffled together (consecutive in the rank's shard sequence)
    cache_dir: str = ""  # shard indexes and downloaded "pipe:" shards (default: ~/.cache/sca/shards)


@dataclass
class SourceConfig:
    """One training source: which registered datasets (or streamed shards), how they are mapped and batched."""

    train_datasets: List[str] = field(default_factory=list)  # catalog source; or set stream.shards
    # registered splits whose images (by image_id) this source does not train on, e.g. the RefCOCO
    # val/test splits for a COCO source: their images are COCO train images
    exclude_images_of: List[str] = field(default_factory=list)
    task_type: str = "recognition"  # "recognition" (class names) or "caption" (free text)
    batch_size: int = 2  # images per GPU per step
    sampling_ratio: float = 1.0  # fraction of steps this source takes part in (same steps on every rank)
    loss_weight: float = 1.0
    mapper: MapperConfig = field(default_factory=MapperConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)


@dataclass
class DataConfig:
    name: str = MISSING
    sources: Dict[str, SourceConfig] = field(default_factory=dict)
    test_datasets: List[str] = field(default_factory=list)
    test_mapper: MapperConfig = field(default_factory=lambda: MapperConfig(augmentation="none"))
    test_task_type: str = "recognition"
    test_task_types: Dict[str, str] = field(default_factory=dict)  # per test dataset, overrides test_task_type
    num_workers: int = 2  # one budget for the whole loader (all sources), per process
    max_failure_rate: float = 0.01  # a source whose mapper raises on more samples than this stops the run
    test_batch_size: int = 8  # images per inference step (their regions are captioned together)
    # per test dataset, the evaluation protocols (default [gt_boxes]): "gt_boxes" captions the
    # ground-truth boxes (caption metrics), "densecap" finds its own regions (dense-captioning mAP)
    test_protocols: Dict[str, List[str]] = field(default_factory=dict)


@dataclass
class GenerationConfig:
    max_new_tokens: int = 20
    num_beams: int = 1  # 1 = greedy
    region_chunk_size: int = 8  # regions decoded together; the image is encoded once


@dataclass
class EmbeddingCacheConfig:
    """SAM image embeddings reused for an image seen again (same pixels, same encoder weights):
    evaluation protocols and prompt sets over one split, the predictor and the demo page, and
    training sources without augmentation while SAM's image encoder is frozen."""

    max_images: int = 64  # embeddings held in memory (least recently used dropped); 0 disables the cache
    dir: str = ""  # also keep them on disk here (keyed by image content and encoder weights; frozen encoder only)
    in_training: bool = True  # for unaugmented sources while SAM's image encoder is frozen


@dataclass
class AnythingConfig:
    """The "anything" mode (no prompts): which grid masks are kept and captioned (sca.predictor)."""

    points_per_side: int = 16  # the grid has points_per_side^2 point prompts
    pred_iou_thresh: float = 0.5  # SAM's predicted IoU must reach it
    stability_score_thresh: float = 0.8  # IoU of the mask thresholded at +/- stability_offset
    stability_offset: float = 1.0  # in mask-logit units
    nms_iou: float = 0.7  # box IoU above which the lower-scored mask is a duplicate
    max_regions: int = 64  # at most this many regions, best IoU scores first


@dataclass
class ModelConfig:
    """The captioner: SAM + caption mixer + task tokens + projector + causal LM.

    ``sam`` / ``language_model`` name a local directory or hub id to load with ``from_pretrained``;
    when empty, the model is built with random weights from ``sam_config`` / ``lm_config``.
    """

    name: str = MISSING
    image_size: int = 1024  # SAM's input side
    mask_size: int = 256  # SAM's low-res mask side (4x its image-embedding grid)
    sam: str = ""
    sam_config: Dict[str, Any] = field(default_factory=dict)
    language_model: str = ""
    lm_config: Dict[str, Any] = field(default_factory=dict)
    tokenizer: str = ""  # empty: the LM's own tokenizer if pretrained, else the bundled GPT-2 BPE
    # > 0, for a language model built from lm_config (not model.language_model) and no model.tokenizer:
    # training first fits GPT-2's BPE recipe with at most this many tokens to the training sources'
    # captions, saved in <output_dir>/caption_tokenizer and named in model.tokenizer (sca.engine.caption_vocabulary)
    caption_vocab_size: int = 0
    num_caption_tokens: int = 8
    mixer_layers: int = 12
    num_task_tokens: int = 6
    task_types: List[str] = field(default_factory=lambda: ["recognition", "caption"])
    multimask_output: bool = True  # SAM's 3 candidate masks per region (the best-IoU one is reported)
    # prompt types that get SAM's single-mask output even with multimask_output (SAM trains boxes
    # and masks, which are unambiguous, on its single-mask token and keeps 3 candidates for clicks)
    single_mask_prompt_types: List[str] = field(default_factory=list)
    train_sam: bool = False
    train_mixer: bool = True  # caption mixer, caption tokens, task tokens and projector
    train_language_model: bool = False
    label_smoothing: float = 0.1
    mask_loss_weight: float = 0.0  # >0 adds SAM's mask loss (useful only when SAM trains)
    iou_loss_weight: float = 1.0  # SAM's IoU-head loss, added whenever the mask loss is on
    # >0, with the mask loss: also one random click inside each region's ground-truth mask, decoded
    # by SAM alone (mask and IoU losses, no caption), so that clicks and the "anything" mode's grid
    # work; each click's losses count as this fraction of a region in the means
    click_loss_weight: float = 0.0
    max_caption_tokens: int = 20  # caption tokens kept (EOS included)
    weights: str = ""  # a checkpoint (.pth) or save_pretrained directory to start from
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    amp_on_cuda: bool = False  # bf16 autocast on CUDA unless solver.amp says otherwise (the real-size presets)
    mixer_checkpointing: bool = False  # recompute the caption mixer's activations in backward (less memory)
    embedding_cache: EmbeddingCacheConfig = field(default_factory=EmbeddingCacheConfig)
    # the predictor's "anything"-mode filters for this model: what a stable mask is depends on the
    # mask resolution relative to the objects and on the logit scale the model learned
    anything: AnythingConfig = field(default_factory=AnythingConfig)


@dataclass
class SolverConfig:
    max_iter: int = 1000
    base_lr: float = 1e-4
    lr_multipliers: Dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> factor
    weight_decay: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    lr_scheduler: str = "cosine"  # "cosine", "step" or "constant"
    steps: List[int] = field(default_factory=list)  # for "step"
    gamma: float = 0.1
    warmup_iters: int = 200
    warmup_factor: float = 0.001
    clip_grad_norm: float = 1.0  # <= 0 disables clipping
    checkpoint_period: int = 5000
    max_to_keep: int = 3
    amp: Optional[bool] = None  # mixed precision; None: on CUDA when model.amp_on_cuda, else off
    amp_dtype: str = "bfloat16"  # or "float16" (with a grad scaler)


@dataclass
class DenseCapEvalConfig:
    """The ``densecap`` protocol: regions from the "anything" mode, dense-captioning mAP."""

    anything: Dict[str, Any] = field(default_factory=dict)  # AnythingConfig fields to override (on model.anything)
    conventions: str = "sca"  # "sca" or "densecap_lua" (sca.evaluation.dense_captioning)


@dataclass
class EvalConfig:
    period: int = 0  # 0: evaluate only at the end of training
    max_images: int = 0  # 0: the whole split
    # SPICE needs the optional extra (pip install 'sca[spice]'); without it, it is reported as skipped
    metrics: List[str] = field(default_factory=lambda: ["exact_match", "bleu", "meteor", "rouge", "cider", "spice"])
    densecap: DenseCapEvalConfig = field(default_factory=DenseCapEvalConfig)


@dataclass
class DistConfig:
    """Processes for DDP, started by detectron2's ``launch`` (NCCL on GPUs, gloo on CPU).
    Under ``torchrun`` these keys are ignored: its environment variables decide."""

    num_gpus: int = 1  # processes per machine (GPUs, or CPU processes on a CPU machine)
    num_machines: int = 1
    machine_rank: int = 0
    dist_url: str = "auto"  # "auto": a free localhost port (single machine); else e.g. tcp://host:port


@dataclass
class SCAConfig:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    solver: SolverConfig = MISSING
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    output_dir: str = MISSING
    device: str = "auto"  # "auto" (cuda if available), "cpu" or "cuda"
    seed: int = 0
    resume: bool = False
    eval_only: bool = False
    log_period: int = 20
    num_threads: int = 0  # torch intra-op threads; 0 keeps torch's default


def to_config(cfg: DictConfig) -> SCAConfig:
    """The composed config as typed objects, validated (:func:`validate`).

    Raises:
        ConfigError: also for a key the schema does not know that was added anyway (Hydra's
            ``+key=value`` / ``++key=value``), which the conversion would otherwise drop silently.
    """
    config = OmegaConf.to_object(cfg)
    unknown = _unknown_keys(OmegaConf.to_container(cfg), OmegaConf.to_container(OmegaConf.structured(config)))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}: not in the schema (sca/config.py); check the spelling")
    validate(config)
    return config


def _unknown_keys(given: Any, known: Any, prefix: str = "") -> list[str]:
    if not isinstance(given, dict) or not isinstance(known, dict):
        return []
    unknown = []
    for key, value in given.items():
        if key not in known:
            unknown.append(f"{prefix}{key}")
        else:
            unknown += _unknown_keys(value, known[key], f"{prefix}{key}.")
    return unknown


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (``conf/config.yaml`` extends ``sca_base``)."""
    store = ConfigStore.instance()
    store.store(name="sca_base", node=SCAConfig)


def validate(cfg: DictConfig | SCAConfig) -> None:
    """Checks across keys that the schema cannot express. Raises :class:`ConfigError`."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_object(cfg)
    if not cfg.eval_only and not cfg.data.sources:
        raise ConfigError("data.sources: at least one training source is required")
    mappers = {f"data.sources.{name}.mapper": s.mapper for name, s in cfg.data.sources.items()}
    mappers["data.test_mapper"] = cfg.data.test_mapper
    for key, mapper in mappers.items():
        unknown = set(mapper.prompt.weights) - set(PROMPT_TYPES)
        if unknown:
            raise ConfigError(f"{key}.prompt.weights: unknown prompt type(s) {sorted(unknown)}; use {PROMPT_TYPES}")
        if any(w < 0 for w in mapper.prompt.weights.values()) or sum(mapper.prompt.weights.values()) <= 0:
            raise ConfigError(f"{key}.prompt.weights: weights must be >= 0 with a positive sum")
        if mapper.augmentation not in ("lsj", "none"):
            raise ConfigError(f"{key}.augmentation: '{mapper.augmentation}' is not 'lsj' or 'none'")
        if mapper.image_size <= 0 or mapper.max_regions <= 0:
            raise ConfigError(f"{key}: image_size and max_regions must be positive")
        if mapper.caption_normalization not in CAPTION_NORMALIZATIONS:
            raise ConfigError(f"{key}.caption_normalization: '{mapper.caption_normalization}' is not one of {CAPTION_NORMALIZATIONS}")
    if 0 < cfg.model.caption_vocab_size <= 257:
        raise ConfigError(f"model.caption_vocab_size: {cfg.model.caption_vocab_size} does not exceed the 256 bytes and <|endoftext|> (0: off)")
    for dataset, protocols in cfg.data.test_protocols.items():
        unknown = set(protocols) - set(TEST_PROTOCOLS)
        if unknown or not protocols:
            raise ConfigError(f"data.test_protocols.{dataset}: {list(protocols)} must be a non-empty list of {TEST_PROTOCOLS}")
    if cfg.evaluation.densecap.conventions not in ("sca", "densecap_lua"):
        raise ConfigError(f"evaluation.densecap.conventions: '{cfg.evaluation.densecap.conventions}' is not sca or densecap_lua")
    task_types = [(f"data.sources.{n}.task_type", s.task_type) for n, s in cfg.data.sources.items()]
    task_types.append(("data.test_task_type", cfg.data.test_task_type))
    task_types += [(f"data.test_task_types.{d}", t) for d, t in cfg.data.test_task_types.items()]
    for key, task_type in task_types:
        if task_type not in cfg.model.task_types:
            raise ConfigError(f"{key}: '{task_type}' is not one of model.task_types {cfg.model.task_types}")
    for name, source in cfg.data.sources.items():
        if bool(source.train_datasets) == bool(source.stream.shards):
            raise ConfigError(f"data.sources.{name}: set either train_datasets (catalog) or stream.shards (streaming), not both or neither")
        if source.stream.shards:
            if source.stream.format not in ("sca", "sa1b"):
                raise ConfigError(f"data.sources.{name}.stream.format: '{source.stream.format}' is not sca or sa1b")
            if source.stream.format == "sa1b" and not source.stream.captions:
                raise ConfigError(f"data.sources.{name}.stream.captions: SA-1B has no captions; name a side table")
            if source.stream.shuffle_buffer <= 0:
                raise ConfigError(f"data.sources.{name}.stream.shuffle_buffer must be positive")
            if source.exclude_images_of:
                raise ConfigError(f"data.sources.{name}.exclude_images_of: not supported for streaming sources")
        if source.batch_size <= 0:
            raise ConfigError(f"data.sources.{name}.batch_size must be positive")
        if not 0 < source.sampling_ratio <= 1:
            raise ConfigError(f"data.sources.{name}.sampling_ratio must be in (0, 1], got {source.sampling_ratio}")
    if not 0 <= cfg.data.max_failure_rate < 1:
        raise ConfigError(f"data.max_failure_rate must be in [0, 1), got {cfg.data.max_failure_rate}")
    if cfg.solver.lr_scheduler not in ("cosine", "step", "constant"):
        raise ConfigError(f"solver.lr_scheduler: '{cfg.solver.lr_scheduler}' is not cosine, step or constant")
    if cfg.solver.amp_dtype not in ("bfloat16", "float16"):
        raise ConfigError(f"solver.amp_dtype: '{cfg.solver.amp_dtype}' is not bfloat16 or float16")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device: '{cfg.device}' is not auto, cpu or cuda")
