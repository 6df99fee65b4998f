"""Hook names: validation, dimensions, layers, per-head reshaping."""

from __future__ import annotations

import pytest
import torch

from saescope.activations.hooks import (
    flatten_hook_activation,
    hook_dimension,
    hook_layer,
    stop_layer_for,
    unflatten_into_hook,
    validate_hook_name,
)
from saescope.activations.stream import hook_activations
from saescope.errors import ConfigError


@pytest.mark.parametrize(
    "hook,dim",
    [
        ("blocks.0.hook_resid_pre", 16),
        ("blocks.1.hook_resid_mid", 16),
        ("blocks.1.hook_resid_post", 16),
        ("blocks.0.mlp.hook_post", 64),
        ("blocks.0.hook_mlp_out", 16),
        ("blocks.1.hook_attn_out", 16),
        ("blocks.0.attn.hook_z", 16),
        ("hook_embed", 16),
        ("ln_final.hook_normalized", 16),
        ("blocks.0.mlp.hook_pre", 64),
    ],
)
def test_hook_dimension_matches_the_activations(random_lm, random_tokens, hook, dim):
    assert hook_dimension(random_lm, hook) == dim
    acts = hook_activations(random_lm, torch.as_tensor(random_tokens[:2]), hook)
    assert acts.shape == (2, 16, dim)


def test_hook_layer_and_stop_layer():
    assert hook_layer("blocks.3.mlp.hook_post") == 3 and hook_layer("hook_embed") is None
    assert stop_layer_for("blocks.0.hook_resid_post", 2) == 1
    assert stop_layer_for("ln_final.hook_normalized", 2) is None


def test_invalid_hooks_raise_config_errors(random_lm):
    with pytest.raises(ConfigError, match="blocks.1.hook_resid_post"):
        validate_hook_name(random_lm, "mlp_out")
    with pytest.raises(ConfigError, match="one activation vector per token"):
        validate_hook_name(random_lm, "blocks.0.attn.hook_pattern")
    with pytest.raises(ConfigError, match="no head dimension"):
        validate_hook_name(random_lm, "blocks.0.hook_resid_post", hook_head_index=0)
    with pytest.raises(ConfigError, match="out of range"):
        validate_hook_name(random_lm, "blocks.0.attn.hook_z", hook_head_index=4)


def test_unflatten_inverts_flatten_for_per_head_tensors():
    raw = torch.randn(2, 5, 4, 3)
    flat = flatten_hook_activation(raw)
    assert flat.shape == (2, 5, 12)
    assert torch.equal(unflatten_into_hook(raw, flat), raw)
    one = flatten_hook_activation(raw, 1)
    back = unflatten_into_hook(raw, torch.zeros_like(one), 1)
    assert torch.equal(back[:, :, 0], raw[:, :, 0]) and back[:, :, 1].abs().sum() == 0
