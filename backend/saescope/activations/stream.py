"""Streaming hook-point activations from a transformer_lens model, batch by batch.

Owns the one forward loop that turns token contexts `[n, n_ctx]` into flat activation rows
`[n_tokens, d_in]` at a hook point: it runs only as many blocks as the hook needs
(`stop_at_layer`), under `torch.no_grad`, and drops the BOS column (position 0) unless asked to keep
it. It knows nothing about dictionaries, training or storage.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from saescope.activations.hooks import flatten_hook_activation, stop_layer_for, validate_hook_name
from saescope.errors import InputError


def as_token_tensor(tokens: Any, device: torch.device | str | None = None) -> Tensor:
    """`[n, n_ctx]` int64 tensor from a numpy array, list, tensor or `PackedContexts` (its
    `.tokens`); InputError for other shapes or non-integer ids."""
    if not isinstance(tokens, (Tensor, np.ndarray, list, tuple)) and hasattr(tokens, "tokens"):
        tokens = tokens.tokens
    if isinstance(tokens, Tensor):
        t = tokens
    else:
        t = torch.as_tensor(np.asarray(tokens))
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2:
        raise InputError(f"tokens must be [n_contexts, n_ctx]; got shape {tuple(t.shape)}", field="tokens")
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise InputError(f"tokens must be integer token ids; got dtype {t.dtype}", field="tokens")
    return t.to(device=device, dtype=torch.long) if device is not None else t.long()


def check_tokens_fit_model(model: Any, tokens: Tensor) -> None:
    """InputError when contexts are longer than the model's n_ctx or ids exceed its vocabulary."""
    n_ctx, d_vocab = int(model.cfg.n_ctx), int(model.cfg.d_vocab)
    if tokens.shape[1] > n_ctx:
        raise InputError(f"contexts have {tokens.shape[1]} tokens but the model's n_ctx is {n_ctx}", field="tokens")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= d_vocab):
        raise InputError(
            f"token ids must lie in [0, {d_vocab}); got [{int(tokens.min())}, {int(tokens.max())}]: "
            "were the contexts tokenised with this model's tokenizer?",
            field="tokens",
        )


def model_device(model: Any) -> torch.device:
    """The device the model's parameters live on."""
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - models always have parameters
        return torch.device("cpu")


def hook_activations(
    model: Any,
    tokens: Tensor,
    hook_name: str,
    hook_head_index: int | None = None,
) -> Tensor:
    """`[batch, pos, d_in]` activations at `hook_name` for one batch of contexts `tokens [batch, pos]`.

    Runs the model only up to the hook's block. No validation: call `validate_hook_name` first.
    """
    captured: list[Tensor] = []

    def grab(act: Tensor, hook: Any) -> None:
        captured.append(act.detach())

    stop = stop_layer_for(hook_name, int(model.cfg.n_layers))
    with torch.no_grad():
        with model.hooks(fwd_hooks=[(hook_name, grab)]):
            if stop is None:
                model(tokens, return_type=None)
            else:
                model(tokens, stop_at_layer=stop)
    if not captured:
        raise InputError(f"hook {hook_name!r} did not fire during the forward pass", field="hook_name")
    return flatten_hook_activation(captured[0], hook_head_index)


def iter_activation_batches(
    model: Any,
    tokens: Any,
    hook_name: str,
    contexts_per_batch: int = 32,
    device: torch.device | str | None = None,
    include_bos: bool = False,
    hook_head_index: int | None = None,
    dtype: torch.dtype | None = torch.float32,
) -> Iterator[Tensor]:
    """Yield activation rows `[contexts_per_batch * (n_ctx - 1), d_in]` at `hook_name`.

    `tokens` is `[n_contexts, n_ctx]` (numpy or torch). Position 0 (the BOS token of every context)
    is dropped unless `include_bos`. `device` defaults to the model's device; rows are returned on
    it, as `dtype` (float32 by default; None keeps the model's dtype). The last batch may be smaller.
    """
    validate_hook_name(model, hook_name, hook_head_index)
    if contexts_per_batch < 1:
        raise InputError("contexts_per_batch must be >= 1", field="contexts_per_batch")
    run_device = model_device(model)
    out_device = torch.device(device) if device is not None else run_device
    all_tokens = as_token_tensor(tokens)
    check_tokens_fit_model(model, all_tokens)
    for start in range(0, all_tokens.shape[0], contexts_per_batch):
        batch = all_tokens[start : start + contexts_per_batch].to(run_device)
        acts = hook_activations(model, batch, hook_name, hook_head_index)  # [b, pos, d]
        if not include_bos:
            acts = acts[:, 1:, :]
        rows = acts.reshape(-1, acts.shape[-1])
        if dtype is not None:
            rows = rows.to(dtype)
        yield rows.to(out_device)


def multi_hook_activations(model: Any, tokens: Tensor, hook_names: Sequence[str]) -> dict[str, Tensor]:
    """Raw hook tensors for every name in `hook_names` from ONE forward pass over `tokens [b, pos]`,
    stopping after the deepest block needed."""
    captured: dict[str, Tensor] = {}

    def grab(act: Tensor, hook: Any) -> None:
        captured[hook.name] = act.detach()

    n_layers = int(model.cfg.n_layers)
    stops = [stop_layer_for(h, n_layers) for h in hook_names]
    stop = None if any(s is None for s in stops) else max(int(s) for s in stops)  # type: ignore[arg-type]
    with torch.no_grad():
        with model.hooks(fwd_hooks=[(h, grab) for h in dict.fromkeys(hook_names)]):
            if stop is None or stop >= n_layers:
                model(tokens, return_type=None)
            else:
                model(tokens, stop_at_layer=stop)
    missing = [h for h in hook_names if h not in captured]
    if missing:
        raise InputError(f"hook points {missing} did not fire during the forward pass", field="hook_name")
    return captured
