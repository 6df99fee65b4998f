"""The built-in default model: a small transformer trained offline on the Python standard library.

Owns `BuiltinLMConfig`, `build_builtin_lm` (train a byte-level BPE tokenizer, then a transformer_lens
`HookedTransformer` on the stdlib train split; evaluate held-out loss against a unigram baseline;
write a checkpoint folder) and `LMBuildReport`. Deterministic given the seed (same seed, same machine
-> identical weights), resumable (periodic state in a work folder; a rerun continues where an
interrupted one stopped), and reusable (a rerun finds the finished checkpoint and returns at once).
The checkpoint is written atomically (see `saescope.lm.checkpoint`). Reads the corpus stage only.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from saescope.atomic_files import atomic_file, atomic_folder
from saescope.corpus.documents import Document, stable_unit_hash
from saescope.corpus.packing import PackedContexts, pack_documents, pack_token_sequences, tokenize_documents
from saescope.corpus.stdlib import stdlib_documents
from saescope.devices import resolve_device
from saescope.errors import ConfigError, InputError
from saescope.lm import checkpoint as ckpt
from saescope.lm.tokenizer import load_tokenizer, train_bpe_tokenizer

BUILTIN_MODEL_NAME = "saescope-builtin"
STATE_FILE = "state.pt"
FINGERPRINT_FILE = "fingerprint.json"
LOSS_HISTORY_EVERY = 10  # record the training loss every this many steps


class BuiltinLMConfig(BaseModel):
    """Everything that determines the built-in model (docs/benchmarks.md gives its build time)."""

    model_config = ConfigDict(extra="forbid")

    # architecture (transformer_lens HookedTransformerConfig fields)
    n_layers: int = Field(1, ge=1, description="Number of transformer blocks.")
    d_model: int = Field(128, ge=1, description="Residual stream width.")
    d_mlp: int = Field(512, ge=1, description="MLP hidden width (neurons per layer).")
    n_heads: int = Field(4, ge=1, description="Attention heads per layer.")
    d_head: int = Field(32, ge=1, description="Width of each attention head.")
    n_ctx: int = Field(128, ge=2, description="Context length in tokens, BOS included.")
    d_vocab: int = Field(4096, ge=258, description="Target BPE vocabulary size (256 bytes + <|endoftext|> + merges).")
    act_fn: Literal["gelu", "gelu_new", "relu", "silu", "solu_ln"] = Field("gelu", description="MLP activation.")
    normalization_type: Literal["LN", "LNPre", "RMS", "RMSPre"] | None = Field(
        "LN", description="Layer normalisation type (None for no normalisation)."
    )
    seed: int = Field(0, description="Seed of weight init, document order and batch order.")
    # training
    train_tokens: int = Field(
        4_194_304, ge=1,
        description="Tokens seen in training (steps = ceil(train_tokens / (batch_size * n_ctx))).",
    )
    batch_size: int = Field(32, ge=1, description="Contexts per optimiser step.")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate of AdamW.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate as a share of `lr` (cosine decay).")
    warmup_steps: int = Field(50, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    adam_betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas.")
    grad_clip: float | None = Field(1.0, description="Clip the gradient norm to this value (None: no clipping).")
    # corpus and tokenizer
    heldout_fraction: float = Field(0.05, ge=0, lt=1, description="Share of stdlib files held out (stable hash of the path).")
    corpus_max_files: int | None = Field(None, ge=1, description="Use only the first N files of each split (tiny models, tests).")
    corpus_include_tests: bool = Field(True, description="Include the stdlib's test/ folders.")
    tokenizer_train_chars: int = Field(8_000_000, ge=1, description="Characters of training text used to train the BPE.")
    tokenizer_min_frequency: int = Field(2, ge=1, description="Minimum pair count for a BPE merge.")
    eval_contexts: int = Field(512, ge=1, description="Held-out contexts used for the held-out loss.")
    checkpoint_every_steps: int = Field(100, ge=1, description="Save resumable state every N steps.")

    @model_validator(mode="after")
    def _check(self) -> "BuiltinLMConfig":
        if self.act_fn == "solu_ln" and self.normalization_type is None:
            raise ValueError("act_fn 'solu_ln' needs a normalization_type")
        return self

    def fingerprint(self) -> str:
        """Hash of every field that changes the trained weights (not checkpoint frequency)."""
        data = self.model_dump(mode="json", exclude={"checkpoint_every_steps"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def tiny(cls, **overrides: Any) -> "BuiltinLMConfig":
        """A tiny config (1 layer, d_model 32, d_mlp 128, n_ctx 32, vocab 512) that trains in seconds.

        Used by tests and smoke runs; `overrides` replace any field.
        """
        values: dict[str, Any] = dict(
            n_layers=1, d_model=32, d_mlp=128, n_heads=2, d_head=16, n_ctx=32, d_vocab=512, seed=0,
            train_tokens=120 * 16 * 32, batch_size=16, lr=1e-2, warmup_steps=5,
            corpus_max_files=12, tokenizer_train_chars=400_000, eval_contexts=64,
            checkpoint_every_steps=20,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def n_steps(self) -> int:
        return math.ceil(self.train_tokens / (self.batch_size * self.n_ctx))


class LMBuildReport(BaseModel):
    """What a build produced and how well the model does."""

    out_dir: str = Field(description="The checkpoint folder.")
    reused: bool = Field(False, description="True when an existing finished checkpoint was returned as is.")
    resumed_from_step: int = Field(0, description="Step a resumed run continued from (0: fresh).")
    steps: int = Field(description="Optimiser steps.")
    train_tokens: int = Field(description="Tokens seen in training.")
    n_train_documents: int
    n_heldout_documents: int
    n_train_contexts: int
    n_heldout_contexts: int
    d_vocab: int = Field(description="Actual vocabulary size of the trained tokenizer.")
    heldout_loss: float = Field(description="Mean next-token cross-entropy (nats) on held-out contexts.")
    heldout_loss_initial: float = Field(description="The same for the untrained model.")
    unigram_heldout_loss: float = Field(
        description="Cross-entropy on held-out tokens of the (add-one smoothed) train unigram distribution."
    )
    unigram_train_entropy: float = Field(description="Entropy of the train unigram distribution (nats).")
    train_loss_first: float = Field(description="Training loss of the first batch.")
    train_loss_last: float = Field(description="Mean training loss over the last 10 steps.")
    loss_history: list[tuple[int, float]] = Field(default_factory=list, description="(step, training loss) pairs.")
    seconds_tokenizer: float = 0.0
    seconds_data: float = Field(0.0, description="Reading, tokenising and packing the corpus.")
    seconds_training: float = 0.0
    seconds_total: float = 0.0
    torch_threads: int = 0
    python_version: str = ""
    config_fingerprint: str = ""

    def summary(self) -> str:
        """One human-readable line per headline figure."""
        state = "reused" if self.reused else (f"resumed at step {self.resumed_from_step}" if self.resumed_from_step else "trained")
        return (
            f"built-in LM {state}: {self.out_dir}\n"
            f"  {self.steps} steps, {self.train_tokens:,} tokens, vocab {self.d_vocab}, "
            f"{self.seconds_total:.0f} s total ({self.seconds_training:.0f} s training)\n"
            f"  held-out loss {self.heldout_loss:.3f} nats (untrained {self.heldout_loss_initial:.3f}, "
            f"unigram baseline {self.unigram_heldout_loss:.3f})"
        )


class BuildInterrupted(RuntimeError):
    """Training stopped early (by `stop_after_steps`); the resumable state is saved in the work folder."""


def hooked_transformer_kwargs(config: BuiltinLMConfig, d_vocab: int) -> dict[str, Any]:
    """JSON-able HookedTransformerConfig keyword arguments for `config` (stored in config.json)."""
    return {
        "model_name": BUILTIN_MODEL_NAME,
        "n_layers": config.n_layers,
        "d_model": config.d_model,
        "d_mlp": config.d_mlp,
        "n_heads": config.n_heads,
        "d_head": config.d_head,
        "n_ctx": config.n_ctx,
        "d_vocab": d_vocab,
        "act_fn": config.act_fn,
        "normalization_type": config.normalization_type,
        "positional_embedding_type": "standard",
        "default_prepend_bos": True,
    }


def lr_at(step: int, config: BuiltinLMConfig) -> float:
    """Learning rate at `step`: linear warm-up, then cosine decay to min_lr_ratio * lr."""
    total = config.n_steps
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, total - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    ratio = config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * ratio


@torch.no_grad()
def mean_next_token_loss(model: Any, tokens: torch.Tensor | np.ndarray, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) of `model` over all positions of tokens [n, n_ctx]."""
    tokens_t = torch.as_tensor(tokens, dtype=torch.long)
    device = model.cfg.device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for start in range(0, tokens_t.shape[0], batch_size):
        batch = tokens_t[start : start + batch_size].to(device)
        per_token = model(batch, return_type="loss", loss_per_token=True)  # [b, n_ctx - 1]
        total += float(per_token.sum())
        count += per_token.numel()
    model.train(was_training)
    return total / max(count, 1)


