"""The standard (Anthropic-style) SAE: `f = ReLU(W_enc^T (x - b_dec) + b_enc)`, `x_hat = f W_dec + b_dec`.

Owns the ReLU + L1 architecture: its inference class (SAELens v6 name "standard") and its training
spec (training name "relu": loss = MSE + l1 * sum_i f_i ||W_dec[i]||, with the sparse kernels as
its accelerated step).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from saescope.dictionaries import sparse_kernels as K
from saescope.dictionaries.base import Dictionary, DictionaryMetadata, metadata_from_cfg, training_hyperparameters
from saescope.dictionaries.training_spec import (
    SAEParameters,
    StepContext,
    StepStats,
    TrainingSpec,
    copy_linear_weights,
    mse_loss,
    zero,
)


class StandardSAE(Dictionary):
    """ReLU SAE. Parameters: W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]."""

    kind = "sae"
    architecture = "standard"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        metadata: DictionaryMetadata | None = None,
        apply_b_dec_to_input: bool = True,
    ) -> None:
        super().__init__(d_in, d_sae, metadata)
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Unit-norm random decoder rows; encoder tied to the decoder's transpose."""
        with torch.no_grad():
            w = torch.randn(self.d_sae, self.d_in, generator=generator)
            w /= w.norm(dim=1, keepdim=True)
            self.W_dec.copy_(w)
            self.W_enc.copy_(w.T)
            self.b_enc.zero_()
            self.b_dec.zero_()

    def pre_activations(self, x: Tensor) -> Tensor:
        """`[..., d_sae]` encoder pre-activations."""
        x_in = x - self.b_dec if self.apply_b_dec_to_input else x
        return x_in @ self.W_enc + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        return torch.relu(self.pre_activations(x))


    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "StandardSAE":
        """An (uninitialised-weights) instance shaped by a SAELens `cfg.json` dict."""
        sae = cls(
            int(cfg["d_in"]),
            int(cfg["d_sae"]),
            metadata_from_cfg(cfg),
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        )
        sae.set_hyperparameters(training_hyperparameters(cfg))
        return sae

    def hyperparameters(self) -> dict[str, Any]:
        """Training settings recorded in cfg.json (e.g. the L1 coefficient), if known."""
        return dict(getattr(self, "_hyperparameters", {}))

    def set_hyperparameters(self, values: dict[str, Any]) -> None:
        """Attach informational training settings (written to cfg.json, shown in the UI)."""
        self._hyperparameters = dict(values)

    @torch.no_grad()
    def fold_decoder_norms(self) -> Tensor:
        """Rescale so every decoder row has unit norm without changing `forward`.

        Feature i's activation is multiplied by ||W_dec[i]|| (encoder column, encoder bias and
        any threshold scale with it) and its decoder row divided by it. Returns the old norms.
        """
        norms = self.W_dec.norm(dim=1).clamp_min(1e-8)  # [d_sae]
        self.W_dec.div_(norms[:, None])
        self.W_enc.mul_(norms[None, :])
        self.b_enc.mul_(norms)
        return norms


def sparsity_penalty(f: Tensor, params: SAEParameters, weighted: bool) -> Tensor:
    """Mean over the batch of sum_i f_i (times ||W_dec[i]|| when `weighted`)."""
    if weighted:
        return (f * params.W_dec.norm(dim=1)).sum(-1).mean()
    return f.sum(-1).mean()


def firing_stats(f: Tensor) -> tuple[Tensor, Tensor]:
    """(mean active latents per token, [d_sae] firing counts) of codes `f [B, d_sae]`."""
    counts = (f.detach() > 0).float().sum(0)
    return counts.sum() / f.shape[0], counts


class ReLUTraining(TrainingSpec):
    """ReLU + L1, decoder norms free and weighting the L1 penalty (Anthropic, SAELens standard)."""

    name = "relu"
    description = "ReLU + L1 penalty weighted by decoder norms"
    penalty = "l1"
    default_decoder_norm = "penalty"

    def codes(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> Tensor:
        return params.pre_activations(x, ctx.apply_b_dec_to_input).relu()

    def loss(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> StepStats:
        f = self.codes(params, x, ctx)
        mse = mse_loss(params.decode(f), x)
        sparsity = sparsity_penalty(f, params, ctx.weight_sparsity_by_decoder_norm)
        l0, counts = firing_stats(f)
        return StepStats(mse + ctx.sparsity_coefficient * sparsity, mse, sparsity, zero(x.device), l0, counts)

    def accelerated_step(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> StepStats:
        step = K.relu_l1_sparse_step if ctx.sparse else K.relu_l1_step
        return step(params, x, ctx.sparsity_coefficient, weight_l1_by_decoder_norm=ctx.weight_sparsity_by_decoder_norm,
                    apply_b_dec_to_input=ctx.apply_b_dec_to_input)

    def inference_dictionary(self, params: SAEParameters, k: int, metadata: DictionaryMetadata | None,
                             apply_b_dec_to_input: bool, state: dict[str, float], scale: float) -> Dictionary:
        sae = StandardSAE(params.d_in, params.d_sae, metadata, apply_b_dec_to_input=apply_b_dec_to_input)
        copy_linear_weights(sae, params, scale)
        return sae


SAELENS_CLASSES = {"standard": StandardSAE}
TRAINING = ReLUTraining()
