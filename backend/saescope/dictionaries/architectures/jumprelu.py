"""The JumpReLU SAE (Rajamanoharan et al. 2024): a ReLU with a learned per-feature threshold.

Owns the JumpReLU architecture: its inference class (SAELens v6 name "jumprelu":
`f = ReLU(pre) * (pre > threshold)`, `pre = (x - b_dec) @ W_enc + b_enc`, exactly as SAELens
encodes it; parameters as StandardSAE plus `threshold [d_sae]`) and its training spec (training name
"jumprelu": loss = MSE + l0 * ||f||_0 with a rectangle-kernel straight-through estimator for the
threshold, SAELens "step" mode; the sparse kernels as accelerated step).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from pydantic import BaseModel, ConfigDict, Field

from saescope.dictionaries import sparse_kernels as K
from saescope.dictionaries.architectures.standard import StandardSAE, firing_stats
from saescope.dictionaries.base import Dictionary, DictionaryMetadata, metadata_from_cfg, training_hyperparameters
from saescope.dictionaries.training_spec import (
    SAEParameters,
    StepContext,
    StepStats,
    TrainingSpec,
    copy_linear_weights,
    mse_loss,
)


class JumpReLUSAE(StandardSAE):
    """JumpReLU SAE with SAELens tensor names (W_enc, b_enc, W_dec, b_dec, threshold)."""

    architecture = "jumprelu"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        metadata: DictionaryMetadata | None = None,
        apply_b_dec_to_input: bool = True,
    ) -> None:
        super().__init__(d_in, d_sae, metadata, apply_b_dec_to_input=apply_b_dec_to_input)
        self.threshold = nn.Parameter(torch.zeros(d_sae))

    def encode(self, x: Tensor) -> Tensor:
        pre = self.pre_activations(x)  # [..., d_sae]
        return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)

    @torch.no_grad()
    def fold_decoder_norms(self) -> Tensor:
        norms = super().fold_decoder_norms()
        self.threshold.mul_(norms)
        return norms

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "JumpReLUSAE":
        sae = cls(
            int(cfg["d_in"]),
            int(cfg["d_sae"]),
            metadata_from_cfg(cfg),
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        )
        extra = training_hyperparameters(cfg)
        if "k" in cfg:
            extra["k"] = cfg["k"]
        sae.set_hyperparameters(extra)
        return sae

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Older SAELens / DeepMind checkpoints store log_threshold.
        key = prefix + "log_threshold"
        if key in state_dict and prefix + "threshold" not in state_dict:
            state_dict[prefix + "threshold"] = torch.exp(state_dict.pop(key))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _rectangle(pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
    """The kernel K((pre - theta) / bandwidth) / bandwidth of the straight-through estimator."""
    return ((pre - theta).abs() < bandwidth / 2).to(pre.dtype) / bandwidth


class _JumpReLU(torch.autograd.Function):
    """pre * [pre > theta]; the gradient reaches theta through the rectangle kernel."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, theta = ctx.saved_tensors
        kernel = _rectangle(pre, theta, ctx.bandwidth)
        return grad * (pre > theta).to(pre.dtype), -(theta * kernel * grad).sum(0), None


class _Step(torch.autograd.Function):
    """[pre > theta]; no gradient to pre, the rectangle kernel's to theta."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, theta: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor, None]:
        pre, theta = ctx.saved_tensors
        return None, -(_rectangle(pre, theta, ctx.bandwidth) * grad).sum(0), None


class JumpReLUOptions(BaseModel):
    """Options of JumpReLU training."""

    model_config = ConfigDict(extra="forbid")

    bandwidth: float = Field(0.05, gt=0, description="Width of the straight-through estimator's kernel.")
    init_threshold: float = Field(0.01, ge=0, description="Initial threshold of every latent.")


class JumpReLUTraining(TrainingSpec):
    """JumpReLU with an L0 penalty; decoder rows kept at unit norm."""

    name = "jumprelu"
    description = "JumpReLU: a learned threshold per latent, L0 penalty"
    Options = JumpReLUOptions
    penalty = "l0"
    latent_vectors = ("threshold",)

    def init_latent_vectors(self, params: SAEParameters, options: Any) -> None:
        params.threshold.fill_(options.init_threshold)

    def codes(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> Tensor:
        pre = params.pre_activations(x, ctx.apply_b_dec_to_input)
        return pre * (pre > params.threshold)

    def loss(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> StepStats:
        bandwidth = ctx.options.bandwidth
        pre = params.pre_activations(x, ctx.apply_b_dec_to_input)
        f = _JumpReLU.apply(pre, params.threshold, bandwidth)
        mse = mse_loss(params.decode(f), x)
        l0_penalty = _Step.apply(pre, params.threshold, bandwidth).sum(-1).mean()
        l0, counts = firing_stats(f)
        return StepStats(mse + ctx.sparsity_coefficient * l0_penalty, mse, l0_penalty, torch.zeros((), device=x.device),
                         l0, counts)

    def accelerated_step(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> StepStats:
        return K.jumprelu_step(params, x, ctx.sparsity_coefficient, ctx.options.bandwidth, ctx.apply_b_dec_to_input,
                               sparse=ctx.sparse)

    def after_step(self, params: SAEParameters, stats: StepStats, state: dict[str, float], step_index: int,
                   options: Any) -> None:
        params.threshold.clamp_(min=0.0)

    def inference_dictionary(self, params: SAEParameters, k: int, metadata: DictionaryMetadata | None,
                             apply_b_dec_to_input: bool, state: dict[str, float], scale: float) -> Dictionary:
        sae = JumpReLUSAE(params.d_in, params.d_sae, metadata, apply_b_dec_to_input=apply_b_dec_to_input)
        copy_linear_weights(sae, params, scale)
        with torch.no_grad():
            sae.threshold.copy_(params.threshold / scale)
        return sae


SAELENS_CLASSES = {"jumprelu": JumpReLUSAE}
TRAINING = JumpReLUTraining()