def unigram_losses(train_tokens: np.ndarray, heldout_tokens: np.ndarray, d_vocab: int) -> tuple[float, float]:
    """(held-out cross-entropy, train entropy) of the add-one smoothed unigram over targets (BOS excluded)."""
    counts = np.bincount(train_tokens[:, 1:].ravel(), minlength=d_vocab).astype(np.float64) + 1.0
    probs = counts / counts.sum()
    log_probs = np.log(probs)
    entropy = float(-(probs * log_probs).sum())
    heldout = float(-log_probs[heldout_tokens[:, 1:].ravel()].mean())
    return heldout, entropy


def _shuffled(documents: list[Document], seed: int) -> list[Document]:
    """Documents in a seeded order that does not depend on Python's RNG or hash randomisation."""
    return sorted(documents, key=lambda d: (stable_unit_hash(f"{seed}:{d.id}"), d.id))


def _gather_train_contexts(
    documents: list[Document], tokenizer: Any, n_ctx: int, needed: int
) -> PackedContexts:
    """Tokenise documents in order until `needed` contexts exist (or the documents run out)."""
    parts: list[PackedContexts] = []
    have = 0
    chunk = 32
    for start in range(0, len(documents), chunk):
        docs = documents[start : start + chunk]
        ids = tokenize_documents(docs, tokenizer)
        part = pack_token_sequences(
            zip((d.id for d in docs), ids), n_ctx, bos_id=int(tokenizer.bos_token_id)
        )
        parts.append(part)
        have += len(part)
        if have >= needed:
            break
    if have == 0:
        raise InputError(
            f"the training documents are too short for a single context of n_ctx={n_ctx}; "
            "lower n_ctx or use more files",
            field="n_ctx",
        )
    return PackedContexts(
        tokens=np.concatenate([p.tokens for p in parts]),
        doc_ids=[i for p in parts for i in p.doc_ids],
        offsets=np.concatenate([p.offsets for p in parts]),
    )


