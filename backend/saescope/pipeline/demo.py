"""The built-in atlas preset (`saescope demo`): corpus -> model -> SAEs and baselines -> post-processing
-> evaluation -> precompute and publish.

Owns `BuiltinAtlasConfig` (what the built-in atlas contains; the demo is this config with its defaults)
and `build_builtin_atlas`, which runs the pipeline's steps in order. Every step reuses what an earlier
run left (a finished model checkpoint, a finished dictionary folder, a ready store entry), so a second
run costs seconds; an interrupted model or SAE training resumes from its last checkpoint under
ATLAS/work; every artefact is written to a temporary name and renamed when complete, so an
interrupted run never leaves a half-written model, dictionary or store entry behind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor

from saescope import __version__
from saescope.analysis.config import PrecomputeConfig
from saescope.atlas_layout import AtlasLayout
from saescope.atomic_files import write_text
from saescope.corpus.packing import PackedContexts
from saescope.devices import resolve_device
from saescope.dictionaries.architectures import check_training_name
from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.evaluation import evaluate_dictionary
from saescope.dictionaries.postprocess import load_prune_result
from saescope.dictionaries.saelens_format import load_dictionary
from saescope.dictionaries.training import SAETrainingConfig, TrainingResult
from saescope.dictionaries.training_checkpoint import checkpoint_configs, remove_checkpoint
from saescope.dictionaries.training_stream import train_saes_from_chunks
from saescope.lm.builtin import BuiltinLMConfig, LMBuildReport, build_builtin_lm
from saescope.lm.loading import load_lm
from saescope.pipeline.contexts import CORPUS_NAME, builtin_contexts, contexts_for_tokens, training_rows
from saescope.pipeline.dictionaries import (
    FINETUNED_SUFFIX,
    DictionaryBuild,
    PostprocessConfig,
    activation_chunks,
    activation_rows,
    build_baseline,
    finetune_folder,
    folder_is_complete,
    new_build,
    prune_folder,
    pruned_indices,
    read_training_notes,
    reused_build,
    write_dictionary_folder,
)
from saescope.pipeline.folders import BUILTIN_MODEL_ID
from saescope.pipeline.publish import (
    DictionaryEntry,
    ModelRecord,
    display_prefix,
    precompute_and_publish,
    store_is_current,
)
from saescope.store.pages import ensure_feature_pages

__all__ = ["AtlasBuildReport", "BUILTIN_MODEL_ID", "BuiltinAtlasConfig", "CORPUS_NAME", "DictionaryBuild",
           "SAESpec", "build_builtin_atlas", "store_is_current"]

# L1 coefficient of the built-in ReLU SAE: it puts the ReLU SAE's held-out L0 near the TopK SAE's
# L0 of 16, so the two compare at about the same sparsity.
RELU_L1 = 3.0
# Dead-feature settings of the built-in TopK SAE: a latent silent for 50k tokens counts as dead and the
# AuxK loss, weighted 2 (not Gao et al.'s 1/32, meant for runs of billions of tokens), trains it on the
# residual; in a run of a few million tokens this revives most dead latents at the same L0 and CE
# recovered (docs/benchmarks.md, "Built-in atlas quality").
TOPK_DEAD_TOKENS = 50_000
TOPK_AUX_COEFFICIENT = 2.0
BUILD_REPORT_FILE = "build_report.json"


class SAESpec(BaseModel):
    """One SAE of the atlas; its dictionary id is `{architecture}-{d_sae}`."""

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

    _registered = field_validator("architecture")(check_training_name)

    @property
    def name(self) -> str:
        return f"{self.architecture}-{self.d_sae}"


class BuiltinAtlasConfig(BaseModel):
    """What the built-in atlas contains. The defaults are the demo; `tiny()` is a smoke-test preset."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Seed of every random choice (model, SAEs, context sampling).")
    lm: BuiltinLMConfig = Field(default_factory=BuiltinLMConfig, description="The built-in language model.")
    hook_name: str = Field("blocks.0.mlp.hook_post", description="Hook point the dictionaries read.")
    saes: list[SAESpec] = Field(
        default_factory=lambda: [
            SAESpec(architecture="relu", d_sae=512, l1=RELU_L1),
            SAESpec(architecture="topk", d_sae=4096, k=16, dead_tokens=TOPK_DEAD_TOKENS,
                    architecture_options={"aux_coefficient": TOPK_AUX_COEFFICIENT}),
        ],
        description="SAEs trained together in one pass over the activations (like A/0 and A/1).",
    )
    sae_tokens: int = Field(2_000_000, ge=1, description="Training tokens (activation vectors) per SAE.")
    sae_batch_size: int = Field(4096, ge=1, description="Tokens per SAE optimiser step.")
    sae_shuffle_buffer_tokens: int = Field(
        65_536, ge=0, description="Rows per shuffled chunk of the SAE training stream (0: no shuffling)."
    )
    sae_checkpoint_every_tokens: int = Field(
        262_144, ge=1, description="Checkpoint the SAE sweep every N tokens, at the next chunk boundary "
        "(ATLAS/work/saes; a rerun after an interruption resumes from it)."
    )
    baselines: list[Literal["neurons", "random", "pca", "ica"]] = Field(
        ["neurons", "pca"], description="Baseline dictionaries built beside the SAEs (neurons, random, pca, ica)."
    )
    baseline_fit_tokens: int = Field(65_536, ge=1, description="Activation rows used to fit PCA/ICA/random "
                                     "and to compute the pruning statistics and fine-tune decoders.")
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig,
                                           description="Pruning flags and decoder fine-tuning of the SAEs (off).")
    eval_contexts: int = Field(256, ge=1, description="Held-out contexts for the evaluation metrics.")
    precompute_contexts: int = Field(2048, ge=1, description="Corpus contexts scanned by the precompute.")
    precompute: PrecomputeConfig = Field(default_factory=PrecomputeConfig, description="Precompute options.")

    @classmethod
    def tiny(cls, **overrides: Any) -> "BuiltinAtlasConfig":
        """An atlas in well under a minute (tiny model, two small SAEs, one baseline): tests, smoke runs."""
        values: dict[str, Any] = dict(
            lm=BuiltinLMConfig.tiny(),
            saes=[SAESpec(architecture="relu", d_sae=64), SAESpec(architecture="relu", d_sae=256)],
            sae_tokens=60_000,
            sae_batch_size=512,
            baselines=["neurons"],
            baseline_fit_tokens=4096,
            eval_contexts=32,
            precompute_contexts=160,
            precompute=PrecomputeConfig(top_k=8, n_intervals=4, examples_per_interval=2, n_random=3),
        )
        values.update(overrides)
        return cls(**values)


