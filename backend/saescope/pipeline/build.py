"""The offline job (`saescope build`, and `saescope demo` as its preset): model -> corpus -> activations
at every hook point -> dictionaries (trained and imported) -> baselines -> post-processing ->
evaluation -> precompute -> publish.

Owns `build_atlas`, which runs those steps in order for a `BuildConfig`, and `AtlasBuildReport`.
Every step reuses what an earlier run left (a finished model checkpoint, activation cache, dictionary
folder or store entry), so a second run costs seconds; an interrupted model training, activation
cache, SAE training or precompute resumes from its last checkpoint under ATLAS/work; every artefact
is written to a temporary name and renamed when complete, so an interrupted run never leaves a
half-written model, dictionary or store entry behind.

With the activation cache (several hooks or a real model), the model runs ONCE over the training
text, stopping after the deepest hook's block, and SAE training, baseline fitting and precompute
all read the cached activations; the held-out evaluation runs the model on its own contexts.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import Tensor

from saescope import __version__
from saescope.activations.chunked import model_fingerprint
from saescope.activations.context_cache import ContextCache
from saescope.activations.hooks import hook_suffix
from saescope.atlas_layout import AtlasLayout
from saescope.atomic_files import write_text
from saescope.corpus.documents import Document, describe_documents, load_documents
from saescope.corpus.packing import PackedContexts, pack_documents
from saescope.devices import resolve_device
from saescope.dictionaries.base import Dictionary, DictionaryMetadata
from saescope.dictionaries.baselines import fit_baseline
from saescope.dictionaries.evaluation import evaluate_dictionaries
from saescope.dictionaries.postprocess import load_prune_result
from saescope.dictionaries.saelens_format import load_dictionary
from saescope.dictionaries.training import SAETrainingConfig, TrainingResult
from saescope.dictionaries.training_checkpoint import checkpoint_configs, remove_checkpoint
from saescope.dictionaries.training_file import MassiveRowFilter, without_massive_rows
from saescope.dictionaries.distributed import train_distributed
from saescope.dictionaries.training_stream import train_saes_from_chunks
from saescope.errors import ConfigError
from saescope.lm.builtin import LMBuildReport, build_builtin_lm
from saescope.lm.loading import load_lm
from saescope.pipeline.build_config import (
    NO_ENCODER_BIAS,
    NO_ENCODER_BIAS_SUFFIX,
    RELU_SUFFIX,
    BuildConfig,
    HookPlan,
    SAESpec,
)
from saescope.pipeline.contexts import MAX_CONTEXT_TOKENS, builtin_contexts, contexts_for_tokens, training_rows
from saescope.pipeline.dictionaries import (
    EVAL_FORWARDS_PER_CONTEXT,
    FINETUNED_SUFFIX,
    DictionaryBuild,
    activation_chunks,
    activation_rows,
    check_hooks_before_loading,
    evaluation_progress,
    finetune_folder,
    folder_is_complete,
    new_build,
    prune_folder,
    pruned_indices,
    read_training_notes,
    reused_build,
    write_dictionary_folder,
)
from saescope.pipeline.folders import BUILTIN_MODEL_ID, location_in_atlas
from saescope.pipeline.publish import (
    DictionaryEntry,
    ModelRecord,
    display_prefix,
    precompute_and_publish,
    store_is_current,
)
from saescope.pipeline.validation import check_fits_model
from saescope.interpret.config import ExplainConfig
from saescope.pipeline.explain import explain_atlas
from saescope.store.database import create_database
from saescope.store.interpretability import explained_dictionaries
from saescope.ranks import current_ranks
from saescope.store.pages import ensure_feature_pages

BUILD_REPORT_FILE = "build_report.json"
NEURON_BASIS_SUFFIXES = ("mlp.hook_post", "mlp.hook_pre", "attn.hook_z")


class AtlasBuildReport(BaseModel):
    """What a build produced, what it reused and how long each stage took."""

    atlas: str
    model: dict[str, Any] = Field(description="Model id, location and held-out loss (nats/token).")
    lm: LMBuildReport | None = Field(None, description="The built-in model's training report.")
    corpus: dict[str, Any] = Field(default_factory=dict, description="Corpus source and sizes.")
    dictionaries: list[DictionaryBuild]
    precompute_reused: bool
    seconds: dict[str, float] = Field(description="Wall-clock seconds per stage and in total.")

    def summary(self) -> str:
        loss = self.model.get("heldout_loss")
        lines = [
            f"atlas {self.atlas}: built in {self.seconds.get('total', 0):.0f} s "
            + " ".join(f"({k} {v:.0f} s)" for k, v in self.seconds.items() if k != "total"),
            f"model {self.model.get('id')}: held-out loss "
            + (f"{loss:.3f} nats/token" if loss is not None else "n/a")
            + (f" (unigram baseline {self.lm.unigram_heldout_loss:.3f})" if self.lm is not None else "")
            + (" [reused]" if self.lm is not None and self.lm.reused else ""),
            f"{'dictionary':<28}{'L0':>8}{'expl.var':>10}{'CE rec.':>9}{'dead':>7}",
        ]
        nan = float("nan")
        for d in self.dictionaries:
            m = d.metrics
            ev, ce = m.get("explained_variance"), m.get("ce_recovered")
            lines.append(
                f"{d.id:<28}{m.get('l0', nan):>8.1f}{(ev if ev is not None else nan):>10.3f}"
                f"{(ce if ce is not None else nan):>9.3f}{m.get('dead', 0):>7}" + ("  [reused]" if d.reused else "")
            )
        if self.precompute_reused:
            lines.append("feature records: reused (store is up to date)")
        return "\n".join(lines)


# --------------------------------------------------------------------------- model and corpus


def _set_dtype(model: Any, dtype: str) -> Any:
    if dtype == "float32":
        return model
    torch_dtype = getattr(torch, dtype)
    model = model.to(torch_dtype)
    model.cfg.dtype = torch_dtype
    return model


class _Corpus:
    """Packed contexts of the config's corpus for the model's tokenizer, documents read once per split."""

    def __init__(self, config: BuildConfig, model: Any) -> None:
        self.config, self.model = config, model
        self._documents: dict[str, list[Document]] = {}
        c = config.corpus
        if config.model.is_builtin:
            self.n_ctx = config.model.builtin.n_ctx
        else:
            self.n_ctx = min(int(model.cfg.n_ctx), c.context_length or MAX_CONTEXT_TOKENS)
            if c.context_length is not None and c.context_length > int(model.cfg.n_ctx):
                raise ConfigError(f"corpus.context_length {c.context_length} exceeds the model's n_ctx {model.cfg.n_ctx}")

    @property
    def uses_builtin_selection(self) -> bool:
        return self.config.model.is_builtin and self.config.corpus.source == "stdlib"

    def documents(self, split: str) -> list[Document]:
        c = self.config.corpus
        if split not in self._documents:
            self._documents[split] = load_documents(
                c.source, split=split, heldout_fraction=c.heldout_fraction,  # type: ignore[arg-type]
                text_field=c.text_field, max_documents=c.max_documents, hf_split=c.hf_split, hf_config=c.hf_config)
        return self._documents[split]

    def contexts(self, split: str, n: int, seed: int) -> PackedContexts:
        if self.uses_builtin_selection:
            return builtin_contexts(split, self.config.model.builtin, self.model.tokenizer, n, seed)
        return pack_documents(self.documents(split), self.model.tokenizer, self.n_ctx,
                              one_window_per_document=self.config.corpus.one_window_per_document,
                              max_contexts=n, seed=seed)

    def describe(self) -> dict[str, Any]:
        c = self.config.corpus
        out: dict[str, Any] = {"source": c.source, "context_length": self.n_ctx}
        if not self.uses_builtin_selection:
            out.update({f"{s}_{k}": v for s in ("train", "heldout") for k, v in describe_documents(self.documents(s)).items()})
        return out


# --------------------------------------------------------------------------- shared state


class _Build:
    """What every step of one build shares: model, layout, corpus, activation cache, held-out and fit data."""

    def __init__(self, config: BuildConfig, layout: AtlasLayout, model: Any, model_record: ModelRecord) -> None:
        self.config, self.layout, self.model, self.model_record = config, layout, model, model_record
        self.corpus = _Corpus(config, model)
        self.n_ctx = self.corpus.n_ctx
        self.cache: ContextCache | None = None
        self._train: PackedContexts | None = None
        self._heldout: np.ndarray | None = None
        self._fit_rows: dict[str, Tensor] = {}
        self.trained: dict[str, Dictionary] = {}  # SAE id -> dictionary (for sae-nobias)
        self.flags_changed = False  # pruning flags written now: the store must be republished

    def metadata(self, hook: str) -> DictionaryMetadata:
        return DictionaryMetadata(model_name=self.model_record.id, hook_name=hook, context_size=self.n_ctx,
                                  prepend_bos=True, dataset_path=self.config.corpus.source)

    def dictionary_id(self, hook: str, name: str) -> str:
        return self.config.hook_id_prefix(hook) + name

    @property
    def n_train_contexts(self) -> int:
        c = self.config
        text_tokens = c.activation_tokens or c.sae_tokens
        return max(contexts_for_tokens(min(text_tokens, c.sae_tokens), self.n_ctx) + 1, c.precompute_contexts)

    @property
    def train(self) -> PackedContexts:
        """The training contexts (also the precompute's, when the activation cache is used)."""
        if self._train is None:
            self._train = self.corpus.contexts("train", self.n_train_contexts, self.config.seed)
        return self._train

    @property
    def heldout(self) -> np.ndarray:
        if self._heldout is None:
            c = self.config
            self._heldout = self.corpus.contexts("heldout", c.eval_contexts, c.seed).tokens
        return self._heldout

    def sae_source(self, hook: str, trainer: SAETrainingConfig) -> Any:
        """The training stream of `hook`: the activation cache's rows, or the model run over shuffled contexts."""
        chunk_tokens = max(trainer.shuffle_buffer_tokens, trainer.batch_size)
        if self.cache is not None:
            source: Any = self.cache.chunks(hook, chunk_tokens, trainer.seed, rows=trainer.tokens)
        else:
            rows = training_rows(self.train.tokens, self.n_ctx, self.config.sae_tokens, self.config.seed)
            source = activation_chunks(self.model, rows, hook, trainer)
        return without_massive_rows(source, self.config.max_norm_ratio)

    def fit_rows(self, hook: str) -> Tensor:
        """Activation rows `[baseline_fit_tokens, d_in]` of `hook` for baselines, pruning and fine-tuning."""
        if hook not in self._fit_rows:
            n = self.config.baseline_fit_tokens
            if self.cache is not None:
                source = self.cache.chunks(hook, n, self.config.seed + 1, rows=n)
                self._fit_rows[hook] = torch.cat([source.chunk(i) for i in range(source.n_chunks)])[:n]
            else:
                c = self.config
                fit = self.corpus.contexts("train", contexts_for_tokens(n, self.n_ctx), c.seed + 1)
                self._fit_rows[hook] = activation_rows(self.model, fit.tokens, hook, n)
        return self._fit_rows[hook]


# --------------------------------------------------------------------------- steps


def _evaluate(b: _Build, dictionaries: list[Dictionary], hook: str, names: list[str]) -> list[Any]:
    """Held-out metrics of `dictionaries`, all at `hook`, evaluated together (the clean and ablated
    forwards run once for all of them), with a progress bar."""
    if not dictionaries:
        return []
    passes = (EVAL_FORWARDS_PER_CONTEXT - 1 + len(dictionaries)) / EVAL_FORWARDS_PER_CONTEXT
    with evaluation_progress(b.model, int(np.ceil(len(b.heldout) * passes)), desc=f"evaluate {', '.join(names)}"):
        return evaluate_dictionaries(b.model, dictionaries, b.heldout, hook)


def _trainer_config(spec: SAESpec, config: BuildConfig) -> SAETrainingConfig:
    optional = {"dead_tokens": spec.dead_tokens, "lr": spec.lr}
    return SAETrainingConfig(
        architecture=spec.architecture, d_sae=spec.d_sae, k=spec.k, l1=spec.l1, tokens=config.sae_tokens,
        batch_size=config.sae_batch_size, seed=config.seed, shuffle_buffer_tokens=config.sae_shuffle_buffer_tokens,
        architecture_options=spec.architecture_options, device=config.device,
        **{k: v for k, v in optional.items() if v is not None},
    )


def _checkpoint_dir(b: _Build, hook: str) -> Path:
    root = b.layout.sae_checkpoint_dir
    return root if len(b.config.hooks) <= 1 else root / hook.replace(".", "_")


def train_sweep_on_rank(cache_folder: str, hook: str, configs: list[dict[str, Any]], max_norm_ratio: float | None,
                       metadata: dict[str, Any], checkpoint_dir: str, checkpoint_every: int) -> None:
    """One rank's part of a hook's SAE sweep over the activation cache in `cache_folder` (a module-level
    function, so `train_distributed` can start it on every rank); rank 0 keeps the final checkpoint."""
    trainers = [SAETrainingConfig(**c) for c in configs]
    chunk_tokens = max(trainers[0].shuffle_buffer_tokens, trainers[0].batch_size)
    source = ContextCache.open(cache_folder).chunks(hook, chunk_tokens, trainers[0].seed, rows=trainers[0].tokens)
    train_saes_from_chunks(trainers, without_massive_rows(source, max_norm_ratio), DictionaryMetadata(**metadata),
                           progress=current_ranks().is_main, checkpoint_dir=checkpoint_dir,
                           checkpoint_every=checkpoint_every, keep_checkpoint=True)


def _train_on_ranks(b: _Build, hook: str, trainers: list[SAETrainingConfig], checkpoint_dir: Path) -> None:
    """Train the sweep data-parallel on `config.nproc` ranks; the caller then reads the result from its
    final checkpoint (a resumed run of a finished sweep returns at once)."""
    if b.cache is None:
        raise ConfigError("nproc > 1 trains from the activation cache: set activation_cache to 'auto' or 'always'")
    train_distributed(train_sweep_on_rank, str(b.cache.folder), hook, [t.model_dump() for t in trainers],
                      b.config.max_norm_ratio, b.metadata(hook).model_dump(), str(checkpoint_dir),
                      b.config.sae_checkpoint_every_tokens, nproc=b.config.nproc)


def _train_missing_saes(b: _Build, hook: str, missing: list[SAESpec]) -> list[DictionaryBuild]:
    """Train the missing SAEs of `hook` together in one pass over its activations, then evaluate them.

    The sweep checkpoints under ATLAS/work/saes and a rerun after an interruption resumes it; the
    checkpoint is removed once every dictionary folder is written."""
    config = b.config
    started = time.perf_counter()
    trainer_configs = [_trainer_config(spec, config) for spec in missing]
    checkpoint_dir = _checkpoint_dir(b, hook)
    saved = checkpoint_configs(checkpoint_dir)  # an interrupted run of a larger sweep: continue it
    if saved is not None and all(c in saved for c in trainer_configs):
        trainer_configs = saved
    if config.nproc > 1:
        _train_on_ranks(b, hook, trainer_configs, checkpoint_dir)  # leaves the finished sweep's checkpoint
    source = b.sae_source(hook, trainer_configs[0])
    results: list[TrainingResult] = train_saes_from_chunks(
        trainer_configs, source, b.metadata(hook), progress=True, checkpoint_dir=checkpoint_dir,
        checkpoint_every=config.sae_checkpoint_every_tokens, keep_checkpoint=True,
    )
    train_seconds = time.perf_counter() - started
    # rows left out are counted as chunks are read: not here when the ranks read them
    massive = source.excluded if isinstance(source, MassiveRowFilter) and config.nproc == 1 else None
    chosen = [next(r for r in results if r.config == _trainer_config(spec, config)) for spec in missing]
    names = [b.dictionary_id(hook, spec.name) for spec in missing]
    t0 = time.perf_counter()
    all_metrics = _evaluate(b, [r.dictionary for r in chosen], hook, names)
    eval_seconds = (time.perf_counter() - t0) / len(missing)
    builds = []
    for name, result, metrics in zip(names, chosen, all_metrics):
        folder = b.layout.dictionary_dir(name)
        write_dictionary_folder(folder, result.dictionary.cpu(), metrics, {
            "config": result.config.model_dump(),
            "history": result.history,
            "normalization_scale": result.normalization_scale,
            "training_contexts": b.n_train_contexts,
            "seconds_training_shared": train_seconds,
            "resumed_from_tokens": result.resumed_from_tokens,
            "massive_rows_excluded": massive,
            "max_norm_ratio": config.max_norm_ratio,
        })
        b.trained[name] = result.dictionary.cpu()
        builds.append(new_build(folder, name, result.dictionary, metrics, train_seconds / len(missing) + eval_seconds))
    remove_checkpoint(checkpoint_dir)
    return builds


def _sae_step(b: _Build, plan: HookPlan) -> list[DictionaryBuild]:
    """The SAEs of one hook point, trained where their folder is missing or incomplete."""
    specs = b.config.saes_at(plan)
    folder = {s.name: b.layout.dictionary_dir(b.dictionary_id(plan.name, s.name)) for s in specs}
    missing = [s for s in specs if not folder_is_complete(folder[s.name])]
    trained = {bd.id: bd for bd in _train_missing_saes(b, plan.name, missing)} if missing else {}
    builds = []
    for s in specs:
        name = b.dictionary_id(plan.name, s.name)
        builds.append(trained.get(name) or reused_build(folder[s.name], name))
    return builds


def _fit_one_baseline(b: _Build, hook: str, kind: str, sae: DictionaryBuild | None) -> tuple[Dictionary, dict[str, Any]]:
    """Baseline `kind` at `hook` (for sae-nobias: the given SAE without its encoder bias) and its notes."""
    if sae is not None:
        source = b.trained.get(sae.id) or load_dictionary(Path(sae.folder))
        return fit_baseline("sae", sae=source), {"baseline": NO_ENCODER_BIAS, "from": sae.id}
    rows = b.fit_rows(hook)
    dictionary = fit_baseline(kind.removesuffix(RELU_SUFFIX), rows, relu=kind.endswith(RELU_SUFFIX),  # type: ignore[arg-type]
                              seed=b.config.seed, metadata=b.metadata(hook))
    return dictionary, {"baseline": kind, "fit_rows": int(rows.shape[0])}


def _baseline_step(b: _Build, plan: HookPlan, saes: list[DictionaryBuild]) -> list[DictionaryBuild]:
    """The baselines of one hook point, fitted (and evaluated together) where their folder is missing or
    incomplete."""
    wanted: list[tuple[str, str, DictionaryBuild | None]] = []
    for kind in b.config.baselines_at(plan):
        if kind == NO_ENCODER_BIAS:
            wanted += [(s.id + NO_ENCODER_BIAS_SUFFIX, kind, s) for s in saes]
        else:
            wanted.append((b.dictionary_id(plan.name, kind), kind, None))
    reused: dict[str, DictionaryBuild] = {}
    fitted: list[tuple[str, Dictionary, dict[str, Any]]] = []
    t0 = time.perf_counter()
    for name, kind, sae in wanted:
        folder = b.layout.dictionary_dir(name)
        if folder_is_complete(folder) and (sae is None or sae.reused):
            reused[name] = reused_build(folder, name)
        else:
            fitted.append((name, *_fit_one_baseline(b, plan.name, kind, sae)))
    all_metrics = _evaluate(b, [d for _, d, _ in fitted], plan.name, [n for n, _, _ in fitted])
    seconds = (time.perf_counter() - t0) / max(1, len(fitted))
    built = {}
    for (name, dictionary, notes), metrics in zip(fitted, all_metrics):
        folder = b.layout.dictionary_dir(name)
        write_dictionary_folder(folder, dictionary.cpu(), metrics, notes)
        built[name] = new_build(folder, name, dictionary, metrics, seconds)
    return [reused.get(name) or built[name] for name, _, _ in wanted]


def _postprocess_step(b: _Build, hook: str, saes: list[DictionaryBuild]) -> list[DictionaryBuild]:
    """Pruning flags (`pruning.json`) and fine-tuned copies of one hook's SAEs, as configured; returns the
    new dictionaries (fine-tuned copies)."""
    options = b.config.postprocess
    extra = []
    for build in saes:
        folder = Path(build.folder)
        if options.prune and (not build.reused or load_prune_result(folder) is None):
            prune_folder(folder, b.fit_rows(hook), options.prune_thresholds)
            b.flags_changed = True
        if options.finetune:
            name = build.id + FINETUNED_SUFFIX
            out = b.layout.dictionary_dir(name)
            if folder_is_complete(out) and build.reused:
                extra.append(reused_build(out, name))
            else:
                extra.append(finetune_folder(b.model, folder, out, b.fit_rows(hook), b.heldout,
                                             options.finetune_config))
    return extra


def _import_step(b: _Build) -> list[DictionaryBuild]:
    """The config's SAE folders, copied into the atlas (so it is self-contained) and evaluated."""
    builds = []
    for source in b.config.sae_folders:
        source = Path(source)
        dictionary = load_dictionary(source)
        if not dictionary.metadata.hook_name:
            raise ConfigError(f"{source}/cfg.json names no hook point (metadata.hook_name)")
        check_fits_model(b.model, dictionary, str(source))
        name = source.name
        folder = b.layout.dictionary_dir(name)
        if folder_is_complete(folder):
            builds.append(reused_build(folder, name))
            continue
        t0 = time.perf_counter()
        (metrics,) = _evaluate(b, [dictionary], dictionary.metadata.hook_name, [name])
        write_dictionary_folder(folder, dictionary.cpu(), metrics, {"imported_from": str(source.resolve())})
        for extra in ("pruning.json",):
            if (source / extra).is_file():
                shutil.copy2(source / extra, folder / extra)
        builds.append(new_build(folder, name, dictionary, metrics, time.perf_counter() - t0))
    return builds


def _cache_step(b: _Build) -> None:
    """Run the model once over the training contexts and keep every hook's activations (when configured)."""
    c = b.config
    hooks = [h.name for h in c.hooks] + [load_dictionary(Path(f)).metadata.hook_name for f in c.sae_folders]
    use = c.activation_cache == "always" or (c.activation_cache == "auto" and (
        len(set(hooks)) > 1 or not c.model.is_builtin or c.nproc > 1))
    if not use or not hooks:
        return
    b.cache = ContextCache.build(b.model, b.train.tokens, list(dict.fromkeys(hooks)), b.layout.work_dir / "activations",
                                 model_id=b.model_record.id + ":" + model_fingerprint(b.model)[:16],
                                 dtype=c.activation_cache_dtype, progress=True)


def _dictionary_entries(b: _Build, builds: list[DictionaryBuild]) -> list[DictionaryEntry]:
    entries = []
    for build in builds:
        folder = Path(build.folder)
        training = read_training_notes(folder)
        dictionary = load_dictionary(folder)
        hook = dictionary.metadata.hook_name
        entries.append(DictionaryEntry(
            id=build.id,
            dictionary=dictionary,
            weights_path=str(folder.relative_to(b.layout.root)),
            display_prefix=display_prefix(hook),
            metrics=build.metrics,
            provenance={
                "model": b.model_record.id,
                "model_fingerprint": b.model_record.metrics.get("fingerprint"),
                "hook_name": hook,
                "corpus": b.config.corpus.source,
                "training_tokens": training.get("config", {}).get("tokens"),
                "massive_rows_excluded": training.get("massive_rows_excluded"),
                "max_norm_ratio": training.get("max_norm_ratio"),
                "seed": b.config.seed,
                "saescope_version": __version__,
                "training": training.get("config") or {k: v for k, v in training.items() if k != "history"},
            },
            pruned=pruned_indices(folder),
        ))
    return entries


def _publish_step(b: _Build, builds: list[DictionaryBuild], store_url: str) -> bool:
    """Precompute and publish every dictionary unless the store is current; returns True when reused."""
    config = b.config
    if not b.flags_changed and store_is_current(store_url, b.layout.root, [d.id for d in builds]):
        if config.precompute.feature_pages:
            ensure_feature_pages(store_url, progress=True)  # after an interrupted publish, or an older store
        return True
    entries = _dictionary_entries(b, builds)
    source = None
    if b.cache is not None and all(e.dictionary.metadata.hook_head_index is None
                                   and e.dictionary.metadata.hook_name in b.cache.manifest.hooks for e in entries):
        contexts = b.train.select(np.arange(min(config.precompute_contexts, len(b.train))))
        source = b.cache.batch
    else:
        contexts = b.corpus.contexts("train", config.precompute_contexts, config.seed + 2)
    precompute_and_publish(
        store_url=store_url, atlas_root=b.layout.root, model=b.model, model_record=b.model_record,
        entries=entries, contexts=contexts,
        config=config.precompute.model_copy(update={"device": str(resolve_device(config.device))}),
        work_dir=b.layout.work_dir / "precompute", activation_source=source,
    )
    return False


# --------------------------------------------------------------------------- the job


def _explain_step(b: _Build, builds: list[DictionaryBuild], store_url: str, republished: bool) -> float | None:
    """Explain and score every dictionary's features (LLM-free by default) when the store was
    republished or lacks explanations; returns the seconds it took, None when skipped."""
    step = b.config.explain
    ids = [d.id for d in builds]
    if step.explainer == "none" or not ids:
        return None
    db = create_database(store_url)
    try:
        missing = set(ids) - explained_dictionaries(db)
    finally:
        db.dispose()
    if not republished and not missing:
        return None
    t0 = time.perf_counter()
    config = ExplainConfig(n_contexts=step.n_contexts, seed=b.config.seed,
                           device=str(resolve_device(b.config.device)))
    if b.cache is not None and all(d.dictionary.metadata.hook_head_index is None for d in _dictionary_entries(b, builds)):
        contexts, source = b.train.select(np.arange(min(step.n_contexts, len(b.train)))), b.cache.batch
    else:
        contexts, source = b.corpus.contexts("train", step.n_contexts, b.config.seed + 3), None
    explain_atlas(b.layout.root, store_url, ids if republished else sorted(missing), step.explainer,
                  list(step.scorers), config, model=b.model, contexts=contexts, activation_source=source)
    return time.perf_counter() - t0


def _check_config_against_hooks(config: BuildConfig) -> None:
    for plan in config.hooks:
        kinds = config.baselines_at(plan)
        if any(k.removesuffix(RELU_SUFFIX) == "neurons" for k in kinds) and not hook_suffix(plan.name).endswith(
                NEURON_BASIS_SUFFIXES):
            raise ConfigError(f"baseline 'neurons' needs a hook with a neuron basis ({', '.join(NEURON_BASIS_SUFFIXES)}); "
                              f"{plan.name} has none: drop it there or use pca/random/ica")
        if NO_ENCODER_BIAS in kinds and not config.saes_at(plan):
            raise ConfigError(f"baseline 'sae-nobias' at {plan.name} needs an SAE trained there")


def _model(config: BuildConfig, layout: AtlasLayout, device: torch.device) -> tuple[Any, ModelRecord, LMBuildReport | None]:
    if config.model.is_builtin:
        lm_config = config.model.builtin.model_copy(update={"seed": config.seed})
        report = build_builtin_lm(lm_config, layout.model_dir, device=device, work_dir=layout.work_dir / "lm")
        record = ModelRecord(id=BUILTIN_MODEL_ID, source="builtin", location="model", tokenizer="model/tokenizer",
                             metrics={"heldout_loss": report.heldout_loss,
                                      "unigram_heldout_loss": report.unigram_heldout_loss,
                                      "train_tokens": report.train_tokens, "corpus": config.corpus.source,
                                      "fingerprint": report.config_fingerprint})
        return _set_dtype(load_lm(layout.model_dir, device=device), config.model.dtype), record, report
    location = config.model.location
    check_hooks_before_loading(location, tuple(h.name for h in config.hooks))
    model = _set_dtype(load_lm(location, device=device), config.model.dtype)
    stored = location_in_atlas(location, layout.root)
    path = Path(location)
    record = ModelRecord(id=path.stem if path.exists() else location,
                         source="local" if path.exists() else "pretrained", location=stored, tokenizer=stored,
                         metrics={"corpus": config.corpus.source, "dtype": config.model.dtype})
    return model, record, None


def build_atlas(atlas: str | Path, config: BuildConfig | None = None, store_url: str | None = None) -> AtlasBuildReport:
    """Build (or reuse) the atlas of `config` in `atlas` (store: `store_url` or ATLAS/atlas.db)."""
    config = config or BuildConfig()
    _check_config_against_hooks(config)
    layout = AtlasLayout(root=Path(atlas))
    layout.root.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    seconds: dict[str, float] = {}
    t_start = t0 = time.perf_counter()

    model, record, lm_report = _model(config, layout, device)
    b = _Build(config, layout, model, record)
    seconds["model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _cache_step(b)
    if b.cache is not None:
        seconds["activations"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    per_hook_saes = {plan.name: _sae_step(b, plan) for plan in config.hooks}
    builds = [d for saes in per_hook_saes.values() for d in saes]
    seconds["saes"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    builds += _import_step(b)
    for plan in config.hooks:
        builds += _baseline_step(b, plan, per_hook_saes[plan.name])
    seconds["baselines"] = time.perf_counter() - t0
    if config.postprocess.prune or config.postprocess.finetune:
        t0 = time.perf_counter()
        for hook, saes in per_hook_saes.items():
            builds += _postprocess_step(b, hook, saes)
        seconds["postprocess"] = time.perf_counter() - t0

    heldout_loss = record.metrics.get("heldout_loss")
    if heldout_loss is None and builds:
        heldout_loss = builds[0].metrics.get("ce_clean")
        b.model_record = record = record.model_copy(update={"metrics": {**record.metrics, "heldout_loss": heldout_loss}})

    t0 = time.perf_counter()
    reused_store = _publish_step(b, builds, layout.store_url(store_url))
    seconds["precompute"] = time.perf_counter() - t0
    explain_seconds = _explain_step(b, builds, layout.store_url(store_url), republished=not reused_store)
    if explain_seconds is not None:
        seconds["explain"] = explain_seconds
    seconds["total"] = time.perf_counter() - t_start

    report = AtlasBuildReport(
        atlas=str(layout.root), lm=lm_report, dictionaries=builds, precompute_reused=reused_store, seconds=seconds,
        model={"id": record.id, "location": record.location, "heldout_loss": heldout_loss, "dtype": config.model.dtype},
        corpus=b.corpus.describe(),
    )
    write_text(layout.root / BUILD_REPORT_FILE, report.model_dump_json(indent=2))
    return report
