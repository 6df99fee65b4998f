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

# Largest widths accepted from a config: far above any published model or SAE, small enough that a
# typo (d_sae 10**9) is refused before anything is allocated.
MAX_D_IN = 1 << 17
MAX_D_SAE = 1 << 24


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


# Informational training settings saescope writes into cfg.json (SAELens ignores unknown keys);
# restored by each class's from_config so hyperparameters() survives a save/load round trip.
TRAINING_KEYS = ("trained_as", "lr", "training_tokens", "l1_coefficient", "l0_coefficient")


def training_hyperparameters(cfg: dict[str, Any]) -> dict[str, Any]:
    """The TRAINING_KEYS present in a cfg dict."""
    return {key: cfg[key] for key in TRAINING_KEYS if key in cfg}


def metadata_from_cfg(cfg: dict[str, Any]) -> DictionaryMetadata:
    """Metadata from a v6 `metadata` block (None values dropped) or from pre-6.0 flat fields."""
    if isinstance(cfg.get("metadata"), dict):
        meta = {k: v for k, v in cfg["metadata"].items() if v is not None or k == "hook_head_index"}
        return DictionaryMetadata(**meta)
    head = cfg.get("hook_head_index")
    if head is None:
        head = cfg.get("hook_point_head_index")
    return DictionaryMetadata(
        model_name=cfg.get("model_name") or "",
        hook_name=cfg.get("hook_name") or cfg.get("hook_point") or "",
        hook_head_index=head,
        context_size=cfg.get("context_size") or 128,
        prepend_bos=cfg.get("prepend_bos", True) if cfg.get("prepend_bos") is not None else True,
        dataset_path=cfg.get("dataset_path") or "",
    )
