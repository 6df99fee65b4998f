"""The built-in atlas, end to end: corpus -> model -> SAEs and baselines -> evaluation -> precompute.

Owns the orchestration that `saescope demo` (and the model-based forms of `train-sae`, `evaluate`,
`precompute`, `cache-activations`) run. Like `cli.py`, it sits above the stages and is the only module
that calls all of them; it holds no algorithm of its own. Every step reuses what an earlier run left
(a finished model checkpoint, a finished dictionary folder, a ready store entry), so a second run costs
seconds; an interrupted model or SAE training resumes from its last checkpoint under ATLAS/work; and
every artefact is written to a temporary name and renamed when complete, so an interrupted
run never leaves a half-written model, dictionary or store entry behind.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import SQLAlchemyError

from saescope import __version__
from saescope.analysis.config import PrecomputeConfig
from saescope.atlas_layout import AtlasLayout
from saescope.corpus.packing import PackedContexts, pack_documents
from saescope.corpus.stdlib import stdlib_documents
from saescope.devices import resolve_device
from saescope.dictionaries.base import Dictionary, DictionaryMetadata
from saescope.dictionaries.evaluation import DictionaryMetrics, evaluate_dictionary, load_metrics, save_metrics
from saescope.dictionaries.saelens_format import load_dictionary, save_dictionary
from saescope.dictionaries.training import SAETrainingConfig, TrainingResult
from saescope.dictionaries.training_checkpoint import CHECKPOINT_DIR, checkpoint_configs, remove_checkpoint
from saescope.dictionaries.training_stream import train_saes_from_chunks
from saescope.errors import ConfigError
from saescope.lm.builtin import BuiltinLMConfig, LMBuildReport, build_builtin_lm
from saescope.lm.loading import load_lm
from saescope.activations.chunked import ActivationChunks
from saescope.activations.stream import iter_activation_batches

BUILTIN_MODEL_ID = "builtin-stdlib-1l"
CORPUS_NAME = f"python-stdlib-{sys.version_info.major}.{sys.version_info.minor}"
METRICS_FILE = "metrics.json"
TRAINING_FILE = "training.json"
# L1 coefficient of the built-in ReLU SAE. A sweep on the built-in model (1M tokens, 512 features,
# held-out L0 / explained variance / CE recovered): the trainer's default 5.66 gave 8.2 / 0.59 / 0.80;
# 4: 13.1 / 0.65 / 0.85; 3: 19.4 / 0.69 / 0.88; 2: 33.4 / 0.74 / 0.91 with 64 dense features;
# 1.5: 48.0 / 0.77 / 0.93 with 188 dense. 3 puts it near the TopK SAE's L0 of 16, so the two compare
# at about the same sparsity.
RELU_L1 = 3.0


class SAESpec(BaseModel):
    """One SAE of the atlas; its dictionary id is `{architecture}-{d_sae}`."""

    model_config = ConfigDict(extra="forbid")

    architecture: Literal["relu", "topk", "batchtopk", "jumprelu"] = Field("relu", description="SAE architecture.")
    d_sae: int = Field(..., ge=1, description="Number of features.")
    k: int | None = Field(None, ge=1, description="Active latents per token (topk, batchtopk).")
    l1: float | None = Field(None, ge=0, description="Sparsity coefficient (None: the trainer's default).")

    @property
    def name(self) -> str:
        return f"{self.architecture}-{self.d_sae}"


class BuiltinAtlasConfig(BaseModel):
    """What the built-in atlas contains. Defaults build in well under 15 minutes on 2 CPU cores."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Seed of every random choice (model, SAEs, context sampling).")
    lm: BuiltinLMConfig = Field(default_factory=BuiltinLMConfig, description="The built-in language model.")
    hook_name: str = Field("blocks.0.mlp.hook_post", description="Hook point the dictionaries read.")
    saes: list[SAESpec] = Field(
        default_factory=lambda: [
            SAESpec(architecture="relu", d_sae=512, l1=RELU_L1),
            SAESpec(architecture="topk", d_sae=4096, k=16),
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
    baselines: list[str] = Field(
        ["neurons", "pca"], description="Baseline dictionaries built beside the SAEs (neurons, random, pca, ica)."
    )
    baseline_fit_tokens: int = Field(65_536, ge=1, description="Activation rows used to fit PCA/ICA/random.")
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


class DictionaryBuild(BaseModel):
    """One dictionary of the atlas and its held-out metrics."""

    id: str
    kind: str
    architecture: str
    d_sae: int
    folder: str
    reused: bool
    seconds: float
    metrics: dict[str, Any]


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


# --------------------------------------------------------------------------- helpers


def _folder_is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("cfg.json", "sae_weights.safetensors", METRICS_FILE))


def _write_dictionary_folder(
    folder: Path,
    dictionary: Dictionary,
    metrics: DictionaryMetrics,
    extra: dict[str, Any],
) -> None:
    """Write weights, metrics and training notes to `folder` atomically (temp folder, then rename)."""
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    log10 = metrics.log10_density() if metrics.feature_density is not None else None
    save_dictionary(dictionary, partial, log10_sparsity=log10)
    save_metrics(metrics, partial)
    (partial / TRAINING_FILE).write_text(json.dumps(extra, indent=2, default=str))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def _contexts(documents_split: str, lm_config: BuiltinLMConfig, tokenizer: Any, n: int, seed: int) -> PackedContexts:
    docs = stdlib_documents(
        documents_split,
        heldout_fraction=lm_config.heldout_fraction,
        max_files=lm_config.corpus_max_files,
        include_tests=lm_config.corpus_include_tests,
    )
    return pack_documents(docs, tokenizer, lm_config.n_ctx, max_contexts=n, seed=seed)


def _shuffled_rows(tokens: np.ndarray, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(tokens.shape[0])
    return tokens[order]


def _activation_chunks(model: Any, token_rows: np.ndarray, hook_name: str, config: SAETrainingConfig) -> ActivationChunks:
    """The seekable SAE training stream over pre-shuffled contexts: chunks of about one shuffle
    buffer (at least one batch) of rows, each permuted by (seed, chunk index)."""
    return ActivationChunks(
        model,
        token_rows,
        hook_name,
        chunk_tokens=max(config.shuffle_buffer_tokens, config.batch_size),
        seed=config.seed,
        shuffle=config.shuffle_buffer_tokens > 0,
        contexts_per_batch=32,
    )


# --------------------------------------------------------------------------- stages


def _train_missing_saes(
    model: Any,
    layout: AtlasLayout,
    config: BuiltinAtlasConfig,
    missing: list[SAESpec],
    heldout: PackedContexts,
    metadata: DictionaryMetadata,
) -> list[DictionaryBuild]:
    """Train every missing SAE size together in one pass over streamed activations, then evaluate.

    The sweep checkpoints to ATLAS/work/saes and a rerun after an interruption resumes it; the
    checkpoint is removed once every dictionary folder is written."""
    started = time.perf_counter()
    n_ctx = config.lm.n_ctx
    n_contexts = int(np.ceil(config.sae_tokens / (n_ctx - 1))) + 1
    train = _contexts("train", config.lm, model.tokenizer, n_contexts, config.seed)
    if len(train) * (n_ctx - 1) < config.sae_tokens:
        # Fewer distinct contexts than the budget: cycle over them in fresh orders (more epochs).
        reps = int(np.ceil(config.sae_tokens / (len(train) * (n_ctx - 1))))
        token_rows = np.concatenate([_shuffled_rows(train.tokens, config.seed + r) for r in range(reps)])
    else:
        token_rows = _shuffled_rows(train.tokens, config.seed)
    trainer_configs = [_sae_training_config(spec, config) for spec in missing]
    checkpoint_dir = layout.sae_checkpoint_dir
    # A run interrupted after writing some of the folders left a checkpoint of a larger sweep: continue it.
    saved = checkpoint_configs(checkpoint_dir)
    if saved is not None and all(c in saved for c in trainer_configs):
        trainer_configs = saved
    results: list[TrainingResult] = train_saes_from_chunks(
        trainer_configs,
        _activation_chunks(model, token_rows, config.hook_name, trainer_configs[0]),
        metadata,
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
        metrics = evaluate_dictionary(model, result.dictionary, heldout.tokens, config.hook_name)
        name = spec.name
        _write_dictionary_folder(
            layout.dictionary_dir(name),
            result.dictionary.cpu(),
            metrics,
            {
                "config": result.config.model_dump(),
                "history": result.history,
                "normalization_scale": result.normalization_scale,
                "training_contexts": len(train),
                "seconds_training_shared": train_seconds,
                "resumed_from_tokens": result.resumed_from_tokens,
            },
        )
        builds.append(
            DictionaryBuild(
                id=name, kind="sae", architecture=result.dictionary.architecture, d_sae=spec.d_sae,
                folder=str(layout.dictionary_dir(name)), reused=False,
                seconds=train_seconds / len(missing) + time.perf_counter() - t0,
                metrics=metrics.model_dump(mode="json"),
            )
        )
    remove_checkpoint(checkpoint_dir)
    return builds


def _sae_training_config(spec: SAESpec, config: BuiltinAtlasConfig) -> SAETrainingConfig:
    return SAETrainingConfig(
        architecture=spec.architecture,
        d_sae=spec.d_sae,
        k=spec.k,
        l1=spec.l1,
        tokens=config.sae_tokens,
        batch_size=config.sae_batch_size,
        seed=config.seed,
        shuffle_buffer_tokens=config.sae_shuffle_buffer_tokens,
    )


def _build_baseline(
    model: Any,
    layout: AtlasLayout,
    config: BuiltinAtlasConfig,
    kind: str,
    heldout: PackedContexts,
    metadata: DictionaryMetadata,
) -> DictionaryBuild:
    from saescope.dictionaries.baselines import fit_baseline

    t0 = time.perf_counter()
    n_contexts = int(np.ceil(config.baseline_fit_tokens / (config.lm.n_ctx - 1)))
    fit = _contexts("train", config.lm, model.tokenizer, n_contexts, config.seed + 1)
    rows = torch.cat(list(iter_activation_batches(model, fit.tokens, config.hook_name)))[: config.baseline_fit_tokens]
    dictionary = fit_baseline(kind, rows, seed=config.seed, metadata=metadata)  # type: ignore[arg-type]
    metrics = evaluate_dictionary(model, dictionary, heldout.tokens, config.hook_name)
    _write_dictionary_folder(
        layout.dictionary_dir(kind), dictionary.cpu(), metrics, {"baseline": kind, "fit_rows": int(rows.shape[0])}
    )
    return DictionaryBuild(
        id=kind, kind=dictionary.kind, architecture=dictionary.architecture, d_sae=dictionary.d_sae,
        folder=str(layout.dictionary_dir(kind)), reused=False, seconds=time.perf_counter() - t0,
        metrics=metrics.model_dump(mode="json"),
    )


def _reused_build(layout: AtlasLayout, name: str) -> DictionaryBuild:
    folder = layout.dictionary_dir(name)
    dictionary = load_dictionary(folder)
    return DictionaryBuild(
        id=name, kind=dictionary.kind, architecture=dictionary.architecture, d_sae=dictionary.d_sae,
        folder=str(folder), reused=True, seconds=0.0,
        metrics=load_metrics(folder).model_dump(mode="json"),
    )


def build_builtin_atlas(
    atlas: str | Path, config: BuiltinAtlasConfig | None = None, device: str = "auto"
) -> AtlasBuildReport:
    """Build (or reuse) the built-in atlas in `atlas`: model, SAEs, baselines, evaluation, feature records."""
    from saescope.store.publish import precompute_and_publish

    config = config or BuiltinAtlasConfig()
    layout = AtlasLayout(root=Path(atlas))
    layout.root.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    seconds: dict[str, float] = {}
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    lm_config = config.lm.model_copy(update={"seed": config.seed})
    lm_report = build_builtin_lm(lm_config, layout.model_dir, device=torch_device, work_dir=layout.work_dir / "lm")
    model = load_lm(layout.model_dir, device=torch_device)
    seconds["model"] = time.perf_counter() - t0

    metadata = DictionaryMetadata(
        model_name=BUILTIN_MODEL_ID,
        hook_name=config.hook_name,
        context_size=config.lm.n_ctx,
        prepend_bos=True,
        dataset_path=CORPUS_NAME,
    )
    t0 = time.perf_counter()
    names = [spec.name for spec in config.saes]
    missing = [spec for spec in config.saes if not _folder_is_complete(layout.dictionary_dir(spec.name))]
    missing_baselines = [k for k in config.baselines if not _folder_is_complete(layout.dictionary_dir(k))]
    # Held-out contexts are needed only to evaluate what gets built now.
    heldout = (
        _contexts("heldout", config.lm, model.tokenizer, config.eval_contexts, config.seed)
        if missing or missing_baselines
        else None
    )
    trained = (
        {b.id: b for b in _train_missing_saes(model, layout, config, missing, heldout, metadata)}
        if missing and heldout is not None
        else {}
    )
    builds = [trained.get(n) or _reused_build(layout, n) for n in names]
    seconds["saes"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for kind in config.baselines:
        if heldout is not None and kind in missing_baselines:
            builds.append(_build_baseline(model, layout, config, kind, heldout, metadata))
        else:
            builds.append(_reused_build(layout, kind))
    seconds["baselines"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    store_url = layout.store_url()
    reused_store = store_is_current(store_url, layout.root, [b.id for b in builds])
    if not reused_store:
        entries = _dictionary_entries(layout, builds, config, lm_report)  # loads every dictionary's weights
        contexts = _contexts("train", config.lm, model.tokenizer, config.precompute_contexts, config.seed + 2)
        precompute_and_publish(
            store_url=store_url,
            atlas_root=layout.root,
            model=model,
            model_info=_model_info(lm_report),
            entries=entries,
            contexts=contexts,
            config=config.precompute.model_copy(update={"device": str(torch_device)}),
            work_dir=layout.work_dir / "precompute",
        )
    elif config.precompute.feature_pages:
        from saescope.store.pages import ensure_feature_pages

        ensure_feature_pages(store_url, progress=True)  # after an interrupted publish, or an older store
    seconds["precompute"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start

    report = AtlasBuildReport(
        atlas=str(layout.root), lm=lm_report, dictionaries=builds, precompute_reused=reused_store, seconds=seconds
    )
    (layout.root / "build_report.json").write_text(report.model_dump_json(indent=2))
    return report


def _model_info(lm_report: LMBuildReport) -> Any:
    from saescope.store.publish import ModelInfo

    return ModelInfo(
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


def _dictionary_entries(
    layout: AtlasLayout, builds: list[DictionaryBuild], config: BuiltinAtlasConfig, lm_report: LMBuildReport
) -> list[Any]:
    from saescope.store.publish import DictionaryEntry, display_prefix

    entries = []
    for build in builds:
        folder = Path(build.folder)
        dictionary = load_dictionary(folder)
        training = json.loads((folder / TRAINING_FILE).read_text()) if (folder / TRAINING_FILE).is_file() else {}
        entries.append(
            DictionaryEntry(
                id=build.id,
                dictionary=dictionary,
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
            )
        )
    return entries


def store_is_current(store_url: str, atlas_root: Path, dictionary_ids: list[str]) -> bool:
    """True when every dictionary id is ready in the store and its weights file is unchanged."""
    from saescope.store.publish import stale_dictionaries
    from saescope.store.reader import StoreReader

    if store_url.startswith("sqlite") and not AtlasLayout(root=atlas_root).sqlite_path.is_file():
        return False
    try:
        reader = StoreReader.from_url(store_url)
        try:
            ready = {d["id"] for d in reader.list_dictionaries()}
        finally:
            reader.close()
    except SQLAlchemyError:  # an unreadable or schema-less store is simply not current: rebuild it
        return False
    if not set(dictionary_ids) <= ready:
        return False
    return not any(s.id in dictionary_ids for s in stale_dictionaries(store_url, atlas_root))


# --------------------------------------------------------------------------- model-based CLI forms


def _load_model_for_cli(location: str, device: str) -> Any:
    """The model at `location` on the chosen device (load_lm raises NotFoundError with a clear message)."""
    return load_lm(location, device=resolve_device(device))


def _corpus_contexts(model: Any, split: str, n_contexts: int, seed: int) -> PackedContexts:
    """Contexts of the offline stdlib corpus, tokenised with `model`'s tokenizer at its context size."""
    if getattr(model, "tokenizer", None) is None:
        raise ConfigError("the model has no tokenizer attached; saescope needs one to read the corpus")
    n_ctx = min(int(model.cfg.n_ctx), 128)
    docs = stdlib_documents(split)
    return pack_documents(docs, model.tokenizer, n_ctx, max_contexts=n_contexts, seed=seed)


def cache_activations_to_file(
    model_location: str, hook_name: str, n_tokens: int, out: Path, device: str = "auto", seed: int = 0
) -> Path:
    """Write `n_tokens` activation rows of `model_location` at `hook_name` to a matrix file for train-sae."""
    from saescope.activations.cache import save_activation_matrix

    if n_tokens < 1:
        raise ConfigError("--tokens must be positive")
    if Path(out).suffix not in (".safetensors", ".npy"):
        raise ConfigError(f"--out {out}: use a .safetensors or .npy file name")
    model = _load_model_for_cli(model_location, device)
    n_ctx = min(int(model.cfg.n_ctx), 128)
    contexts = _corpus_contexts(model, "train", int(np.ceil(n_tokens / (n_ctx - 1))), seed)
    rows = torch.cat([b.cpu() for b in iter_activation_batches(model, contexts.tokens, hook_name)])[:n_tokens]
    return save_activation_matrix(rows, Path(out))


def train_sae_on_model(
    model_location: str,
    hook_name: str,
    config: SAETrainingConfig,
    out: Path,
    device: str = "auto",
    checkpoint_every: int | None = 1_000_000,
    resume: bool = True,
) -> TrainingResult:
    """Train one SAE on activations streamed from `model_location` at `hook_name`; write an SAELens folder.

    Checkpoints every `checkpoint_every` tokens to `out/checkpoint/`, as `train-sae --activations`
    does; with `resume=True` a rerun continues an interrupted run exactly, without re-running the
    model over the contexts it already trained on."""
    model = _load_model_for_cli(model_location, device)
    n_ctx = min(int(model.cfg.n_ctx), 128)
    contexts = _corpus_contexts(model, "train", int(np.ceil(config.tokens / (n_ctx - 1))) + 1, config.seed)
    heldout = _corpus_contexts(model, "heldout", 128, config.seed)
    metadata = DictionaryMetadata(
        model_name=str(model_location), hook_name=hook_name, context_size=n_ctx, dataset_path=CORPUS_NAME
    )
    chunks = _activation_chunks(model, _shuffled_rows(contexts.tokens, config.seed), hook_name, config)
    checkpoint_dir = Path(out) / CHECKPOINT_DIR
    result = train_saes_from_chunks(
        [config], chunks, metadata, progress=True, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, resume=resume, keep_checkpoint=True,
    )[0]
    metrics = evaluate_dictionary(model, result.dictionary, heldout.tokens, hook_name)
    _write_dictionary_folder(  # replaces `out` as a whole, the checkpoint folder included
        Path(out), result.dictionary.cpu(), metrics,
        {"config": config.model_dump(), "history": result.history, "normalization_scale": result.normalization_scale,
         "resumed_from_tokens": result.resumed_from_tokens},
    )
    remove_checkpoint(checkpoint_dir)
    return result


def evaluate_sae_folder(model_location: str, folder: Path, n_contexts: int = 256, device: str = "auto") -> DictionaryMetrics:
    """Evaluate a dictionary folder on held-out stdlib contexts and write metrics.json beside it."""
    if n_contexts < 1:
        raise ConfigError("--contexts must be positive")
    dictionary = load_dictionary(Path(folder))
    model = _load_model_for_cli(model_location, device)
    heldout = _corpus_contexts(model, "heldout", n_contexts, 0)
    metrics = evaluate_dictionary(model, dictionary, heldout.tokens)
    save_metrics(metrics, Path(folder))
    return metrics


def _location_in_atlas(location: str, atlas_root: Path) -> str:
    """A model/tokenizer location as stored: relative to the atlas root when inside it, else as given."""
    path = Path(location)
    if path.exists():
        try:
            return str(path.resolve().relative_to(atlas_root.resolve()))
        except ValueError:
            return str(path.resolve())
    return location


def _model_id(model_location: str, layout: AtlasLayout) -> str:
    """The store id of a model: the built-in id for the atlas's own model folder, else its name."""
    path = Path(model_location)
    if path.exists() and path.resolve() == layout.model_dir.resolve():
        return BUILTIN_MODEL_ID
    return path.name if path.exists() else model_location


def precompute_folders(
    atlas: Path,
    model_location: str,
    sae_folders: list[Path],
    store_url: str | None = None,
    n_contexts: int = 2048,
    device: str = "auto",
    config: PrecomputeConfig | None = None,
) -> str:
    """Precompute and publish the feature records of SAELens folders for one model into an atlas store."""
    from saescope.lm.checkpoint import is_checkpoint_folder
    from saescope.store.publish import DictionaryEntry, ModelInfo, display_prefix, precompute_and_publish

    if n_contexts < 1:
        raise ConfigError("--contexts must be positive")
    layout = AtlasLayout(root=Path(atlas))
    layout.root.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    model = _load_model_for_cli(model_location, device)
    location = _location_in_atlas(model_location, layout.root)
    source = "builtin" if is_checkpoint_folder(model_location) else ("local" if Path(model_location).exists() else "pretrained")
    tokenizer_location = str(Path(location) / "tokenizer") if source == "builtin" else location
    entries = []
    for folder in sae_folders:
        folder = Path(folder)
        dictionary = load_dictionary(folder)
        if dictionary.metadata.hook_name == "":
            raise ConfigError(f"{folder}/cfg.json names no hook point (metadata.hook_name)")
        metrics = load_metrics(folder).model_dump(mode="json") if (folder / METRICS_FILE).is_file() else {}
        entries.append(
            DictionaryEntry(
                id=folder.name,
                dictionary=dictionary,
                weights_path=_location_in_atlas(str(folder), layout.root),
                metrics=metrics,
                display_prefix=display_prefix(dictionary.metadata.hook_name),
                provenance={"model": str(model_location), "corpus": CORPUS_NAME, "saescope_version": __version__},
            )
        )
    contexts = _corpus_contexts(model, "train", n_contexts, 2)
    report = precompute_and_publish(
        store_url=layout.store_url(store_url),
        model=model,
        model_info=ModelInfo(id=_model_id(model_location, layout), source=source,
                             location=location, tokenizer=tokenizer_location),
        entries=entries,
        contexts=contexts,
        config=(config or PrecomputeConfig()).model_copy(update={"device": str(torch_device)}),
        work_dir=layout.work_dir / "precompute",
        atlas_root=layout.root,
    )
    return (
        f"published {', '.join(report.dictionary_ids)}: {report.n_features} features, {report.n_examples} "
        f"examples over {report.n_tokens} tokens in {report.timings.get('total', 0):.1f} s"
    )
