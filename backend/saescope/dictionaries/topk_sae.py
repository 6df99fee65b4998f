"""The TopK SAE (Gao et al. 2024): keep the k largest encoder pre-activations per token, ReLU them.

Owns the inference class of the TopK architecture (SAELens v6 name "topk"). Encoding is
`f = ReLU(TopK_k((x - b_dec) @ W_enc + b_enc))`; decoding is linear. Training (AuxK loss, sparse
kernels) lives in `training.py` / `training_kernels.py`; this module must not know about training.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.standard_sae import StandardSAE


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
        from saescope.dictionaries.architectures import metadata_from_cfg, training_hyperparameters

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
