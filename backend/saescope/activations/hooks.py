"""Hook point names: validation, layer lookup, dimensions and per-head reshaping.

Owns the public vocabulary of hook points (transformer_lens names such as `blocks.0.mlp.hook_post`,
`blocks.3.hook_resid_post`, `blocks.5.hook_attn_out`, `blocks.2.attn.hook_z`) and the conversion
between the raw hook tensor (`[batch, pos, ...]`) and the flat activation rows a dictionary sees
(`[batch, pos, d_in]`). It never runs training or evaluation and imports no later stage.

Per-head hooks (`attn.hook_z/q/k/v/result`) have shape `[batch, pos, n_heads, d_head]`; they are
flattened to `n_heads * d_head` unless `hook_head_index` selects one head (`d_in = d_head`).
"""

from __future__ import annotations

import difflib
import re
from typing import Any

import torch
from torch import Tensor

from saescope.errors import ConfigError

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")

# Hook suffixes after `blocks.L.` whose activations are [batch, pos, d_model].
_RESID_LIKE = {
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
    "hook_attn_in",
    "hook_mlp_in",
    "hook_q_input",
    "hook_k_input",
    "hook_v_input",
    "ln1.hook_normalized",
    "ln2.hook_normalized",
}
_MLP_LIKE = {"mlp.hook_pre", "mlp.hook_post", "mlp.hook_pre_linear"}
_PER_HEAD = {"attn.hook_z", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_result"}
# Hooks whose tensors are not one activation vector per token.
_UNSUPPORTED = {"attn.hook_pattern", "attn.hook_attn_scores", "ln1.hook_scale", "ln2.hook_scale"}


# Other transformer_lens hooks inside a block (not SAE inputs, but real names).
_OTHER_BLOCK_HOOKS = {"attn.hook_rot_q", "attn.hook_rot_k", "mlp.hook_expert_weights", "mlp.hook_expert_indices"}
_KNOWN_BLOCK_HOOKS = _RESID_LIKE | _MLP_LIKE | _PER_HEAD | _UNSUPPORTED | _OTHER_BLOCK_HOOKS
_KNOWN_TOP_HOOKS = {"hook_embed", "hook_pos_embed", "hook_tokens", "ln_final.hook_normalized", "ln_final.hook_scale"}


def check_hook_name_for_layers(hook_name: str, n_layers: int, attn_only: bool = False) -> str:
    """Check `hook_name` against a model's layer count before the model is loaded; returns it.

    Catches what needs no weights: a block index out of range, a suffix that is no transformer_lens
    hook (with the closest known one suggested), MLP hooks of an attention-only model, and hooks that
    are not one vector per token. `validate_hook_name` checks the loaded model's own hook list later.
    """
    last = max(int(n_layers) - 1, 0)
    layer = hook_layer(hook_name)
    suffix = hook_suffix(hook_name)
    if layer is None:
        if hook_name not in _KNOWN_TOP_HOOKS:
            raise ConfigError(_unknown_hook_message(hook_name, suffix, last))
        return hook_name
    if layer >= n_layers:
        raise ConfigError(
            f"hook point {hook_name!r} names block {layer}, but the model has {n_layers} layers "
            f"(blocks.0 to blocks.{last}); e.g. blocks.{last}.{suffix}"
        )
    if suffix not in _KNOWN_BLOCK_HOOKS and not suffix.startswith("mlp.experts."):
        raise ConfigError(_unknown_hook_message(hook_name, suffix, layer))
    if attn_only and (suffix.startswith("mlp.") or suffix in ("hook_mlp_out", "hook_mlp_in", "hook_resid_mid")):
        raise ConfigError(f"hook point {hook_name!r} is an MLP hook, but the model is attention-only")
    if suffix in _UNSUPPORTED:
        raise ConfigError(
            f"hook point {hook_name!r} is not one activation vector per token; "
            f"use e.g. blocks.{layer}.hook_resid_post or blocks.{layer}.mlp.hook_post"
        )
    return hook_name


def _unknown_hook_message(hook_name: str, suffix: str, layer: int) -> str:
    close = difflib.get_close_matches(suffix, sorted(_KNOWN_BLOCK_HOOKS), n=1)
    hint = f"did you mean blocks.{layer}.{close[0]}? " if close else ""
    return (f"unknown hook point {hook_name!r}: {hint}use a transformer_lens hook name such as "
            f"blocks.{layer}.hook_resid_post, blocks.{layer}.mlp.hook_post or blocks.{layer}.attn.hook_z")


def example_hook_names(model: Any) -> list[str]:
    """A few valid hook names for `model`, for error messages and CLI help."""
    last = max(int(model.cfg.n_layers) - 1, 0)
    names = [
        f"blocks.{last}.hook_resid_post",
        "blocks.0.hook_resid_pre",
        f"blocks.{last}.hook_resid_mid",
        f"blocks.{last}.hook_attn_out",
        f"blocks.{last}.hook_mlp_out",
        f"blocks.{last}.attn.hook_z",
    ]
    if not getattr(model.cfg, "attn_only", False):
        names.insert(0, f"blocks.{last}.mlp.hook_post")
    return names


def hook_layer(hook_name: str) -> int | None:
    """The block index of a `blocks.L.*` hook, or None for hooks outside blocks (`hook_embed`)."""
    match = _BLOCK_RE.match(hook_name)
    return int(match.group(1)) if match else None


def hook_suffix(hook_name: str) -> str:
    """The part after `blocks.L.` (`mlp.hook_post`), or the whole name for non-block hooks."""
    return _BLOCK_RE.sub("", hook_name)


def is_per_head_hook(hook_name: str) -> bool:
    """True for `blocks.L.attn.hook_z/q/k/v/result` (tensors `[batch, pos, n_heads, d_head]`)."""
    return hook_suffix(hook_name) in _PER_HEAD


def stop_layer_for(hook_name: str, n_layers: int) -> int | None:
    """`stop_at_layer` that still computes `hook_name`: L+1 for block hooks, None otherwise
    (None runs the whole model, needed for `ln_final.*`)."""
    layer = hook_layer(hook_name)
    if layer is None:
        return 0 if hook_name in ("hook_embed", "hook_pos_embed", "hook_tokens") else None
    return min(layer + 1, n_layers)


def validate_hook_name(model: Any, hook_name: str, hook_head_index: int | None = None) -> str:
    """Check that `hook_name` exists in `model` and yields one vector per token; returns it.

    Raises ConfigError naming valid examples when the hook is unknown, is an attention pattern, or
    when `hook_head_index` is out of range / given for a hook that has no heads.
    """
    if not isinstance(hook_name, str) or hook_name not in model.hook_dict:
        examples = ", ".join(example_hook_names(model))
        raise ConfigError(
            f"unknown hook point {hook_name!r} for this model ({model.cfg.n_layers} layers); "
            f"use a transformer_lens hook name such as {examples}"
        )
    suffix = hook_suffix(hook_name)
    if suffix in _UNSUPPORTED:
        raise ConfigError(
            f"hook point {hook_name!r} is not one activation vector per token; "
            f"use e.g. {', '.join(example_hook_names(model)[:3])}"
        )
    if hook_head_index is not None:
        if suffix not in _PER_HEAD:
            raise ConfigError(
                f"hook_head_index={hook_head_index} only applies to per-head hooks "
                f"(blocks.L.attn.hook_z); {hook_name!r} has no head dimension"
            )
        n_heads = int(model.cfg.n_heads)
        if not 0 <= int(hook_head_index) < n_heads:
            raise ConfigError(f"hook_head_index={hook_head_index} out of range: the model has {n_heads} heads")
    return hook_name


def hook_dimension(model: Any, hook_name: str, hook_head_index: int | None = None) -> int:
    """`d_in` of the flattened activations at `hook_name` (after head flattening/selection)."""
    validate_hook_name(model, hook_name, hook_head_index)
    cfg = model.cfg
    suffix = hook_suffix(hook_name)
    if suffix in _PER_HEAD:
        d_head = int(cfg.d_model) if suffix == "attn.hook_result" else int(cfg.d_head)
        return d_head if hook_head_index is not None else int(cfg.n_heads) * d_head
    if suffix in _RESID_LIKE or hook_name in ("hook_embed", "hook_pos_embed", "ln_final.hook_normalized"):
        return int(cfg.d_model)
    if suffix in _MLP_LIKE and cfg.d_mlp is not None:
        return int(cfg.d_mlp)
    # Anything else (MoE, custom hooks): measure with a one-token forward.
    return _measure_dimension(model, hook_name, hook_head_index)


def _measure_dimension(model: Any, hook_name: str, hook_head_index: int | None) -> int:
    captured: list[Tensor] = []

    def grab(act: Tensor, hook: Any) -> None:
        captured.append(act)

    tokens = torch.zeros(1, 2, dtype=torch.long, device=model.cfg.device)
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(hook_name, grab)], return_type=None)
    return int(flatten_hook_activation(captured[0], hook_head_index).shape[-1])


def flatten_hook_activation(act: Tensor, hook_head_index: int | None = None) -> Tensor:
    """`[batch, pos, d]` from a raw hook tensor: per-head `[batch, pos, n_heads, d_head]` is
    flattened to `n_heads*d_head`, or one head is selected when `hook_head_index` is given."""
    if act.ndim == 4:
        if hook_head_index is not None:
            return act[:, :, int(hook_head_index), :]
        return act.reshape(act.shape[0], act.shape[1], -1)
    if act.ndim != 3:
        raise ConfigError(f"hook activation has shape {tuple(act.shape)}; expected [batch, pos, d]")
    return act


def unflatten_into_hook(original: Tensor, replacement: Tensor, hook_head_index: int | None = None) -> Tensor:
    """Inverse of `flatten_hook_activation`: a tensor shaped like `original` (the raw hook tensor)
    with the flat `replacement [batch, pos, d]` written in (only one head when `hook_head_index`)."""
    replacement = replacement.to(original.dtype)
    if original.ndim == 4:
        if hook_head_index is not None:
            out = original.clone()
            out[:, :, int(hook_head_index), :] = replacement
            return out
        return replacement.reshape(original.shape)
    return replacement
