"""The JumpReLU SAE (Rajamanoharan et al. 2024): a ReLU with a learned per-feature threshold.

Owns the inference class of the JumpReLU architecture (SAELens v6 name "jumprelu"):
`f = ReLU(pre) * (pre > threshold)`, `pre = (x - b_dec) @ W_enc + b_enc`, exactly as SAELens
encodes it. Parameters as StandardSAE plus `threshold [d_sae]`. Training (straight-through
estimator, L0 penalty) lives in `training_kernels.py`; this module must not know about training.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.standard_sae import StandardSAE


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
        from saescope.dictionaries.architectures import metadata_from_cfg, training_hyperparameters

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