class AtlasBuildReport(BaseModel):
    """What a build produced, what it reused and how long each stage took."""

    atlas: str
    lm: LMBuildReport
    dictionaries: list[DictionaryBuild]
    precompute_reused: bool
    seconds: dict[str, float] = Field(description="Wall-clock seconds per stage and in total.")

    def summary(self) -> str:
        lines = [
            f"atlas {self.atlas}: built in {self.seconds.get('total', 0):.0f} s "
            + " ".join(f"({k} {v:.0f} s)" for k, v in self.seconds.items() if k != "total"),
            f"model: held-out loss {self.lm.heldout_loss:.3f} nats "
            f"(unigram baseline {self.lm.unigram_heldout_loss:.3f}){' [reused]' if self.lm.reused else ''}",
            f"{'dictionary':<16}{'L0':>8}{'expl.var':>10}{'CE rec.':>9}{'dead':>7}",
        ]
        for d in self.dictionaries:
            m = d.metrics
            ev = m.get("explained_variance")
            ce = m.get("ce_recovered")
            lines.append(
                f"{d.id:<16}{m.get('l0', float('nan')):>8.1f}"
                f"{(ev if ev is not None else float('nan')):>10.3f}"
                f"{(ce if ce is not None else float('nan')):>9.3f}{m.get('dead', 0):>7}"
                + ("  [reused]" if d.reused else "")
            )
        if self.precompute_reused:
            lines.append("feature records: reused (store is up to date)")
        return "\n".join(lines)


class _BuildContext:
    """What every step of one build shares: the model, where things go, held-out and fit data (lazily)."""

    def __init__(self, model: Any, layout: AtlasLayout, config: BuiltinAtlasConfig) -> None:
        self.model = model
        self.layout = layout
        self.config = config
        self.metadata = DictionaryMetadata(
            model_name=BUILTIN_MODEL_ID, hook_name=config.hook_name, context_size=config.lm.n_ctx,
            prepend_bos=True, dataset_path=CORPUS_NAME,
        )
        self._heldout: PackedContexts | None = None
        self._fit_rows: Tensor | None = None
        self.flags_changed = False  # pruning flags written now: the store must be republished

    @property
    def heldout(self) -> np.ndarray:
        """Held-out contexts `[n, n_ctx]` for the evaluation metrics."""
        if self._heldout is None:
            c = self.config
            self._heldout = builtin_contexts("heldout", c.lm, self.model.tokenizer, c.eval_contexts, c.seed)
        return self._heldout.tokens

    @property
    def fit_rows(self) -> Tensor:
        """Activation rows `[baseline_fit_tokens, d_in]` for baselines, pruning and fine-tuning."""
        if self._fit_rows is None:
            c = self.config
            n = contexts_for_tokens(c.baseline_fit_tokens, c.lm.n_ctx)
            fit = builtin_contexts("train", c.lm, self.model.tokenizer, n, c.seed + 1)
            self._fit_rows = activation_rows(self.model, fit.tokens, c.hook_name, c.baseline_fit_tokens)
        return self._fit_rows


