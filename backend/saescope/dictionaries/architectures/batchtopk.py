"""BatchTopK SAEs (Bussmann et al. 2024): TopK over the whole batch while training, a threshold after.

Owns the BatchTopK architecture: the inference class for dictionaries trained as BatchTopK and
the training spec (training name "batchtopk": keep the k*B largest positive pre-activations of a
batch of B tokens, loss = MSE + AuxK, the sparse kernels as accelerated step; the inference
threshold is a bias-corrected running average of the smallest kept activation). Following SAELens
6.54, a BatchTopK SAE is *saved as a JumpReLU SAE*: `cfg.json` says `architecture: "jumprelu"` and
`threshold [d_sae]` holds the global threshold repeated per feature. `BatchTopKSAE` is therefore a
`JumpReLUSAE` whose `architecture` is "jumprelu"; it also loads SAELens *training* checkpoints
(architecture "batchtopk", a scalar `topk_threshold` buffer).
"""

from __future__ import annotations

from typing import Any

import torch

from pydantic import Field
from torch import Tensor

from saescope.dictionaries import sparse_kernels as K
from saescope.dictionaries.architectures.jumprelu import JumpReLUSAE
from saescope.dictionaries.architectures.topk import AuxKOptions, k_sparse_loss
from saescope.dictionaries.base import Dictionary, DictionaryMetadata, metadata_from_cfg, training_hyperparameters
from saescope.dictionaries.training_spec import (
    SAEParameters,
    StepContext,
    StepStats,
    TrainingSpec,
    copy_linear_weights,
    renormalise_decoder,
    zero,
)


class BatchTopKSAE(JumpReLUSAE):
    """A JumpReLU SAE with one shared threshold, trained with BatchTopK (average L0 `k`)."""

    architecture = "jumprelu"  # SAELens saves BatchTopK SAEs as JumpReLU for inference

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: float,
        metadata: DictionaryMetadata | None = None,
        apply_b_dec_to_input: bool = True,
    ) -> None:
        super().__init__(d_in, d_sae, metadata, apply_b_dec_to_input=apply_b_dec_to_input)
        self.k = float(k)

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "BatchTopKSAE":
        sae = cls(
            int(cfg["d_in"]),
            int(cfg["d_sae"]),
            float(cfg.get("k", 100)),
            metadata_from_cfg(cfg),
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        )
        sae.set_hyperparameters(training_hyperparameters(cfg))
        return sae

    def hyperparameters(self) -> dict[str, Any]:
        k: float | int = int(self.k) if float(self.k).is_integer() else self.k
        return {**super().hyperparameters(), "k": k, "trained_as": "batchtopk"}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        key = prefix + "topk_threshold"  # SAELens training checkpoint: one scalar
        if key in state_dict and prefix + "threshold" not in state_dict:
            state_dict[prefix + "threshold"] = torch.full((self.d_sae,), float(state_dict.pop(key)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class BatchTopKOptions(AuxKOptions):
    """Options of BatchTopK training."""

    threshold_lr: float = Field(0.01, gt=0, le=1, description="Rate of the inference threshold's running average.")


def batch_topk_mask(pre: Tensor, k: int) -> Tensor:
    """[B, d_sae] bool: the k*B largest positive entries of the batch."""
    n_keep = min(k * pre.shape[0], pre.numel())
    kth = pre.detach().flatten().topk(n_keep).values.min()
    return (pre.detach() >= kth) & (pre.detach() > 0)


class BatchTopKTraining(TrainingSpec):
    """BatchTopK with AuxK; decoder rows kept at unit norm."""

    name = "batchtopk"
    description = "BatchTopK: the k*B largest pre-activations of a batch, a threshold at inference"
    Options = BatchTopKOptions
    uses_k = True

    def codes(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> Tensor:
        pre = params.pre_activations(x, ctx.apply_b_dec_to_input)
        return pre * batch_topk_mask(pre, ctx.k)

    def loss(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> StepStats:
        pre = params.pre_activations(x, ctx.apply_b_dec_to_input)
        keep = batch_topk_mask(pre, ctx.k)
        stats = k_sparse_loss(params, x, pre, pre * keep, ctx)
        kept = pre.detach()[keep]
        stats.extra["min_kept"] = kept.min() if kept.numel() else zero(x.device)
        return stats

    def accelerated_step(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> StepStats:
        options: BatchTopKOptions = ctx.options
        return K.batchtopk_step(params, x, ctx.k, ctx.dead, options.resolved_aux_k(params.d_in),
                                options.aux_coefficient, ctx.apply_b_dec_to_input)

    def initial_state(self) -> dict[str, float]:
        return {"threshold": 0.0, "threshold_ema": 0.0}

    def after_step(self, params: SAEParameters, stats: StepStats, state: dict[str, float], step_index: int,
                   options: Any) -> None:
        # bias-corrected like Adam's moments, so a short run does not end with a threshold still
        # pulled towards its 0 start
        rate = options.threshold_lr
        state["threshold_ema"] = (1 - rate) * state["threshold_ema"] + rate * float(stats.extra.pop("min_kept"))
        state["threshold"] = state["threshold_ema"] / (1 - (1 - rate) ** (step_index + 1))

    def history_extras(self, state: dict[str, float]) -> dict[str, float]:
        return {"threshold": state["threshold"]}

    def inference_dictionary(self, params: SAEParameters, k: int, metadata: DictionaryMetadata | None,
                             apply_b_dec_to_input: bool, state: dict[str, float], scale: float) -> Dictionary:
        sae = BatchTopKSAE(params.d_in, params.d_sae, k, metadata, apply_b_dec_to_input=apply_b_dec_to_input)
        copy_linear_weights(sae, params, scale)
        with torch.no_grad():
            sae.threshold.fill_(state["threshold"] / scale)
        return sae

    def finish(self, dictionary: Dictionary) -> None:
        renormalise_decoder(dictionary)


SAELENS_CLASSES = {"batchtopk": BatchTopKSAE}
TRAINING = BatchTopKTraining()