class _BatchOrder:
    """Batch `step` -> context indices, epoch after epoch, each epoch a seeded permutation."""

    def __init__(self, n_contexts: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n_contexts, batch_size, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def indices(self, step: int) -> np.ndarray:
        flat = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        return np.array([self._perm(int(i // self.n))[int(i % self.n)] for i in flat], dtype=np.int64)


def _work_dir_for(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.partial"


def _existing_report(out_dir: Path, config: BuiltinLMConfig) -> LMBuildReport | None:
    """The report of a finished checkpoint built from the same config, or None when there is none."""
    if not out_dir.exists():
        return None
    if not ckpt.is_checkpoint_folder(out_dir):
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
            return None
        raise ConfigError(
            f"{out_dir} exists but is not a finished model checkpoint; remove it or choose another folder"
        )
    stored = ckpt.read_checkpoint_config(out_dir)
    builtin = stored.get("builtin_config") or {}
    try:
        same = BuiltinLMConfig(**builtin).fingerprint() == config.fingerprint()
    except Exception:
        same = False
    if not same:
        raise ConfigError(
            f"{out_dir} holds a model built with a different configuration; remove the folder to "
            "rebuild, or choose another output folder"
        )
    report = LMBuildReport(**stored["report"])
    return report.model_copy(update={"reused": True, "out_dir": str(out_dir)})


def build_builtin_lm(
    config: BuiltinLMConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    work_dir: str | Path | None = None,
    stop_after_steps: int | None = None,
    num_threads: int | None = None,
) -> LMBuildReport:
    """Train the built-in model and write its checkpoint folder `out_dir`; return the build report.

    Reuses a finished checkpoint of the same config at once; resumes from the state in `work_dir`
    (default: a hidden sibling `.NAME.partial` of out_dir) after an interruption. `stop_after_steps`
    saves the state after that many steps and raises BuildInterrupted (to exercise resuming).
    `num_threads` sets torch's CPU threads for the build (restored afterwards): fewer threads can
    be faster for a small model on a busy machine.
    """
    if num_threads is None:
        return _build(config, out_dir, progress, device, work_dir, stop_after_steps)
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        return _build(config, out_dir, progress, device, work_dir, stop_after_steps)
    finally:
        torch.set_num_threads(previous)


def _prepare_work_dir(config: BuiltinLMConfig, out: Path, work_dir: str | Path | None) -> Path:
    """The folder of resumable state for `config`: kept when it belongs to this config, emptied otherwise."""
    work = Path(work_dir) if work_dir is not None else _work_dir_for(out)
    fingerprint = config.fingerprint()
    fp_path = work / FINGERPRINT_FILE
    if work.exists() and (not fp_path.exists() or json.loads(fp_path.read_text()).get("fingerprint") != fingerprint):
        shutil.rmtree(work)  # state of another config: start over
    work.mkdir(parents=True, exist_ok=True)
    fp_path.write_text(json.dumps({"fingerprint": fingerprint, "config": config.model_dump(mode="json")}))
    return work


def _corpus(config: BuiltinLMConfig) -> tuple[list[Document], list[Document]]:
    """(training documents in the seeded order, held-out documents) of the standard library."""
    def split(name: str) -> list[Document]:
        return stdlib_documents(
            name, config.heldout_fraction, config.corpus_max_files, include_tests=config.corpus_include_tests
        )

    train_docs, heldout_docs = split("train"), split("heldout")
    if not train_docs or not heldout_docs:
        raise ConfigError("the standard library yielded no train or no held-out files; raise heldout_fraction/corpus_max_files")
    return _shuffled(train_docs, config.seed), heldout_docs


def _tokenizer(config: BuiltinLMConfig, documents: Sequence[Document], work: Path) -> Any:
    """The BPE tokenizer, trained once on the first `tokenizer_train_chars` of `documents` (reused on resume)."""
    tok_dir = work / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        def texts() -> Iterator[str]:
            budget = config.tokenizer_train_chars
            for d in documents:
                if budget <= 0:
                    break
                yield d.text[:budget]
                budget -= len(d.text)

        with atomic_folder(tok_dir) as tmp_tok:
            train_bpe_tokenizer(texts(), config.d_vocab, tmp_tok, config.tokenizer_min_frequency)
    return load_tokenizer(tok_dir)


class _TrainingRun:
    """The model under training, its optimiser and loss record; saved to and resumed from `state_path`."""

    def __init__(self, config: BuiltinLMConfig, model: Any, state_path: Path, heldout_tokens: np.ndarray) -> None:
        self.config, self.model, self.state_path = config, model, state_path
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, betas=config.adam_betas, weight_decay=config.weight_decay
        )
        self.start_step = 0
        self.history: list[tuple[int, float]] = []
        self.recent: list[float] = []
        self.train_loss_first = float("nan")
        if state_path.exists():
            self._load()
        else:
            self.heldout_loss_initial = mean_next_token_loss(model, heldout_tokens)
            model.train()

    def _load(self) -> None:
        state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_step = int(state["step"])
        self.history = [(int(s), float(v)) for s, v in state["history"]]
        self.recent = [float(v) for v in state["recent"]]
        self.train_loss_first = float(state["train_loss_first"])
        self.heldout_loss_initial = float(state["heldout_loss_initial"])

    def save(self, step: int) -> None:
        state = {
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "recent": self.recent,
            "train_loss_first": self.train_loss_first,
            "heldout_loss_initial": self.heldout_loss_initial,
        }
        with atomic_file(self.state_path) as tmp:
            torch.save(state, tmp)

    def step(self, step: int, batch: Tensor) -> float:
        """One AdamW step on `batch [batch, n_ctx]`; returns the loss and records it."""
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        loss = self.model(batch, return_type="loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        value = float(loss.detach())
        if step == 0:
            self.train_loss_first = value
        self.recent = (self.recent + [value])[-10:]
        if step % LOSS_HISTORY_EVERY == 0 or step == config.n_steps - 1:
            self.history.append((step, value))
        return value

    def train(self, tokens: Tensor, device: torch.device, progress: bool, stop_after_steps: int | None) -> None:
        """Steps `start_step` .. n_steps - 1 with periodic state saves; BuildInterrupted after
        `stop_after_steps` (state saved). On Ctrl-C the last periodic state stays for the next run."""
        from tqdm.auto import tqdm

        config, n_steps = self.config, self.config.n_steps
        batches = _BatchOrder(tokens.shape[0], config.batch_size, config.seed)
        bar = tqdm(total=n_steps, initial=self.start_step, desc="training built-in LM", disable=not progress,
                   mininterval=1.0, unit="step")
        try:
            for step in range(self.start_step, n_steps):
                value = self.step(step, tokens[torch.from_numpy(batches.indices(step))].to(device))
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
                done = step + 1
                if done < n_steps and done % config.checkpoint_every_steps == 0:
                    self.save(done)
                if stop_after_steps is not None and done >= stop_after_steps and done < n_steps:
                    self.save(done)
                    raise BuildInterrupted(
                        f"stopped after {done} of {n_steps} steps; state saved in {self.state_path.parent}"
                    )
        finally:
            bar.close()


def _build(
    config: BuiltinLMConfig,
    out_dir: str | Path,
    progress: bool,
    device: str | torch.device,
    work_dir: str | Path | None,
    stop_after_steps: int | None,
) -> LMBuildReport:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    t_start = time.perf_counter()
    device = resolve_device(str(device))
    out = Path(out_dir)
    existing = _existing_report(out, config)
    if existing is not None:
        return existing
    work = _prepare_work_dir(config, out, work_dir)
    train_docs, heldout_docs = _corpus(config)

    t0 = time.perf_counter()
    tokenizer = _tokenizer(config, train_docs, work)
    seconds_tokenizer = time.perf_counter() - t0
    d_vocab = len(tokenizer)

    t_data = time.perf_counter()
    train_ctx = _gather_train_contexts(train_docs, tokenizer, config.n_ctx, config.n_steps * config.batch_size)
    heldout_ctx = pack_documents(
        heldout_docs, tokenizer, config.n_ctx, max_contexts=config.eval_contexts, seed=config.seed
    )
    seconds_data = time.perf_counter() - t_data

    ht_kwargs = hooked_transformer_kwargs(config, d_vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = HookedTransformer(HookedTransformerConfig(**ht_kwargs, device=str(device)), tokenizer=tokenizer)
    model.train()
    run = _TrainingRun(config, model, work / STATE_FILE, heldout_ctx.tokens)
    t1 = time.perf_counter()
    run.train(torch.from_numpy(train_ctx.tokens), device, progress, stop_after_steps)
    seconds_training = time.perf_counter() - t1

    model.eval()
    unigram_heldout, unigram_entropy = unigram_losses(train_ctx.tokens, heldout_ctx.tokens, d_vocab)
    report = LMBuildReport(
        out_dir=str(out),
        resumed_from_step=run.start_step,
        steps=config.n_steps,
        train_tokens=config.n_steps * config.batch_size * config.n_ctx,
        n_train_documents=len(train_docs),
        n_heldout_documents=len(heldout_docs),
        n_train_contexts=len(train_ctx),
        n_heldout_contexts=len(heldout_ctx),
        d_vocab=d_vocab,
        heldout_loss=mean_next_token_loss(model, heldout_ctx.tokens),
        heldout_loss_initial=run.heldout_loss_initial,
        unigram_heldout_loss=unigram_heldout,
        unigram_train_entropy=unigram_entropy,
        train_loss_first=run.train_loss_first,
        train_loss_last=float(np.mean(run.recent)) if run.recent else float("nan"),
        loss_history=run.history,
        seconds_tokenizer=seconds_tokenizer,
        seconds_training=seconds_training,
        seconds_data=seconds_data,
        seconds_total=time.perf_counter() - t_start,
        torch_threads=torch.get_num_threads(),
        python_version=sys.version.split()[0],
        config_fingerprint=config.fingerprint(),
    )
    ckpt.write_checkpoint(
        out,
        model.state_dict(),
        ht_kwargs,
        tokenizer,
        builtin_config=config.model_dump(mode="json"),
        report=report.model_dump(mode="json"),
    )
    shutil.rmtree(work, ignore_errors=True)
    return report
