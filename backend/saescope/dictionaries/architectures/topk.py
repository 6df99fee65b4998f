"""The TopK SAE (Gao et al. 2024): keep the k largest encoder pre-activations per token, ReLU them.

Owns the TopK architecture: its inference class (SAELens v6 name "topk"; encoding is
`f = ReLU(TopK_k((x - b_dec) @ W_enc + b_enc))`, decoding is linear), its training spec (training
name "topk": loss = MSE + AuxK, the sparse kernels as accelerated step), and the AuxK loss that the
other k-sparse architectures share.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

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
    renormalise_decoder,
    zero,
)


class TopKSAE(StandardSAE):
    """TopK SAE. Parameters as StandardSAE (W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec).

    `rescale_acts_by_decoder_norm` follows SAELens: select the top k of `pre * ||W_dec[i]||`. saescope
    trains with unit-norm decoder rows, so it writes False; True is honoured when loading.
    """

    architecture = "topk"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        metadata: DictionaryMetadata | None = None,
        apply_b_dec_to_input: bool = True,
        rescale_acts_by_decoder_norm: bool = False,
    ) -> None:
        super().__init__(d_in, d_sae, metadata, apply_b_dec_to_input=apply_b_dec_to_input)
        if not 1 <= k <= d_sae:
            raise ValueError(f"k must be in [1, d_sae={d_sae}], got {k}")
        self.k = int(k)
        self.rescale_acts_by_decoder_norm = rescale_acts_by_decoder_norm

    def encode(self, x: Tensor) -> Tensor:
        pre = self.pre_activations(x)  # [..., d_sae]
        if self.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        values, indices = pre.topk(self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, indices, values.relu_())

    @torch.no_grad()
    def fold_decoder_norms(self) -> Tensor:
        if not self.rescale_acts_by_decoder_norm:
            norms = self.W_dec.norm(dim=1)
            if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
                raise ValueError("folding decoder norms would change the TopK selection")
        norms = super().fold_decoder_norms()
        self.rescale_acts_by_decoder_norm = False
        return norms

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "TopKSAE":
        sae = cls(
            int(cfg["d_in"]),
            int(cfg["d_sae"]),
            int(cfg.get("k", 100)),  # SAELens default k
            metadata_from_cfg(cfg),
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
            rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
        )
        sae.set_hyperparameters(training_hyperparameters(cfg))
        return sae

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **super().hyperparameters(),
            "k": self.k,
            "rescale_acts_by_decoder_norm": self.rescale_acts_by_decoder_norm,
        }


class AuxKOptions(BaseModel):
    """Options of the k-sparse architectures: the AuxK loss that revives dead latents (Gao et al.)."""

    model_config = ConfigDict(extra="forbid")

    aux_k: int | None = Field(None, ge=1, description="Dead latents AuxK reconstructs with (default d_in // 2).")
    aux_coefficient: float = Field(1 / 32, ge=0, description="AuxK loss coefficient (Gao et al. 1/32).")

    def resolved_aux_k(self, d_in: int) -> int:
        return self.aux_k or max(1, d_in // 2)


def aux_k_loss(params: SAEParameters, pre: Tensor, x: Tensor, x_hat: Tensor, dead: Tensor, aux_k: int) -> Tensor:
    """The top `aux_k` dead latents reconstruct the residual x - x_hat (held constant); weaker while
    fewer than `aux_k` latents are dead (SAELens). 0 when none is dead."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return zero(x.device)
    residual = (x - x_hat).detach()
    masked = pre.masked_fill(~dead, float("-inf"))
    values, indices = masked.topk(min(aux_k, n_dead), dim=1)
    codes = torch.zeros_like(pre).scatter(1, indices, values.relu())
    return min(n_dead / aux_k, 1.0) * mse_loss(codes @ params.W_dec, residual)


def k_sparse_loss(params: SAEParameters, x: Tensor, pre: Tensor, f: Tensor, ctx: StepContext) -> StepStats:
    """MSE of the codes `f` (taken from the pre-activations `pre`) plus the weighted AuxK loss."""
    x_hat = params.decode(f)
    mse = mse_loss(x_hat, x)
    options: AuxKOptions = ctx.options
    aux = zero(x.device)
    if options.aux_coefficient != 0.0:
        aux = aux_k_loss(params, pre, x, x_hat, ctx.dead, options.resolved_aux_k(params.d_in))
    l0, counts = firing_stats(f)
    return StepStats(mse + options.aux_coefficient * aux, mse, zero(x.device), aux, l0, counts)


def topk_codes(pre: Tensor, k: int) -> Tensor:
    values, indices = pre.topk(k, dim=1)
    return torch.zeros_like(pre).scatter(1, indices, values.relu())


class TopKTraining(TrainingSpec):
    """TopK with AuxK; decoder rows kept at unit norm."""

    name = "topk"
    description = "TopK: the k largest pre-activations per token, with the AuxK loss"
    Options = AuxKOptions
    uses_k = True

    def codes(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> Tensor:
        return topk_codes(params.pre_activations(x, ctx.apply_b_dec_to_input), ctx.k)

    def loss(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> StepStats:
        pre = params.pre_activations(x, ctx.apply_b_dec_to_input)
        return k_sparse_loss(params, x, pre, topk_codes(pre, ctx.k), ctx)

    def accelerated_step(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> StepStats:
        options: AuxKOptions = ctx.options
        return K.topk_step(params, x, ctx.k, ctx.dead, options.resolved_aux_k(params.d_in), options.aux_coefficient,
                           ctx.apply_b_dec_to_input)

    def inference_dictionary(self, params: SAEParameters, k: int, metadata: DictionaryMetadata | None,
                             apply_b_dec_to_input: bool, state: dict[str, float], scale: float) -> Dictionary:
        sae = TopKSAE(params.d_in, params.d_sae, k, metadata, apply_b_dec_to_input=apply_b_dec_to_input)
        copy_linear_weights(sae, params, scale)
        return sae

    def finish(self, dictionary: Dictionary) -> None:
        renormalise_decoder(dictionary)


SAELENS_CLASSES = {"topk": TopKSAE}
TRAINING = TopKTraining()
