"""Training sparse autoencoders on a stream of activation batches.

Owns `SAETrainingConfig` (every training option, validated), `SAETrainer` (one SAE under
training), `train_sae` (one SAE) and `train_saes` (a sweep: several SAEs fed the same batches in
one pass), the optimiser and schedules (Adam, LR warm-up and linear decay, sparsity-coefficient
warm-up), input normalisation to norm sqrt(d_in) folded into the weights at the end, `b_dec`
initialisation, decoder-norm handling, dead-latent bookkeeping and resampling, and the training
history. Everything that differs between architectures comes from the architecture's
`TrainingSpec` (`dictionaries/architectures/`): this module names no architecture. A step is the
spec's autograd `loss`, or its registered `accelerated_step` when the config allows it. The
checkpoint file lives in `training_checkpoint.py`, and resumable training (checkpoints, exact
resume) from a matrix file in `training_file.py` and from a seekable activation stream in
`training_stream.py`; `train_saes` here takes a plain iterable and has no checkpoints. This module
knows nothing about language models or where activations come from: it takes an iterable of
`[batch, d_in]` tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor

from saescope.activations.batches import ChunkedBatches, IterableChunks
from saescope.dictionaries.architectures import TRAINING_NAMES, training_spec
from saescope.dictionaries.base import MAX_D_SAE, Dictionary, DictionaryMetadata
from saescope.dictionaries.training_spec import DEFAULT_K, StepContext, StepStats, TrainingSpec
from saescope.devices import resolve_device
from saescope.errors import ConfigError, InputError


class SAETrainingConfig(BaseModel):
    """Everything that defines one SAE training run (except the data)."""

    model_config = ConfigDict(extra="forbid")

    architecture: str = Field(
        "relu", description=f"A registered architecture: {', '.join(TRAINING_NAMES)} (dictionaries/architectures/)."
    )
    architecture_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the architecture itself (its TrainingSpec.Options), e.g. aux_k for topk.",
    )
    d_sae: int = Field(4096, ge=1, le=MAX_D_SAE, description="Number of latents (features).")
    k: int | None = Field(
        None, ge=1, description=f"Active latents per token for the k-sparse architectures (default {DEFAULT_K})."
    )
    l1: float | None = Field(
        None,
        ge=0,
        description="Sparsity coefficient of architectures with a penalty: L1 (default 0.25 * sqrt(d_in)) or "
        "L0 (default d_in / 128); ignored by the k-sparse ones.",
    )
    lr: float | None = Field(
        None,
        gt=0,
        description="Peak Adam learning rate. Default: 1e-3 * sqrt(4096 / d_sae) clipped to [1e-4, 4e-3] "
        "(Gao et al.'s 1/sqrt(d_sae) scaling, set higher for runs of a few million tokens).",
    )
    tokens: int = Field(2_000_000, ge=1, description="Training tokens (activation vectors) to consume.")
    batch_size: int = Field(1024, ge=1, description="Tokens per optimiser step.")
    seed: int = Field(0, description="Seed for initialisation, shuffling and resampling.")

    adam_beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1.")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2.")
    adam_eps: float = Field(6.25e-10, gt=0, description="Adam epsilon (Gao et al.).")
    lr_warmup_fraction: float = Field(0.01, ge=0, le=1, description="Fraction of steps of linear LR warm-up.")
    lr_decay_fraction: float = Field(
        0.2, ge=0, le=1, description="Final fraction of steps over which the LR decays linearly to 0."
    )
    sparsity_warmup_fraction: float = Field(
        0.05, ge=0, le=1, description="Fraction of steps over which the L1/L0 coefficient ramps up from 0."
    )

    normalize_activations: bool = Field(
        True, description="Scale inputs to mean norm sqrt(d_in) while training; folded into the weights at save."
    )
    b_dec_init: Literal["zeros", "mean", "geometric_median"] = Field(
        "geometric_median", description="Initial decoder bias: zeros, data mean, or geometric median."
    )
    decoder_bias: bool = Field(True, description="Learn a decoder bias b_dec (else it stays at its init).")
    apply_b_dec_to_input: bool = Field(True, description="Encode x - b_dec (SAELens default) rather than x.")
    tied_init: bool = Field(True, description="Initialise the encoder as the decoder's transpose.")
    decoder_init_norm: float = Field(
        1.0, gt=0, description="Initial norm of each decoder row under 'penalty' decoder norms (Anthropic use "
        "0.1 for long runs)."
    )
    decoder_norm: Literal["penalty", "unit"] | None = Field(
        None,
        description="penalty: free decoder norms, the penalty weighted by them; unit: rows kept at norm 1 with "
        "the gradient's radial part removed. Default: the architecture's.",
    )
    dead_tokens: int = Field(
        200_000, ge=1, description="A latent that has not fired for this many tokens counts as dead."
    )
    resample_dead_every_tokens: int | None = Field(
        None, ge=1, description="Re-initialise dead latents on badly reconstructed inputs every N tokens (Bricken)."
    )

    shuffle_buffer_tokens: int = Field(
        65_536, ge=0, description="Rows shuffled together when batches come from an iterable or a matrix file "
        "(0: no shuffling of an iterable)."
    )
    init_tokens: int = Field(
        65_536, ge=1, description="Tokens used to estimate the normalisation scale and the b_dec init."
    )
    density_window_tokens: int = Field(
        500_000, ge=1, description="Firing densities (log10_density) are measured over the last N tokens."
    )
    log_every_steps: int | None = Field(None, ge=1, description="History interval (default: ~200 points).")
    accelerated: bool = Field(
        True, description="Use the architecture's accelerated step where it registers one (else plain autograd)."
    )
    sparse_kernels: Literal["auto", "always", "never"] = Field(
        "auto", description="Let the accelerated step take its sparse path: when latents are sparse enough, always, never."
    )
    device: str = Field("cpu", description="Torch device for training: cpu, cuda, cuda:N or auto.")

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        training_spec(value)  # ConfigError naming the registered ones
        return value

    @model_validator(mode="after")
    def _check(self) -> "SAETrainingConfig":
        self.spec.check(self.d_sae, self.resolved_k)
        self.spec.options(self.architecture_options)
        if self.lr_warmup_fraction + self.lr_decay_fraction > 1:
            raise ConfigError("lr_warmup_fraction + lr_decay_fraction must be <= 1")
        return self

    # resolved values ---------------------------------------------------------------------------

    @property
    def spec(self) -> TrainingSpec:
        return training_spec(self.architecture)

    @property
    def options(self) -> BaseModel:
        """The architecture's validated options."""
        return self.spec.options(self.architecture_options)

    @property
    def resolved_k(self) -> int:
        return self.k if self.k is not None else DEFAULT_K

    def sparsity_for(self, d_in: int) -> float:
        """The sparsity coefficient: `l1`, or the architecture's default for this d_in."""
        return self.l1 if self.l1 is not None else self.spec.default_sparsity(d_in)

    @property
    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return float(min(4e-3, max(1e-4, 1e-3 * math.sqrt(4096 / self.d_sae))))

    @property
    def resolved_decoder_norm(self) -> str:
        if self.decoder_norm is not None:
            return self.decoder_norm
        return self.spec.default_decoder_norm

    @property
    def total_steps(self) -> int:
        return max(1, math.ceil(self.tokens / self.batch_size))

    def hyperparameters(self, d_in: int) -> dict[str, Any]:
        """What to record next to the dictionary (cfg.json, store)."""
        out = self.spec.hyperparameters(self.sparsity_for(d_in), self.resolved_k)
        out.update(lr=self.resolved_lr, training_tokens=self.tokens)
        return out