# --------------------------------------------------------------------------- steps


def _sae_training_config(spec: SAESpec, config: BuiltinAtlasConfig) -> SAETrainingConfig:
    optional = {"dead_tokens": spec.dead_tokens, "lr": spec.lr}
    return SAETrainingConfig(
        architecture=spec.architecture, d_sae=spec.d_sae, k=spec.k, l1=spec.l1, tokens=config.sae_tokens,
        batch_size=config.sae_batch_size, seed=config.seed, shuffle_buffer_tokens=config.sae_shuffle_buffer_tokens,
        architecture_options=spec.architecture_options, **{k: v for k, v in optional.items() if v is not None},
    )


def _train_missing_saes(ctx: _BuildContext, missing: list[SAESpec]) -> list[DictionaryBuild]:
    """Train every missing SAE size together in one pass over streamed activations, then evaluate.

    The sweep checkpoints to ATLAS/work/saes and a rerun after an interruption resumes it; the
    checkpoint is removed once every dictionary folder is written."""
    config, layout, model = ctx.config, ctx.layout, ctx.model
    started = time.perf_counter()
    n_ctx = config.lm.n_ctx
    train = builtin_contexts("train", config.lm, model.tokenizer, contexts_for_tokens(config.sae_tokens, n_ctx) + 1,
                             config.seed)
    token_rows = training_rows(train.tokens, n_ctx, config.sae_tokens, config.seed)
    trainer_configs = [_sae_training_config(spec, config) for spec in missing]
    checkpoint_dir = layout.sae_checkpoint_dir
    # A run interrupted after writing some of the folders left a checkpoint of a larger sweep: continue it.
    saved = checkpoint_configs(checkpoint_dir)
    if saved is not None and all(c in saved for c in trainer_configs):
        trainer_configs = saved
    results: list[TrainingResult] = train_saes_from_chunks(
        trainer_configs,
        activation_chunks(model, token_rows, config.hook_name, trainer_configs[0]),
        ctx.metadata,
        progress=True,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=config.sae_checkpoint_every_tokens,
        keep_checkpoint=True,
    )
    train_seconds = time.perf_counter() - started
    builds = []
    for spec in missing:
        result = next(r for r in results if r.config == _sae_training_config(spec, config))
        t0 = time.perf_counter()
        metrics = evaluate_dictionary(model, result.dictionary, ctx.heldout, config.hook_name)
        folder = layout.dictionary_dir(spec.name)
        write_dictionary_folder(folder, result.dictionary.cpu(), metrics, {
            "config": result.config.model_dump(),
            "history": result.history,
            "normalization_scale": result.normalization_scale,
            "training_contexts": len(train),
            "seconds_training_shared": train_seconds,
            "resumed_from_tokens": result.resumed_from_tokens,
        })
        seconds = train_seconds / len(missing) + time.perf_counter() - t0
        builds.append(new_build(folder, spec.name, result.dictionary, metrics, seconds))
    remove_checkpoint(checkpoint_dir)
    return builds


def _sae_step(ctx: _BuildContext) -> list[DictionaryBuild]:
    """The SAEs of the config, trained where their folder is missing or incomplete."""
    specs = ctx.config.saes
    missing = [s for s in specs if not folder_is_complete(ctx.layout.dictionary_dir(s.name))]
    trained = {b.id: b for b in _train_missing_saes(ctx, missing)} if missing else {}
    return [trained.get(s.name) or reused_build(ctx.layout.dictionary_dir(s.name), s.name) for s in specs]


def _baseline_step(ctx: _BuildContext) -> list[DictionaryBuild]:
    """The baselines of the config, fitted where their folder is missing or incomplete."""
    builds = []
    for kind in ctx.config.baselines:
        folder = ctx.layout.dictionary_dir(kind)
        if folder_is_complete(folder):
            builds.append(reused_build(folder, kind))
        else:
            builds.append(build_baseline(ctx.model, kind, ctx.fit_rows, ctx.heldout, folder, ctx.config.seed,
                                         ctx.metadata))
    return builds


