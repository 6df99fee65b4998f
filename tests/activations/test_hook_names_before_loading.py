"""`check_hook_name_for_layers`: hook names checked against a model's layer count before loading."""

from __future__ import annotations

import pytest

from saescope.activations.hooks import check_hook_name_for_layers
from saescope.errors import ConfigError


@pytest.mark.parametrize("hook", ["blocks.0.mlp.hook_post", "blocks.29.hook_resid_post", "blocks.3.attn.hook_z",
                                  "hook_embed", "ln_final.hook_normalized", "blocks.2.mlp.experts.1.hook_post"])
def test_real_hook_names_pass(hook: str) -> None:
    assert check_hook_name_for_layers(hook, 30) == hook


def test_a_block_beyond_the_last_layer_is_refused_with_the_range() -> None:
    with pytest.raises(ConfigError, match=r"has 30 layers \(blocks.0 to blocks.29\)"):
        check_hook_name_for_layers("blocks.30.hook_resid_post", 30)


def test_a_misspelt_suffix_is_refused_with_the_closest_name() -> None:
    with pytest.raises(ConfigError, match="did you mean blocks.4.hook_resid_post"):
        check_hook_name_for_layers("blocks.4.hook_resid_pots", 30)


def test_an_unknown_top_level_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown hook point"):
        check_hook_name_for_layers("resid_post", 30)


def test_mlp_hooks_of_an_attention_only_model_are_refused() -> None:
    with pytest.raises(ConfigError, match="attention-only"):
        check_hook_name_for_layers("blocks.0.mlp.hook_post", 2, attn_only=True)


def test_an_attention_pattern_is_refused_as_not_one_vector_per_token() -> None:
    with pytest.raises(ConfigError, match="not one activation vector per token"):
        check_hook_name_for_layers("blocks.0.attn.hook_pattern", 2)