class TrainingResult(BaseModel):
    """A trained dictionary (inference form, unit-norm decoder rows, raw activation units)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    dictionary: Any = Field(description="The trained Dictionary (the architecture's inference class).")
    history: list[dict[str, float]] = Field(description="Per-interval averages: tokens, loss, mse, fvu, l0, ...")
    log10_density: Any = Field(description="Tensor [d_sae]: log10 firing frequency over the last window.")
    config: SAETrainingConfig
    normalization_scale: float = Field(1.0, description="Factor that mapped raw inputs to norm sqrt(d_in).")
    resumed_from_tokens: int = Field(0, description="Tokens already trained in the checkpoint this run resumed (0: fresh).")

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}

    def summary(self) -> str:
        """One line: tokens, L0, FVU, dead fraction of the last history interval."""
        last = self.final
        if not last:
            return "no training steps were run"
        return (
            f"{self.config.architecture} d_sae={self.config.d_sae}: {int(last['tokens']):,} tokens, "
            f"L0 {last['l0']:.1f}, FVU {last['fvu']:.3f} (explained variance {1 - last['fvu']:.3f}), "
            f"dead {last['dead_fraction']:.1%}"
        )


# ------------------------------------------------------------------------------------------------
# Initialisation helpers
# ------------------------------------------------------------------------------------------------


def geometric_median(points: Tensor, iterations: int = 100, tol: float = 1e-6) -> Tensor:
    """Weiszfeld's algorithm on `points [n, d]` (float64 internally)."""
    pts = points.double()
    median = pts.mean(0)
    for _ in range(iterations):
        dist = (pts - median).norm(dim=1).clamp_min(1e-8)
        w = 1.0 / dist
        new = (w[:, None] * pts).sum(0) / w.sum()
        if (new - median).norm() < tol * (1 + median.norm()):
            median = new
            break
        median = new
    return median.float()