def _postprocess_step(ctx: _BuildContext, saes: list[DictionaryBuild]) -> list[DictionaryBuild]:
    """Pruning flags (`pruning.json`) and fine-tuned copies of the SAEs, as configured; returns the new
    dictionaries (fine-tuned copies)."""
    options = ctx.config.postprocess
    extra = []
    for build in saes:
        folder = Path(build.folder)
        if options.prune and (not build.reused or load_prune_result(folder) is None):
            prune_folder(folder, ctx.fit_rows, options.prune_thresholds)
            ctx.flags_changed = True
        if options.finetune:
            name = build.id + FINETUNED_SUFFIX
            out = ctx.layout.dictionary_dir(name)
            if folder_is_complete(out) and build.reused:
                extra.append(reused_build(out, name))
            else:
                extra.append(finetune_folder(ctx.model, folder, out, ctx.fit_rows, ctx.heldout,
                                             options.finetune_config))
    return extra


def _model_record(lm_report: LMBuildReport) -> ModelRecord:
    return ModelRecord(
        id=BUILTIN_MODEL_ID,
        source="builtin",
        location="model",
        tokenizer="model/tokenizer",
        metrics={
            "heldout_loss": lm_report.heldout_loss,
            "unigram_heldout_loss": lm_report.unigram_heldout_loss,
            "train_tokens": lm_report.train_tokens,
            "corpus": CORPUS_NAME,
        },
    )


def _dictionary_entries(layout: AtlasLayout, builds: list[DictionaryBuild], config: BuiltinAtlasConfig,
                        lm_report: LMBuildReport) -> list[DictionaryEntry]:
    entries = []
    for build in builds:
        folder = Path(build.folder)
        training = read_training_notes(folder)
        entries.append(
            DictionaryEntry(
                id=build.id,
                dictionary=load_dictionary(folder),
                weights_path=str(folder.relative_to(layout.root)),
                display_prefix=display_prefix(config.hook_name),
                metrics=build.metrics,
                provenance={
                    "model": BUILTIN_MODEL_ID,
                    "model_fingerprint": lm_report.config_fingerprint,
                    "hook_name": config.hook_name,
                    "corpus": CORPUS_NAME,
                    "training_tokens": training.get("config", {}).get("tokens"),
                    "seed": config.seed,
                    "saescope_version": __version__,
                    "training": training.get("config") or {k: v for k, v in training.items() if k != "history"},
                },
                pruned=pruned_indices(folder),
            )
        )
    return entries


def _publish_step(ctx: _BuildContext, builds: list[DictionaryBuild], lm_report: LMBuildReport,
                  device: str) -> bool:
    """Precompute and publish every dictionary unless the store is current; returns True when reused."""
    layout, config = ctx.layout, ctx.config
    store_url = layout.store_url()
    if not ctx.flags_changed and store_is_current(store_url, layout.root, [b.id for b in builds]):
        if config.precompute.feature_pages:
            ensure_feature_pages(store_url, progress=True)  # after an interrupted publish, or an older store
        return True
    contexts = builtin_contexts("train", config.lm, ctx.model.tokenizer, config.precompute_contexts, config.seed + 2)
    precompute_and_publish(
        store_url=store_url,
        atlas_root=layout.root,
        model=ctx.model,
        model_record=_model_record(lm_report),
        entries=_dictionary_entries(layout, builds, config, lm_report),
        contexts=contexts,
        config=config.precompute.model_copy(update={"device": device}),
        work_dir=layout.work_dir / "precompute",
    )
    return False


def build_builtin_atlas(
    atlas: str | Path, config: BuiltinAtlasConfig | None = None, device: str = "auto"
) -> AtlasBuildReport:
    """Build (or reuse) the built-in atlas in `atlas`: model, SAEs, baselines, post-processing,
    evaluation, feature records."""
    config = config or BuiltinAtlasConfig()
    layout = AtlasLayout(root=Path(atlas))
    layout.root.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    seconds: dict[str, float] = {}
    t_start = t0 = time.perf_counter()

    lm_config = config.lm.model_copy(update={"seed": config.seed})
    lm_report = build_builtin_lm(lm_config, layout.model_dir, device=torch_device, work_dir=layout.work_dir / "lm")
    ctx = _BuildContext(load_lm(layout.model_dir, device=torch_device), layout, config)
    seconds["model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    saes = _sae_step(ctx)
    seconds["saes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    baselines = _baseline_step(ctx)
    seconds["baselines"] = time.perf_counter() - t0
    builds = saes + baselines
    if config.postprocess.prune or config.postprocess.finetune:
        t0 = time.perf_counter()
        builds += _postprocess_step(ctx, saes)
        seconds["postprocess"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    reused_store = _publish_step(ctx, builds, lm_report, str(torch_device))
    seconds["precompute"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start

    report = AtlasBuildReport(
        atlas=str(layout.root), lm=lm_report, dictionaries=builds, precompute_reused=reused_store, seconds=seconds
    )
    write_text(layout.root / BUILD_REPORT_FILE, report.model_dump_json(indent=2))
    return report
