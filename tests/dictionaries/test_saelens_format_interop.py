"""import_sae / export_sae: SAELens (v6, pre-6.0, release layout) and sparsify folders in, a
folder sae-lens reads with identical encodings out."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from sae_lens import SAE, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata

from saescope.dictionaries.baselines import fit_pca
from saescope.dictionaries.base import DictionaryMetadata
from saescope.dictionaries.interop import detect_format, export_sae, import_sae
from saescope.dictionaries.saelens_format import load_dictionary, read_config, read_sparsity, save_dictionary
from saescope.errors import ConfigError, FormatError, NotFoundError

HOOK = "blocks.1.hook_resid_post"


def _their_topk(tmp_path):
    sae = TopKSAE(TopKSAEConfig(d_in=8, d_sae=24, k=3, metadata=SAEMetadata(hook_name=HOOK, model_name="m")))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    sae.save_model(tmp_path)
    save_file({"sparsity": torch.linspace(-5, -1, 24)}, str(tmp_path / "sparsity.safetensors"))
    return sae


def test_import_of_a_release_layout_writes_a_v6_folder_with_sparsity(tmp_path):
    theirs = _their_topk(tmp_path / "release" / "layer_1")
    report = import_sae(tmp_path / "release", tmp_path / "out", model_name="tiny-lm")
    assert report.source_format == "saelens-v6" and report.architecture == "topk" and report.has_sparsity
    assert report.model_name == "tiny-lm" and report.hook_name == HOOK
    cfg = read_config(tmp_path / "out")
    assert cfg["metadata"]["model_name"] == "tiny-lm" and cfg["k"] == 3
    assert torch.allclose(read_sparsity(tmp_path / "out"), torch.linspace(-5, -1, 24))
    x = torch.randn(16, 8)
    assert torch.allclose(load_dictionary(tmp_path / "out").encode(x), theirs.encode(x).detach(), atol=1e-5)


def test_import_of_a_sparsify_folder_needs_a_hook_and_encodes_like_sparsify(tmp_path):
    d_in, d_sae, k = 6, 20, 4
    g = torch.Generator().manual_seed(1)
    state = {
        "encoder.weight": torch.randn(d_sae, d_in, generator=g),
        "encoder.bias": torch.randn(d_sae, generator=g) * 0.1,
        "W_dec": torch.randn(d_sae, d_in, generator=g),
        "b_dec": torch.randn(d_in, generator=g) * 0.1,
    }
    src = tmp_path / "layers.3"
    src.mkdir()
    (src / "cfg.json").write_text(json.dumps({"expansion_factor": 0, "normalize_decoder": True, "num_latents": d_sae, "k": k, "multi_topk": False, "skip_connection": False, "d_in": d_in}))
    save_file(state, str(src / "sae.safetensors"))
    assert detect_format(src)[0] == "sparsify"
    with pytest.raises(ConfigError, match="hook_name"):
        import_sae(src, tmp_path / "out")
    report = import_sae(src, tmp_path / "out", hook_name="blocks.3.hook_resid_post")
    assert report.source_format == "sparsify" and report.d_sae == d_sae
    x = torch.randn(10, d_in, generator=g)
    # sparsify: relu(encoder(x - b_dec)), keep top k, decode top_acts @ W_dec[idx] + b_dec
    pre = torch.relu((x - state["b_dec"]) @ state["encoder.weight"].T + state["encoder.bias"])
    vals, idx = pre.topk(k, dim=-1)
    expected_recon = (vals.unsqueeze(-1) * state["W_dec"][idx]).sum(1) + state["b_dec"]
    ours = load_dictionary(tmp_path / "out")
    assert torch.allclose(ours.decode(ours.encode(x)).detach(), expected_recon, atol=1e-5)


def test_export_writes_a_folder_sae_lens_loads_identically(tmp_path):
    _their_topk(tmp_path / "src")
    import_sae(tmp_path / "src", tmp_path / "ours")
    (tmp_path / "ours" / "metrics.json").write_text('{"l0": 3.0}')
    out = export_sae(tmp_path / "ours", tmp_path / "exported")
    theirs = SAE.load_from_disk(out)
    x = torch.randn(16, 8)
    assert torch.allclose(theirs.encode(x), load_dictionary(tmp_path / "ours").encode(x), atol=1e-5)
    assert (out / "metrics.json").is_file() and (out / "sparsity.safetensors").is_file()


def test_relu_baselines_export_and_linear_ones_are_refused(tmp_path):
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(2))
    meta = DictionaryMetadata(hook_name=HOOK)
    save_dictionary(fit_pca(x, relu=True, metadata=meta), tmp_path / "pca_relu")
    out = export_sae(tmp_path / "pca_relu", tmp_path / "pca_relu_out")
    theirs = SAE.load_from_disk(out)
    assert torch.allclose(theirs.encode(x.float()), load_dictionary(tmp_path / "pca_relu").encode(x.float()), atol=1e-5)
    save_dictionary(fit_pca(x, metadata=meta), tmp_path / "pca")
    with pytest.raises(ConfigError, match="linear pca baseline"):
        export_sae(tmp_path / "pca", tmp_path / "pca_out")


def test_import_errors_name_the_path(tmp_path):
    with pytest.raises(NotFoundError, match="nowhere"):
        import_sae(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="empty has no cfg.json"):
        import_sae(tmp_path / "empty", tmp_path / "out")
