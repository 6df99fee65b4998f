"""Registry of SAE architectures by their SAELens v6 name.

Owns `ARCHITECTURES: dict[str, type[Dictionary]]` ("standard", "topk", "batchtopk", "jumprelu"),
used by `saelens_format.load_dictionary` to build the right class from a `cfg.json` dict with
`cls.from_config(cfg)` and then `load_state_dict` with SAELens tensor names. Also maps the
training names of saescope's CLI (relu, topk, batchtopk, jumprelu) to those classes. It must not
import training code or any stage to the right of dictionaries.
"""

from __future__ import annotations

from typing import Any

from saescope.dictionaries.base import Dictionary, DictionaryMetadata
from saescope.dictionaries.batchtopk_sae import BatchTopKSAE
from saescope.dictionaries.jumprelu_sae import JumpReLUSAE
from saescope.dictionaries.standard_sae import StandardSAE
from saescope.dictionaries.topk_sae import TopKSAE
from saescope.errors import FormatError

ARCHITECTURES: dict[str, type[Dictionary]] = {
    "standard": StandardSAE,
    "topk": TopKSAE,
    "batchtopk": BatchTopKSAE,  # SAELens training name; saved for inference as "jumprelu"
    "jumprelu": JumpReLUSAE,
}

# saescope training architecture name -> SAELens v6 architecture of the saved dictionary
TRAINING_TO_SAELENS: dict[str, str] = {
    "relu": "standard",
    "topk": "topk",
    "batchtopk": "jumprelu",
    "jumprelu": "jumprelu",
}


# Informational training settings saescope writes into cfg.json (SAELens ignores unknown keys);
# restored by each class's from_config so hyperparameters() survives a save/load round trip.
TRAINING_KEYS = ("trained_as", "lr", "training_tokens", "l1_coefficient", "l0_coefficient")


def training_hyperparameters(cfg: dict[str, Any]) -> dict[str, Any]:
    """The TRAINING_KEYS present in a cfg dict."""
    return {key: cfg[key] for key in TRAINING_KEYS if key in cfg}


def metadata_from_cfg(cfg: dict[str, Any]) -> DictionaryMetadata:
    """Metadata from a v6 `metadata` block or from pre-6.0 flat fields."""
    if isinstance(cfg.get("metadata"), dict):
        return DictionaryMetadata(**cfg["metadata"])
    return DictionaryMetadata(
        model_name=cfg.get("model_name", "") or "",
        hook_name=cfg.get("hook_name") or cfg.get("hook_point", "") or "",
        hook_head_index=cfg.get("hook_head_index") or cfg.get("hook_point_head_index"),
        context_size=cfg.get("context_size", 128) or 128,
        prepend_bos=cfg.get("prepend_bos", True),
        dataset_path=cfg.get("dataset_path", "") or "",
    )


def dictionary_class(architecture: str) -> type[Dictionary]:
    """The class for a SAELens architecture name; FormatError naming the known ones otherwise."""
    try:
        return ARCHITECTURES[architecture]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise FormatError(f"unknown SAE architecture {architecture!r}; saescope reads {known}") from None


def dictionary_from_config(cfg: dict[str, Any]) -> Dictionary:
    """Build the (weights not yet loaded) dictionary a SAELens cfg dict describes."""
    architecture = cfg.get("architecture") or "standard"  # pre-6.0 configs have none
    return dictionary_class(architecture).from_config(cfg)  # type: ignore[attr-defined]