def normalization_scale(sample: Tensor) -> float:
    """Factor c with E||c x|| = sqrt(d_in)."""
    mean_norm = sample.norm(dim=1).mean().item()
    if mean_norm <= 0:
        raise InputError("activations are all zero: nothing to learn", field="batches")
    return math.sqrt(sample.shape[1]) / mean_norm


# ------------------------------------------------------------------------------------------------
# One SAE being trained
# ------------------------------------------------------------------------------------------------


def lr_factor(step: int, total_steps: int, warmup_fraction: float, decay_fraction: float) -> float:
    """LR multiplier at `step` (0-based): linear warm-up, constant, linear decay to 0."""
    warmup = int(round(warmup_fraction * total_steps))
    decay = int(round(decay_fraction * total_steps))
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    decay_start = total_steps - decay
    if decay > 0 and step >= decay_start:
        return max(0.0, (total_steps - step) / decay)
    return 1.0


class SAETrainer:
    """State of one SAE under training: parameters, Adam, counters. `step(x)` does one update."""

    SPARSE_DENSITY = 0.06  # sparse_kernels "auto": the sparse path below this fraction of active latents

    def __init__(self, config: SAETrainingConfig, d_in: int, scale: float, b_dec_init: Tensor | None) -> None:
        self.config = config
        self.spec = config.spec
        self.options = config.options
        self.d_in = d_in
        self.scale = scale
        self.params = self.spec.create_parameters(d_in, config.d_sae, config.decoder_bias)
        self.generator = torch.Generator().manual_seed(config.seed)
        self._init_parameters(b_dec_init)
        self.device = resolve_device(config.device)
        self.params.to(self.device)
        self.optimizer = torch.optim.Adam(
            self.params.trainable(),
            lr=config.resolved_lr,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_eps,
            fused=True,
        )
        self.step_index = 0
        self.tokens_seen = 0
        self.tokens_since_fired = torch.zeros(config.d_sae, dtype=torch.int64)
        self.window_counts = torch.zeros(config.d_sae, dtype=torch.float64)
        self.window_tokens = 0
        self.prev_window_counts = torch.zeros(config.d_sae, dtype=torch.float64)
        self.prev_window_tokens = 0
        self.architecture_state = self.spec.initial_state()
        self._last_density = 1.0
        self.history: list[dict[str, float]] = []
        self._acc: dict[str, float] = {}
        self._acc_steps = 0
        self.log_every = config.log_every_steps or max(1, config.total_steps // 200)
        self.averager: Any = None  # a distributed.RankAverager when training over several ranks

    @torch.no_grad()
    def _init_parameters(self, b_dec_init: Tensor | None) -> None:
        cfg, p, g = self.config, self.params, self.generator
        w = torch.randn(cfg.d_sae, self.d_in, generator=g)
        w /= w.norm(dim=1, keepdim=True)
        if cfg.resolved_decoder_norm == "penalty":
            w *= cfg.decoder_init_norm
        p.W_dec.copy_(w)
        if cfg.tied_init:
            p.W_encT.copy_(w)
        else:
            bound = 1.0 / math.sqrt(self.d_in)
            p.W_encT.uniform_(-bound, bound, generator=g)
        p.b_enc.zero_()
        p.b_dec.copy_(b_dec_init if b_dec_init is not None else torch.zeros(self.d_in))
        self.spec.init_latent_vectors(p, self.options)

    def context(self, sparse: bool = False) -> StepContext:
        """The values a step of the architecture needs beyond parameters and batch."""
        cfg = self.config
        return StepContext(
            sparsity_coefficient=self.sparsity_coefficient(),
            k=cfg.resolved_k,
            dead=(self.tokens_since_fired >= cfg.dead_tokens).to(self.device),
            apply_b_dec_to_input=cfg.apply_b_dec_to_input,
            weight_sparsity_by_decoder_norm=cfg.resolved_decoder_norm == "penalty",
            options=self.options,
            sparse=sparse,
        )

    @torch.no_grad()
    def calibrate_encoder(self, sample: Tensor) -> float:
        """Scale the (tied) encoder so the initial reconstruction of `sample` (normalised units)
        has the least-squares right size; returns the factor. With a tied init, the k-sparse
        architectures (BatchTopK above all, which can give one large token dozens of near-parallel
        latents) otherwise start far overshooting, which costs a short run much of its budget.
        Selection is unchanged (positive scaling, zero encoder biases). The encoder is only ever
        shrunk (a ReLU SAE with small initial decoder rows keeps its init)."""
        p = self.params
        x = sample[:8192].to(self.device)
        f = self.spec.codes(p, x, self.context())
        recon = f @ p.W_dec  # without b_dec: the part the encoder scale controls
        target = x - p.b_dec
        denom = recon.pow(2).sum()
        if denom <= 0:
            return 1.0
        alpha = float((recon * target).sum() / denom)
        if not 0 < alpha < 1:
            return 1.0
        p.W_encT.mul_(alpha)
        return alpha

    # -- one step ---------------------------------------------------------------------------------

    def _use_sparse(self) -> bool:
        mode = self.config.sparse_kernels
        if mode != "auto":
            return mode == "always"
        return self._last_density < self.SPARSE_DENSITY

    def sparsity_coefficient(self) -> float:
        cfg = self.config
        warm = int(round(cfg.sparsity_warmup_fraction * cfg.total_steps))
        factor = min(1.0, (self.step_index + 1) / warm) if warm > 0 else 1.0
        return cfg.sparsity_for(self.d_in) * factor

    def current_lr(self) -> float:
        cfg = self.config
        return cfg.resolved_lr * lr_factor(
            self.step_index, cfg.total_steps, cfg.lr_warmup_fraction, cfg.lr_decay_fraction
        )

    def compute_gradients(self, x: Tensor, ctx: StepContext) -> StepStats:
        """Loss statistics of `x`, with the gradients written into the parameters' `.grad`:
        the accelerated step when there is one and the config allows it, else autograd."""
        accelerated = self.spec.accelerated_step if self.config.accelerated else None
        if accelerated is not None:
            with torch.no_grad():
                return accelerated(self.params, x, ctx)
        for param in self.params.parameters():
            param.grad = None
        with torch.enable_grad():
            stats = self.spec.loss(self.params, x, ctx)
            stats.loss.backward()
        return stats.detached()

    @torch.no_grad()
    def step(self, x: Tensor, x_var_sum: Tensor | None = None) -> StepStats:
        """One optimiser step on normalised activations `x [B, d_in]` (the global batch: over
        several ranks each computes gradients on its share, everything else sees all of `x`)."""
        cfg, p = self.config, self.params
        ctx = self.context(sparse=self._use_sparse())
        # over several ranks: this rank's share of `x`, gradients and statistics averaged over ranks
        stats = self.compute_gradients(x, ctx) if self.averager is None else self.averager.gradients(self, x, ctx)
        self._last_density = float(stats.l0) / cfg.d_sae
        unit = cfg.resolved_decoder_norm == "unit"
        if unit:
            # remove the radial component of the decoder gradient (rows stay on the unit sphere)
            gW = p.W_dec.grad
            gW.addcmul_(p.W_dec, torch.linalg.vecdot(gW, p.W_dec, dim=1).unsqueeze(1), value=-1.0)
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        if unit:
            p.W_dec.div_(p.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))
        self.spec.after_step(p, stats, self.architecture_state, self.step_index, self.options)

        B = x.shape[0]
        stats.counts = stats.counts.cpu()
        fired = stats.counts > 0
        self.tokens_since_fired.add_(B).masked_fill_(fired, 0)
        self._update_density(stats.counts, B)
        self.step_index += 1
        self.tokens_seen += B
        self._record(stats, x, x_var_sum, ctx.sparsity_coefficient, lr)
        if (
            cfg.resample_dead_every_tokens
            and self.tokens_seen // cfg.resample_dead_every_tokens
            != (self.tokens_seen - B) // cfg.resample_dead_every_tokens
            and self.step_index < cfg.total_steps * (1 - cfg.lr_decay_fraction)
        ):
            self.resample_dead(x)
        return stats

    def _update_density(self, counts: Tensor, B: int) -> None:
        window = self.config.density_window_tokens
        self.window_counts.add_(counts.double())
        self.window_tokens += B
        if self.window_tokens >= window:
            self.prev_window_counts = self.window_counts
            self.prev_window_tokens = self.window_tokens
            self.window_counts = torch.zeros_like(self.prev_window_counts)
            self.window_tokens = 0

    def log10_density(self) -> Tensor:
        """[d_sae] log10 firing frequency over the latest window (complete or partial)."""
        if self.window_tokens >= self.config.density_window_tokens // 2 or self.prev_window_tokens == 0:
            counts, tokens = self.window_counts, self.window_tokens
        else:
            counts = self.window_counts + self.prev_window_counts
            tokens = self.window_tokens + self.prev_window_tokens
        freq = counts / max(tokens, 1)
        return torch.log10(freq + 1e-10).float()

    def _record(self, stats: StepStats, x: Tensor, x_var_sum: Tensor | None, coef: float, lr: float) -> None:
        B = x.shape[0]
        if x_var_sum is None:
            flat = x.reshape(-1)  # sum of squares minus B |mean|^2: two fast passes, no [B, d] temporaries
            x_var_sum = torch.dot(flat, flat) - B * x.mean(0).pow(2).sum()
        vals = {
            "loss": stats.loss,
            "mse": stats.mse,
            "fvu": stats.mse * B / x_var_sum.clamp_min(1e-12),
            "sparsity_loss": stats.sparsity,
            "aux_loss": stats.aux,
            "l0": stats.l0,
        }
        for key, v in stats.extra.items():
            vals[key] = v
        for key, v in vals.items():
            self._acc[key] = self._acc.get(key, 0.0) + float(v)
        self._acc_steps += 1
        if self._acc_steps >= self.log_every or self.step_index >= self.config.total_steps:
            row = {key: v / self._acc_steps for key, v in self._acc.items()}
            row.update(
                step=float(self.step_index),
                tokens=float(self.tokens_seen),
                lr=lr,
                sparsity_coefficient=coef,
                dead_fraction=float((self.tokens_since_fired >= self.config.dead_tokens).float().mean()),
            )
            row.update(self.spec.history_extras(self.architecture_state))
            self.history.append(row)
            self._acc, self._acc_steps = {}, 0

    @torch.no_grad()
    def resample_dead(self, x: Tensor) -> int:
        """Bricken et al.: point dead latents at inputs the SAE reconstructs worst; reset their Adam state."""
        p = self.params
        dead = (self.tokens_since_fired >= self.config.dead_tokens).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        ctx = self.context()
        x_in = p.encoder_input(x, self.config.apply_b_dec_to_input)
        err = (p.decode(self.spec.codes(p, x, ctx)) - x).pow(2).sum(1).cpu()  # [B]
        picks = torch.multinomial(err / err.sum(), dead.numel(), replacement=True, generator=self.generator)
        dead = dead.to(self.device)
        dirs = x_in[picks.to(self.device)]
        dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-8)
        alive = torch.ones(self.config.d_sae, dtype=torch.bool, device=self.device)
        alive[dead] = False
        enc_norm = float(p.W_encT[alive].norm(dim=1).mean()) if alive.any() else 1.0
        dec_norm = float(p.W_dec[alive].norm(dim=1).mean()) if alive.any() else 1.0
        p.W_dec[dead] = dirs * (dec_norm if self.config.resolved_decoder_norm == "penalty" else 1.0)
        p.W_encT[dead] = dirs * enc_norm * 0.2
        p.b_enc[dead] = 0.0
        for param in p.per_latent():
            state = self.optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][dead] = 0.0
        self.tokens_since_fired[dead.cpu()] = 0
        return int(dead.numel())

    # -- checkpoints ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit: parameters, Adam, counters, RNG, history."""
        return {
            "config": self.config.model_dump(),
            "d_in": self.d_in,
            "scale": self.scale,
            "params": {k: v.detach().cpu().clone() for k, v in self.params.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "step_index": self.step_index,
            "tokens_seen": self.tokens_seen,
            "tokens_since_fired": self.tokens_since_fired.clone(),
            "window_counts": self.window_counts.clone(),
            "window_tokens": self.window_tokens,
            "prev_window_counts": self.prev_window_counts.clone(),
            "prev_window_tokens": self.prev_window_tokens,
            "architecture_state": dict(self.architecture_state),
            "last_density": self._last_density,
            "history": [dict(r) for r in self.history],
            "acc": dict(self._acc),
            "acc_steps": self._acc_steps,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "SAETrainer":
        config = SAETrainingConfig(**state["config"])
        trainer = cls(config, int(state["d_in"]), float(state["scale"]), None)
        with torch.no_grad():
            trainer.params.load_state_dict(state["params"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.generator.set_state(state["generator"])
        trainer.step_index = int(state["step_index"])
        trainer.tokens_seen = int(state["tokens_seen"])
        trainer.tokens_since_fired = state["tokens_since_fired"].clone()
        trainer.window_counts = state["window_counts"].clone()
        trainer.window_tokens = int(state["window_tokens"])
        trainer.prev_window_counts = state["prev_window_counts"].clone()
        trainer.prev_window_tokens = int(state["prev_window_tokens"])
        trainer.architecture_state = {k: float(v) for k, v in state["architecture_state"].items()}
        trainer._last_density = float(state["last_density"])
        trainer.history = [dict(r) for r in state["history"]]
        trainer._acc = dict(state["acc"])
        trainer._acc_steps = int(state["acc_steps"])
        return trainer

    # -- result -------------------------------------------------------------------------------------

    @torch.no_grad()
    def to_dictionary(self, metadata: DictionaryMetadata | None) -> Dictionary:
        """Inference dictionary in raw activation units with unit-norm decoder rows."""
        cfg = self.config
        dictionary = self.spec.inference_dictionary(
            self.params, cfg.resolved_k, metadata, cfg.apply_b_dec_to_input, self.architecture_state, self.scale
        )
        self.spec.finish(dictionary)
        dictionary.set_hyperparameters(cfg.hyperparameters(self.d_in))  # type: ignore[attr-defined]
        return dictionary


# ------------------------------------------------------------------------------------------------
# Public entry points
# ------------------------------------------------------------------------------------------------


def _check_sweep(configs: Sequence[SAETrainingConfig]) -> None:
    if not configs:
        raise ConfigError("give at least one training config")
    first = configs[0]
    for c in configs[1:]:
        if c.batch_size != first.batch_size or c.tokens != first.tokens:
            raise ConfigError("all configs of a sweep must share batch_size and tokens (they see the same batches)")


def init_statistics(sample: Tensor, config: SAETrainingConfig) -> tuple[float, Tensor | None]:
    """(normalisation scale, b_dec init in normalised units) from a sample of raw activations."""
    scale = normalization_scale(sample) if config.normalize_activations else 1.0
    xs = sample * scale
    if config.b_dec_init == "mean":
        b = xs.mean(0)
    elif config.b_dec_init == "geometric_median":
        b = geometric_median(xs)
    else:
        b = None
    return scale, b


def train_saes(
    configs: Sequence[SAETrainingConfig],
    batches: Iterable[Tensor],
    metadata: DictionaryMetadata | None = None,
    progress: bool = True,
) -> list[TrainingResult]:
    """Train several SAEs in one pass over `batches`: every batch is fed to every SAE.

    All configs must share `batch_size` and `tokens`; they may differ in architecture, d_sae, k,
    l1, lr, seed... Returns one TrainingResult per config, in order.
    """
    configs = list(configs)
    _check_sweep(configs)
    first = configs[0]
    torch.manual_seed(first.seed)
    source = IterableChunks(batches, first.shuffle_buffer_tokens, first.seed)
    stream = ChunkedBatches(source, first.batch_size)
    sample = stream.peek(first.init_tokens)
    d_in = sample.shape[1]
    trainers = []
    for cfg in configs:
        scale, b_init = init_statistics(sample, cfg)
        trainer = SAETrainer(cfg, d_in, scale, b_init)
        trainer.calibrate_encoder(sample * scale)
        trainers.append(trainer)
    run_trainers(trainers, iter(stream), progress=progress)
    return training_results(trainers, metadata)


def training_results(
    trainers: Sequence[SAETrainer], metadata: DictionaryMetadata, resumed_from_tokens: int = 0
) -> list[TrainingResult]:
    """One TrainingResult per finished trainer (its dictionary, history and density)."""
    return [
        TrainingResult(
            dictionary=t.to_dictionary(metadata),
            history=t.history,
            log10_density=t.log10_density(),
            config=t.config,
            normalization_scale=t.scale,
            resumed_from_tokens=resumed_from_tokens,
        )
        for t in trainers
    ]


def run_trainers(
    trainers: Sequence[SAETrainer],
    batches: Iterator[Tensor],
    progress: bool = True,
    on_step: Any = None,
) -> None:
    """Feed raw batches to every trainer until the token budget or the stream ends."""
    batches = iter(batches)
    total_tokens = trainers[0].config.tokens
    start = trainers[0].tokens_seen
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total_tokens, initial=start, unit="tok", unit_scale=True, desc="train SAE", leave=False, mininterval=2.0
        )
    try:
        # check the budget before pulling: a lazy stream then never computes a batch it will not use
        while trainers[0].tokens_seen < total_tokens:
            raw = next(batches, None)
            if raw is None:
                break
            room = total_tokens - trainers[0].tokens_seen
            if raw.shape[0] > room:
                raw = raw[:room]
            raw = raw.to(trainers[0].device)
            scales = {t.scale for t in trainers}
            normalised = {s: (raw * s if s != 1.0 else raw) for s in scales}
            var_sums = {s: (x - x.mean(0)).pow(2).sum() for s, x in normalised.items()}
            for t in trainers:
                x, var_sum = normalised[t.scale], var_sums[t.scale]
                if x.device != t.device:  # a sweep may place its SAEs on different GPUs (config.device)
                    x, var_sum = x.to(t.device), var_sum.to(t.device)
                t.step(x, var_sum)
            if bar is not None:
                bar.update(raw.shape[0])
                last = trainers[0].history[-1] if trainers[0].history else None
                if last is not None and trainers[0].step_index % trainers[0].log_every == 0:
                    bar.set_postfix(l0=f"{last['l0']:.1f}", fvu=f"{last['fvu']:.3f}")
            if on_step is not None:
                on_step(trainers)
    finally:
        if bar is not None:
            bar.close()


def train_sae(
    config: SAETrainingConfig,
    batches: Iterable[Tensor],
    metadata: DictionaryMetadata | None = None,
    progress: bool = True,
) -> TrainingResult:
    """Train one SAE on an iterable of activation batches `[n, d_in]` (any n; re-batched and shuffled)."""
    return train_saes([config], batches, metadata, progress=progress)[0]


def train_sae_from_file(*args: Any, **kwargs: Any) -> TrainingResult:
    """Re-export of `training_file.train_sae_from_file` (matrix file -> SAELens folder, resumable)."""
    from saescope.dictionaries.training_file import train_sae_from_file as _impl

    return _impl(*args, **kwargs)


def train_saes_from_file(*args: Any, **kwargs: Any) -> list[TrainingResult]:
    """Re-export of `training_file.train_saes_from_file` (a sweep over one matrix file)."""
    from saescope.dictionaries.training_file import train_saes_from_file as _impl

    return _impl(*args, **kwargs)
