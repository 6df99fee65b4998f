"""SAELens folders: our reader against folders written by the installed sae-lens package, and
sae-lens reading folders we write; pre-6.0 configs; malformed folders."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from sae_lens import (
    SAE,
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.saelens_format import load_dictionary, read_sparsity, save_dictionary
from saescope.dictionaries.architectures.standard import StandardSAE as OurStandardSAE
from saescope.errors import FormatError

D_IN, D_SAE = 12, 40
HOOK = "blocks.0.hook_resid_post"


def _randomize(sae, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name != "threshold" else 0.1).__abs__())
            if name == "threshold":
                p.abs_()
    return sae


def _sae_lens(arch: str, seed: int = 0):
    meta = SAEMetadata(hook_name=HOOK, model_name="tiny", context_size=32, prepend_bos=True)
    if arch == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta))
    elif arch == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=5, metadata=meta))
    else:
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta))
    return _randomize(sae, seed)


def _inputs(seed: int = 1):
    return torch.randn(64, D_IN, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_sae_lens_save_model_folders_load_with_identical_encodings(tmp_path, arch):
    theirs = _sae_lens(arch)
    theirs.save_model(tmp_path)
    ours = load_dictionary(tmp_path)
    x = _inputs()
    assert ours.architecture == arch and ours.d_sae == D_SAE and ours.metadata.hook_name == HOOK
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), theirs.encode(x), atol=1e-5)
        assert torch.allclose(ours.decode(ours.encode(x)), theirs.decode(theirs.encode(x)), atol=1e-5)


def _training_sae(arch: str, seed: int = 0):
    meta = SAEMetadata(hook_name=HOOK, model_name="tiny")
    cfgs = {
        "standard": (StandardTrainingSAE, StandardTrainingSAEConfig, {}),
        "topk": (TopKTrainingSAE, TopKTrainingSAEConfig, {"k": 4}),  # rescale_acts_by_decoder_norm=True
        "jumprelu": (JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig, {}),
        "batchtopk": (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, {"k": 4}),
    }
    cls, cfg_cls, extra = cfgs[arch]
    sae = _randomize(cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, metadata=meta, **extra)), seed)
    if arch == "batchtopk":
        sae.topk_threshold.fill_(0.2)
    return sae


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu", "batchtopk"])
def test_sae_lens_inference_folders_from_training_saes_load_identically(tmp_path, arch):
    _training_sae(arch, seed=4).save_inference_model(tmp_path)
    theirs = SAE.load_from_disk(tmp_path)
    ours = load_dictionary(tmp_path)
    x = _inputs(5)
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(x)
        assert torch.allclose(f_ours, f_theirs, atol=1e-5)
        assert (f_ours > 0).any()
        assert torch.allclose(ours.decode(f_ours), theirs.decode(f_theirs), atol=1e-5)


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_sae_lens_reads_our_folders_with_identical_encodings(tmp_path, arch):
    ours = load_dictionary(_sae_lens(arch, seed=3).save_model(tmp_path / "src")[0].parent)
    save_dictionary(ours, tmp_path / "out", log10_sparsity=torch.full((D_SAE,), -2.0))
    theirs = SAE.load_from_disk(tmp_path / "out")
    x = _inputs(2)
    with torch.no_grad():
        assert torch.allclose(theirs.encode(x), ours.encode(x), atol=1e-5)
    assert theirs.cfg.metadata.hook_name == HOOK
    assert torch.equal(read_sparsity(tmp_path / "out"), torch.full((D_SAE,), -2.0))


def test_our_standard_sae_round_trips_through_sae_lens(tmp_path):
    ours = OurStandardSAE(D_IN, D_SAE, DictionaryMetadata(hook_name=HOOK, model_name="tiny"))
    _randomize(ours, 5)
    save_dictionary(ours, tmp_path)
    theirs = SAE.load_from_disk(tmp_path)
    assert theirs.cfg.metadata.hook_name == HOOK and theirs.cfg.metadata.model_name == "tiny"
    x = _inputs(3)
    with torch.no_grad():
        assert torch.allclose(theirs.encode(x), ours.encode(x), atol=1e-5)
        assert torch.allclose(load_dictionary(tmp_path).encode(x), ours.encode(x))


def _pre6_folder(tmp_path, theirs, extra: dict):
    cfg = {
        "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu", "model_name": "gpt2-tiny",
        "hook_point": HOOK, "hook_point_layer": 0, "hook_point_head_index": None, "context_size": 64,
        "prepend_bos": True, "dataset_path": "stdlib", "apply_b_dec_to_input": True,
        "normalize_activations": False, "sae_lens_training_version": "3.12.0", **extra,
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.detach().contiguous() for k, v in theirs.state_dict().items()}, str(tmp_path / "sae_weights.safetensors"))
    return tmp_path


def test_pre_6_relu_config_loads_as_standard(tmp_path):
    theirs = _sae_lens("standard", 7)
    ours = load_dictionary(_pre6_folder(tmp_path, theirs, {"activation_fn_str": "relu", "hook_layer": 0}))
    assert ours.architecture == "standard" and ours.metadata.hook_name == HOOK and ours.metadata.model_name == "gpt2-tiny"
    assert ours.metadata.context_size == 64
    x = _inputs()
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), theirs.encode(x), atol=1e-5)


def test_pre_6_topk_config_reads_k_from_activation_fn_kwargs(tmp_path):
    theirs = _sae_lens("topk", 8)
    ours = load_dictionary(_pre6_folder(tmp_path, theirs, {"activation_fn_str": "topk", "activation_fn_kwargs": {"k": 5}}))
    assert ours.architecture == "topk" and ours.k == 5
    x = _inputs()
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), theirs.encode(x), atol=1e-5)
        assert (ours.encode(x) > 0).sum(-1).max() <= 5


def test_pre_6_finetuning_scaling_factor_is_folded_into_the_decoder(tmp_path):
    theirs = _sae_lens("standard", 9)
    _pre6_folder(tmp_path, theirs, {"activation_fn_str": "relu", "finetuning_scaling_factor": True})
    state = {k: v.detach().contiguous() for k, v in theirs.state_dict().items()}
    state["scaling_factor"] = torch.linspace(0.5, 2.0, D_SAE)
    save_file(state, str(tmp_path / "sae_weights.safetensors"))
    ours = load_dictionary(tmp_path)
    x = _inputs()
    f = theirs.encode(x).detach()
    expected = (f * state["scaling_factor"]) @ state["W_dec"] + state["b_dec"]
    assert torch.allclose(ours.decode(ours.encode(x)).detach(), expected, atol=1e-5)


def test_malformed_folders_raise_format_errors_naming_the_path(tmp_path):
    with pytest.raises(FormatError, match="missing-folder"):
        load_dictionary(tmp_path / "missing-folder")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "cfg.json").write_text("{not json")
    with pytest.raises(FormatError, match="a/cfg.json"):
        load_dictionary(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "cfg.json").write_text(json.dumps({"d_in": 4, "d_sae": 8, "metadata": {}}))
    with pytest.raises(FormatError, match="sae_weights.safetensors"):
        load_dictionary(tmp_path / "b")
    save_file({"W_enc": torch.zeros(3, 3)}, str(tmp_path / "b" / "sae_weights.safetensors"))
    with pytest.raises(FormatError, match="do not match"):
        load_dictionary(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "cfg.json").write_text(json.dumps({"d_in": 4, "d_sae": 8, "architecture": "matryoshka", "metadata": {}}))
    save_file({"W_enc": torch.zeros(4, 8)}, str(tmp_path / "c" / "sae_weights.safetensors"))
    with pytest.raises(FormatError, match="matryoshka"):
        load_dictionary(tmp_path / "c")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "cfg.json").write_text(json.dumps({"d_in": 4, "d_sae": 8, "normalize_activations": "layer_norm", "metadata": {}}))
    with pytest.raises(FormatError, match="layer_norm"):
        load_dictionary(tmp_path / "d")
