"""Reading and writing dictionaries as SAELens folders (`cfg.json` + `sae_weights.safetensors`).

Owns the on-disk format: v6 `cfg.json` out; v6 and pre-6.0 configs in. Non-SAE dictionaries
(baselines) are written in the same format with `architecture: standard` and their saescope kind
recorded under `metadata.saescope_kind` so they load back as themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from saescope.dictionaries.base import Dictionary, DictionaryMetadata
from saescope.dictionaries.standard_sae import StandardSAE
from saescope.errors import FormatError

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"


def dictionary_config(dictionary: Dictionary) -> dict[str, Any]:
    """The v6 `cfg.json` content for `dictionary`."""
    metadata = dictionary.metadata.model_dump()
    metadata["saescope_kind"] = dictionary.kind
    cfg: dict[str, Any] = {
        "architecture": dictionary.architecture,
        "d_in": dictionary.d_in,
        "d_sae": dictionary.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": bool(getattr(dictionary, "apply_b_dec_to_input", True)),
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
    }
    cfg.update(dictionary.hyperparameters())
    return cfg


def save_dictionary(
    dictionary: Dictionary, folder: Path, log10_sparsity: torch.Tensor | None = None
) -> Path:
    """Write `dictionary` to `folder` in SAELens v6 format; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in dictionary.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    (folder / CFG_FILE).write_text(json.dumps(dictionary_config(dictionary), indent=2))
    if log10_sparsity is not None:
        save_file({"sparsity": log10_sparsity.detach().cpu().float().contiguous()}, str(folder / SPARSITY_FILE))
    return folder


def read_config(folder: Path) -> dict[str, Any]:
    """Load `cfg.json`, raising FormatError with the path when it is missing or not JSON."""
    path = Path(folder) / CFG_FILE
    if not path.is_file():
        raise FormatError(f"{path} not found: a SAELens folder needs cfg.json and sae_weights.safetensors")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict) or "d_in" not in cfg or "d_sae" not in cfg:
        raise FormatError(f"{path} lacks d_in/d_sae: not a SAELens cfg.json")
    return cfg


def metadata_from_config(cfg: dict[str, Any]) -> DictionaryMetadata:
    """Metadata from a v6 `metadata` block or from pre-6.0 flat fields."""
    if isinstance(cfg.get("metadata"), dict):
        return DictionaryMetadata(**cfg["metadata"])
    return DictionaryMetadata(
        model_name=cfg.get("model_name", ""),
        hook_name=cfg.get("hook_name") or cfg.get("hook_point", ""),
        hook_head_index=cfg.get("hook_head_index") or cfg.get("hook_point_head_index"),
        context_size=cfg.get("context_size", 128),
        prepend_bos=cfg.get("prepend_bos", True),
        dataset_path=cfg.get("dataset_path", ""),
    )


def load_dictionary(folder: Path) -> Dictionary:
    """Load a SAELens folder (standard architecture) as a Dictionary."""
    folder = Path(folder)
    cfg = read_config(folder)
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FormatError(f"{weights_path} not found")
    state = load_file(str(weights_path))
    dictionary = StandardSAE(
        int(cfg["d_in"]),
        int(cfg["d_sae"]),
        metadata_from_config(cfg),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
    )
    try:
        dictionary.load_state_dict(state)
    except RuntimeError as exc:
        raise FormatError(f"{weights_path}: weights do not match cfg.json: {exc}") from exc
    return dictionary
