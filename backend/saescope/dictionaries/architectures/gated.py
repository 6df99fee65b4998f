"""Gated SAEs (Rajamanoharan et al. 2024): a gate decides which latents fire, a magnitude path how much.

Owns the gated architecture: its inference class (SAELens v6 name "gated", tensors `W_enc`,
`b_gate`, `r_mag`, `b_mag`, `W_dec`, `b_dec`) and its training spec (training name "gated").
Encoding: `f = [x_in W_enc + b_gate > 0] * ReLU(x_in (W_enc * exp(r_mag)) + b_mag)` with
`x_in = x - b_dec`. The training loss is SAELens's: MSE + l1 * sum_i ReLU(gate_i) ||W_dec[i]|| plus
the auxiliary reconstruction of x from ReLU(gate) through a frozen copy of the decoder, so the gate
learns although its step function has no gradient. In the training layout `b_enc` is the gate bias.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from saescope.dictionaries.architectures.standard import firing_stats
from saescope.dictionaries.base import Dictionary, DictionaryMetadata, metadata_from_cfg, training_hyperparameters
from saescope.dictionaries.training_spec import SAEParameters, StepContext, StepStats, TrainingSpec, mse_loss


class GatedSAE(Dictionary):
    """Gated SAE. Parameters: W_enc [d_in, d_sae], b_gate, r_mag, b_mag [d_sae], W_dec [d_sae, d_in], b_dec [d_in]."""

    kind = "sae"
    architecture = "gated"

    def __init__(
        self, d_in: int, d_sae: int, metadata: DictionaryMetadata | None = None, apply_b_dec_to_input: bool = True
    ) -> None:
        super().__init__(d_in, d_sae, metadata)
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae))
        self.b_gate = nn.Parameter(torch.zeros(d_sae))
        self.r_mag = nn.Parameter(torch.zeros(d_sae))
        self.b_mag = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self._hyperparameters: dict[str, Any] = {}

    def encode(self, x: Tensor) -> Tensor:
        x_in = x - self.b_dec if self.apply_b_dec_to_input else x
        gate = x_in @ self.W_enc + self.b_gate
        magnitude = x_in @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        return (gate > 0).to(x.dtype) * torch.relu(magnitude)

    @torch.no_grad()
    def fold_decoder_norms(self) -> Tensor:
        """Unit-norm decoder rows without changing `forward` (as SAELens's fold_W_dec_norm)."""
        norms = self.W_dec.norm(dim=1).clamp_min(1e-8)
        self.W_dec.div_(norms[:, None])
        self.W_enc.mul_(norms[None, :])
        self.b_gate.mul_(norms)
        self.b_mag.mul_(norms)
        return norms

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "GatedSAE":
        sae = cls(int(cfg["d_in"]), int(cfg["d_sae"]), metadata_from_cfg(cfg),
                  apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)))
        sae.set_hyperparameters(training_hyperparameters(cfg))
        return sae

    def hyperparameters(self) -> dict[str, Any]:
        return dict(self._hyperparameters)

    def set_hyperparameters(self, values: dict[str, Any]) -> None:
        self._hyperparameters = dict(values)


def _paths(params: SAEParameters, x: Tensor, apply_b_dec_to_input: bool) -> tuple[Tensor, Tensor]:
    """(gate pre-activations, magnitude pre-activations), each [B, d_sae]."""
    x_in = params.encoder_input(x, apply_b_dec_to_input)
    gate = torch.addmm(params.b_enc, x_in, params.W_encT.t())
    magnitude = torch.addmm(params.b_mag, x_in, (params.W_encT * params.r_mag.exp()[:, None]).t())
    return gate, magnitude


class GatedTraining(TrainingSpec):
    """Gated SAE with SAELens's L1-on-the-gate and auxiliary-reconstruction losses."""

    name = "gated"
    description = "Gated: a gate picks the latents, a magnitude path sizes them"
    penalty = "l1"
    default_decoder_norm = "penalty"
    latent_vectors = ("r_mag", "b_mag")

    def codes(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> Tensor:
        gate, magnitude = _paths(params, x, ctx.apply_b_dec_to_input)
        return (gate > 0).to(x.dtype) * magnitude.relu()

    def loss(self, params: SAEParameters, x: Tensor, ctx: StepContext) -> StepStats:
        gate, magnitude = _paths(params, x, ctx.apply_b_dec_to_input)
        f = (gate.detach() > 0).to(x.dtype) * magnitude.relu()
        mse = mse_loss(params.decode(f), x)
        gate_act = gate.relu()
        norms = params.W_dec.norm(dim=1) if ctx.weight_sparsity_by_decoder_norm else torch.ones_like(params.b_enc)
        sparsity = (gate_act * norms).sum(-1).mean()
        via_gate = gate_act @ params.W_dec.detach() + params.b_dec.detach()
        aux = mse_loss(via_gate, x)
        l0, counts = firing_stats(f)
        return StepStats(mse + ctx.sparsity_coefficient * sparsity + aux, mse, sparsity, aux, l0, counts)

    def inference_dictionary(self, params: SAEParameters, k: int, metadata: DictionaryMetadata | None,
                             apply_b_dec_to_input: bool, state: dict[str, float], scale: float) -> Dictionary:
        sae = GatedSAE(params.d_in, params.d_sae, metadata, apply_b_dec_to_input=apply_b_dec_to_input)
        with torch.no_grad():
            sae.W_enc.copy_(params.W_encT.t())
            sae.b_gate.copy_(params.b_enc / scale)
            sae.r_mag.copy_(params.r_mag)
            sae.b_mag.copy_(params.b_mag / scale)
            sae.W_dec.copy_(params.W_dec)
            sae.b_dec.copy_(params.b_dec / scale)
        return sae


SAELENS_CLASSES = {"gated": GatedSAE}
TRAINING = GatedTraining()
