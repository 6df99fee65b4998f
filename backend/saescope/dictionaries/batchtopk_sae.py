"""BatchTopK SAEs (Bussmann et al. 2024): TopK over the whole batch while training, a threshold after.

Owns the inference class for dictionaries trained as BatchTopK. Following SAELens 6.54, a
BatchTopK SAE is *saved as a JumpReLU SAE*: `cfg.json` says `architecture: "jumprelu"` and
`threshold [d_sae]` holds the global threshold learned in training (the running average of the
smallest kept activation) repeated per feature. `BatchTopKSAE` is therefore a `JumpReLUSAE` whose
`architecture` is "jumprelu"; it also loads SAELens *training* checkpoints (architecture
"batchtopk", a scalar `topk_threshold` buffer). Training lives in `training_kernels.py`.
"""

from __future__ import annotations

from typing import Any

import torch

from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.jumprelu_sae import JumpReLUSAE


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
        from saescope.dictionaries.architectures import metadata_from_cfg, training_hyperparameters

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
