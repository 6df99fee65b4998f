"""cfg.json sizes are validated before a dictionary is built, and NaN/Inf weights are refused at load."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from saescope.dictionaries.architectures.topk import TopKSAE
from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.interop import load_sparsify
from saescope.dictionaries.saelens_format import CFG_FILE, check_config_shape, load_dictionary, save_dictionary
from saescope.errors import FormatError


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"d_in": 8, "d_sae": -5}, "d_sae must be at least 1 (got -5)"),
        ({"d_in": 8, "d_sae": 10**9}, "d_sae must be at most"),
        ({"d_in": 8, "d_sae": 512.5}, "d_sae must be a whole number (got 512.5)"),
        ({"d_in": "8", "d_sae": 16}, "d_in must be a whole number"),
        ({"d_in": True, "d_sae": 16}, "d_in must be a whole number"),
        ({"architecture": "topk", "d_in": 8, "d_sae": 16, "k": 2.5}, "k must be a whole number"),
        ({"architecture": "topk", "d_in": 8, "d_sae": 16, "k": 17}, "larger than d_sae"),
    ],
)
def test_a_config_with_bad_sizes_is_refused_naming_the_field(cfg: dict, message: str) -> None:
    with pytest.raises(FormatError, match=re.escape(message)) as info:
        check_config_shape(cfg, "cfg.json")
    assert str(info.value).startswith("cfg.json: ")


def test_a_fractional_k_in_a_pre_v6_topk_config_is_not_truncated(tmp_path: Path) -> None:
    sae = TopKSAE(8, 16, 4, DictionaryMetadata(hook_name="blocks.0.hook_resid_post"))
    save_dictionary(sae, tmp_path)
    (tmp_path / CFG_FILE).write_text(json.dumps({"d_in": 8, "d_sae": 16, "hook_point": "blocks.0.hook_resid_post",
                                                 "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4.5}}))
    with pytest.raises(FormatError, match="k must be a whole number"):
        load_dictionary(tmp_path)


def test_a_config_larger_than_its_weights_is_refused_before_allocating(tmp_path: Path) -> None:
    sae = TopKSAE(8, 16, 4, DictionaryMetadata(hook_name="blocks.0.hook_resid_post"))
    save_dictionary(sae, tmp_path)
    cfg = json.loads((tmp_path / CFG_FILE).read_text())
    cfg["d_sae"] = 1 << 24  # building this would allocate 8 x 16M floats twice
    (tmp_path / CFG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match=r"weights do not match cfg.json: W_\w+ has shape"):
        load_dictionary(tmp_path)


def _sparsify(folder: Path, k: object = 4, poison: bool = False) -> Path:
    g = torch.Generator().manual_seed(1)
    state = {"encoder.weight": torch.randn(20, 6, generator=g), "encoder.bias": torch.zeros(20),
             "W_dec": torch.randn(20, 6, generator=g), "b_dec": torch.zeros(6)}
    if poison:
        state["W_dec"][0, 0] = float("inf")
    folder.mkdir()
    (folder / CFG_FILE).write_text(json.dumps({"num_latents": 20, "k": k, "d_in": 6}))
    save_file(state, str(folder / "sae.safetensors"))
    return folder


def test_a_sparsify_folder_with_a_fractional_k_or_infinite_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="k must be a whole number"):
        load_sparsify(_sparsify(tmp_path / "k", k=3.5))
    with pytest.raises(FormatError, match="W_dec holds NaN or infinite values"):
        load_sparsify(_sparsify(tmp_path / "inf", poison=True))
    assert load_sparsify(_sparsify(tmp_path / "ok")).d_sae == 20
