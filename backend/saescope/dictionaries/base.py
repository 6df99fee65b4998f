"""The `Dictionary` interface: anything that maps activations at one hook point to features.

Owns the contract every SAE architecture and every baseline implements, plus the metadata that says
where a dictionary's activations come from. It knows nothing about training, language models,
corpora or storage.

Shapes: `x: [..., d_in]` activations; `f: [..., d_sae]` feature activations;
`W_dec: [d_sae, d_in]` decoder directions (one row per feature).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

DictionaryKind = Literal["sae", "neurons", "random", "pca", "ica"]


class DictionaryMetadata(BaseModel):
    """Where a dictionary's activations come from (SAELens v6 `metadata` block)."""

    model_config = ConfigDict(extra="allow")

    model_name: str = Field("", description="Name of the model the dictionary was trained on.")
    hook_name: str = Field("", description="transformer_lens hook point, e.g. blocks.0.mlp.hook_post.")
    hook_head_index: int | None = Field(None, description="Head index for per-head hooks (attn.hook_z).")
    context_size: int = Field(128, description="Context length (tokens) used for training activations.")
    prepend_bos: bool = Field(True, description="Whether contexts start with a BOS token.")
    dataset_path: str = Field("", description="Corpus the activations were drawn from.")


class Dictionary(nn.Module, ABC):
    """A linear-ish map from activations (`d_in`) to `d_sae` features and back.

    Subclasses set `kind` and `architecture`, own parameters `W_dec [d_sae, d_in]` and `b_dec [d_in]`
    (possibly zero), and implement `encode`. `decode` is linear: `f @ W_dec + b_dec`.
    """

    kind: DictionaryKind = "sae"
    architecture: str = "standard"

    W_dec: nn.Parameter
    b_dec: nn.Parameter

    def __init__(self, d_in: int, d_sae: int, metadata: DictionaryMetadata | None = None) -> None:
        super().__init__()
        self.d_in = d_in
        self.d_sae = d_sae
        self.metadata = metadata or DictionaryMetadata()

    @property
    def hook_name(self) -> str:
        return self.metadata.hook_name

    @abstractmethod
    def encode(self, x: Tensor) -> Tensor:
        """Feature activations `[..., d_sae]` for activations `x [..., d_in]`."""

    def decode(self, f: Tensor) -> Tensor:
        """Reconstruction `[..., d_in]` from feature activations `f [..., d_sae]`."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    @property
    def decoder_directions(self) -> Tensor:
        """`[d_sae, d_in]`: the direction each feature writes (rows of W_dec)."""
        return self.W_dec

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def hyperparameters(self) -> dict[str, Any]:
        """Architecture-specific settings worth showing next to the metrics (e.g. k, l1)."""
        return {}
