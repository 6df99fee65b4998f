"""Reading and writing dictionaries as SAELens folders (`cfg.json` + `sae_weights.safetensors`).

Owns the on-disk format: v6 `cfg.json` out; v6 and pre-6.0 configs in (standard, topk, jumprelu;
pre-6.0 flat fields `hook_point`/`hook_name`, `hook_layer`, `activation_fn_str` relu|topk with
`activation_fn_kwargs {k}`, `finetuning_scaling_factor` folded into the decoder). Non-SAE
dictionaries (baselines) are written in the same format with `architecture: standard` and their
saescope kind recorded under `metadata.saescope_kind` (activation under
`metadata.saescope_activation`) so they load back as themselves. `cfg.json` is validated by
`ConfigShape` (whole-number widths within bounds, a usable k) and the weights' shapes are read from
the safetensors header before any tensor is allocated; weights holding NaN or Inf are refused. Every
malformed folder raises FormatError naming the path. Files are written atomically (temporary file, then rename). It does not
train or evaluate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, model_validator
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from saescope.atomic_files import atomic_file, write_json
from saescope.dictionaries.architectures import dictionary_class
from saescope.dictionaries.base import MAX_D_IN, MAX_D_SAE, Dictionary, metadata_from_cfg
from saescope.errors import FormatError

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
SAELENS_FORMAT_VERSION = "6.0.0"  # written when a dictionary carries no sae_lens_version
BASELINE_KINDS = ("neurons", "random", "pca", "ica")
# Run-time input normalisations that are the identity at inference in SAELens 6.
_IDENTITY_NORMALIZATIONS = (None, False, "none", "expected_average_only_in")


class ConfigShape(BaseModel):
    """The fields of a (normalized) `cfg.json` that size a dictionary, checked before it is built."""

    model_config = ConfigDict(extra="allow")

    architecture: str = Field("standard", description="Architecture name from the registry.")
    d_in: StrictInt = Field(ge=1, le=MAX_D_IN, description="Input width: the hook point's activation size.")
    d_sae: StrictInt = Field(ge=1, le=MAX_D_SAE, description="Number of features.")
    k: StrictInt | StrictFloat | None = Field(None, gt=0, description="Active features per token (top-k kinds).")

    @model_validator(mode="after")
    def _k_fits(self) -> ConfigShape:
        if self.k is not None:
            if self.architecture == "topk" and not isinstance(self.k, int):
                raise ValueError(f"k must be a whole number for a topk SAE, got {self.k!r}")
            if self.k > self.d_sae:
                raise ValueError(f"k {self.k} is larger than d_sae {self.d_sae}")
        return self


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or "config"
    detail = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    ctx = err.get("ctx") or {}
    bounds = {"greater_than_equal": ("at least", "ge"), "less_than_equal": ("at most", "le"),
              "greater_than": ("more than", "gt")}
    if err.get("type") == "int_type":
        detail = "must be a whole number"
    elif err.get("type") in bounds:
        words, key = bounds[err["type"]]
        detail = f"must be {words} {ctx.get(key)}"
    return f"{field} {detail} (got {err.get('input')!r})" if "input" in err and field != "config" else detail


def check_config_shape(cfg: dict[str, Any], path: Path | str) -> ConfigShape:
    """The validated sizes of a normalized config; FormatError naming `path` and the field otherwise."""
    try:
        return ConfigShape.model_validate(cfg)
    except ValidationError as exc:
        raise FormatError(f"{path}: {_first_problem(exc)}") from None


def dictionary_config(dictionary: Dictionary) -> dict[str, Any]:
    """The v6 `cfg.json` content for `dictionary`."""
    metadata = dictionary.metadata.model_dump()
    metadata["saescope_kind"] = dictionary.kind
    # SAELens treats configs without a version as pre-6.0 (and drops the metadata block).
    metadata.setdefault("sae_lens_version", SAELENS_FORMAT_VERSION)
    extra = getattr(dictionary, "format_metadata", None)
    if callable(extra):
        metadata.update(extra())
    cfg: dict[str, Any] = {
        "architecture": dictionary.architecture,
        "d_in": dictionary.d_in,
        "d_sae": dictionary.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": bool(getattr(dictionary, "apply_b_dec_to_input", True)),
        "normalize_activations": "none",
        "reshape_activations": "hook_z" if "hook_z" in dictionary.metadata.hook_name else "none",
        "metadata": metadata,
    }
    cfg.update(dictionary.hyperparameters())
    return cfg


def save_dictionary(
    dictionary: Dictionary, folder: Path, log10_sparsity: torch.Tensor | None = None
) -> Path:
    """Write `dictionary` to `folder` in SAELens v6 format; returns the folder.

    Weights first, cfg.json last, each file atomically, so a folder with a cfg.json is complete.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in dictionary.state_dict().items()}
    with atomic_file(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    if log10_sparsity is not None:
        sparsity = torch.as_tensor(log10_sparsity).detach().cpu().float().contiguous()
        if sparsity.shape != (dictionary.d_sae,):
            raise FormatError(f"log10 sparsity must have shape [{dictionary.d_sae}], got {tuple(sparsity.shape)}")
        with atomic_file(folder / SPARSITY_FILE) as tmp:
            save_file({"sparsity": sparsity}, str(tmp))
    write_json(folder / CFG_FILE, dictionary_config(dictionary))
    return folder


def read_config(folder: Path) -> dict[str, Any]:
    """Load `cfg.json`, raising FormatError with the path when it is missing or not JSON."""
    folder = Path(folder)
    path = folder / CFG_FILE
    if not folder.is_dir():
        raise FormatError(f"{folder} is not a folder: a SAELens dictionary is a folder with cfg.json and {WEIGHTS_FILE}")
    if not path.is_file():
        raise FormatError(f"{path} not found: a SAELens folder needs cfg.json and sae_weights.safetensors")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(cfg, dict) or "d_in" not in cfg or "d_sae" not in cfg:
        raise FormatError(f"{path} lacks d_in/d_sae: not a SAELens cfg.json")
    return cfg


def is_pre_v6_config(cfg: dict[str, Any]) -> bool:
    """True for flat pre-6.0 configs (no `metadata` block, or a sae_lens_version < 6)."""
    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    if isinstance(version, str) and version[:1].isdigit():
        try:
            return int(version.split(".")[0]) < 6
        except ValueError:
            pass
    return not isinstance(cfg.get("metadata"), dict)


def normalize_config(cfg: dict[str, Any], path: Path | str = "cfg.json") -> dict[str, Any]:
    """A v6-shaped config dict from a v6 or pre-6.0 `cfg.json` (`path` only for messages).

    Pre-6.0: `hook_point` -> `metadata.hook_name`, `hook_point_head_index` -> `hook_head_index`,
    `activation_fn_str`/`activation_fn` topk with `activation_fn_kwargs.k` -> architecture topk, k.
    """
    out = dict(cfg)
    if is_pre_v6_config(cfg):
        act = cfg.get("activation_fn_str") or cfg.get("activation_fn") or "relu"
        kwargs = cfg.get("activation_fn_kwargs") or {}
        architecture = cfg.get("architecture") or "standard"
        if act == "topk":
            if "k" not in kwargs and "k" not in cfg:
                raise FormatError(f"{path}: activation_fn_str is topk but activation_fn_kwargs has no k")
            architecture = "topk"
            out["k"] = kwargs.get("k", cfg.get("k"))
        elif act not in ("relu",) and architecture == "standard":
            raise FormatError(f"{path}: activation function {act!r} is not supported (relu or topk)")
        out["architecture"] = architecture
        out["metadata"] = metadata_from_cfg(cfg).model_dump()
        norm = cfg.get("normalize_activations")
        if isinstance(norm, bool):
            norm = "expected_average_only_in" if norm else "none"
        out["normalize_activations"] = norm or "none"
    else:
        out["metadata"] = metadata_from_cfg(cfg).model_dump()  # drops SAELens None values
    out.setdefault("architecture", "standard")
    if out.get("normalize_activations") not in _IDENTITY_NORMALIZATIONS:
        raise FormatError(
            f"{path}: normalize_activations={out.get('normalize_activations')!r} is a run-time input "
            "transformation saescope does not apply; fold it into the weights or export with 'none'"
        )
    return out


def _dictionary_for_config(cfg: dict[str, Any], path: Path) -> Dictionary:
    """An instance (weights not loaded) for a normalized config."""
    kind = (cfg.get("metadata") or {}).get("saescope_kind", "sae")
    if kind in BASELINE_KINDS:
        from saescope.dictionaries.baselines import BaselineDictionary

        return BaselineDictionary.from_config(cfg)
    architecture = cfg.get("architecture") or "standard"
    if architecture == "jumprelu" and cfg.get("trained_as") == "batchtopk":
        architecture = "batchtopk"
    try:
        cls = dictionary_class(architecture)
        return cls.from_config(cfg)  # type: ignore[attr-defined]
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise FormatError(f"{path}: invalid config for architecture {architecture!r}: {exc}") from exc


def _check_weight_shapes(weights_path: Path, shape: ConfigShape) -> None:
    """Compare the decoder/encoder shapes in the safetensors header with cfg.json, allocating nothing."""
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        raise FormatError(f"{weights_path} is not a readable safetensors file: {exc}") from None
    want = {"W_dec": (shape.d_sae, shape.d_in), "W_enc": (shape.d_in, shape.d_sae)}
    for name, expected in want.items():
        if name in shapes and shapes[name] != expected:
            raise FormatError(
                f"{weights_path}: weights do not match cfg.json: {name} has shape {list(shapes[name])}, "
                f"but d_in {shape.d_in} and d_sae {shape.d_sae} need {list(expected)}"
            )


def check_finite(state: dict[str, torch.Tensor], path: Path | str) -> None:
    """FormatError naming `path` and the tensor when any weight is NaN or infinite."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FormatError(f"{path}: weight {name} holds NaN or infinite values; re-export the dictionary")


def _prepare_state(state: dict[str, torch.Tensor], cfg: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """Float32 tensors; fold a pre-6.0 finetuning `scaling_factor` [d_sae] into W_dec."""
    state = {k: v.float() for k, v in state.items()}
    scale = state.pop("scaling_factor", None)
    if scale is not None and "W_dec" in state:
        if scale.shape != (int(cfg["d_sae"]),):
            raise FormatError(f"{path}: scaling_factor has shape {tuple(scale.shape)}, expected [{cfg['d_sae']}]")
        state["W_dec"] = state["W_dec"] * scale[:, None]
    return state


def load_dictionary(folder: Path) -> Dictionary:
    """Load a SAELens folder (v6 or pre-6.0; standard, topk, jumprelu, batchtopk, or a saescope
    baseline) as a Dictionary in float32 on the CPU."""
    folder = Path(folder)
    try:
        cfg = normalize_config(read_config(folder), folder / CFG_FILE)
    except ValidationError as exc:
        raise FormatError(f"{folder / CFG_FILE}: {_first_problem(exc)}") from None
    shape = check_config_shape(cfg, folder / CFG_FILE)
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.is_file():
        raise FormatError(f"{weights_path} not found: a SAELens folder needs cfg.json and {WEIGHTS_FILE}")
    _check_weight_shapes(weights_path, shape)
    try:
        state = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types
        raise FormatError(f"{weights_path} is not a readable safetensors file: {exc}") from exc
    check_finite(state, weights_path)
    dictionary = _dictionary_for_config(cfg, folder)
    state = _prepare_state(state, cfg, weights_path)
    try:
        dictionary.load_state_dict(state)
    except RuntimeError as exc:
        raise FormatError(f"{weights_path}: weights do not match cfg.json: {exc}") from exc
    return dictionary.float().eval()


def read_sparsity(folder: Path) -> torch.Tensor | None:
    """`[d_sae]` log10 firing density from `sparsity.safetensors`, or None when absent."""
    path = Path(folder) / SPARSITY_FILE
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise FormatError(f"{path} is not a readable safetensors file: {exc}") from exc
    if "sparsity" not in tensors:
        raise FormatError(f"{path} has no tensor named 'sparsity' (found {sorted(tensors)})")
    return tensors["sparsity"].float()
