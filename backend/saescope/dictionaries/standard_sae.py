"""The standard (Anthropic-style) SAE: `f = ReLU(W_enc^T (x - b_dec) + b_enc)`, `x_hat = f W_dec + b_dec`.

Owns the inference class of the ReLU + L1 architecture. Training lives in `training.py`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from saescope.dictionaries.base import Dictionary, DictionaryMetadata


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

    # --- SAELens-format construction (used by architectures.ARCHITECTURES) -------------------

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "StandardSAE":
        """An (uninitialised-weights) instance shaped by a SAELens `cfg.json` dict."""
        from saescope.dictionaries.architectures import metadata_from_cfg, training_hyperparameters

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
