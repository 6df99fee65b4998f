"""The architecture registry round-trips through SAELens 6 folders in both directions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saescope.dictionaries.architectures import ARCHITECTURES, dictionary_class, dictionary_from_config
from saescope.dictionaries.saelens_format import load_dictionary, save_dictionary
from saescope.errors import FormatError

D, S = 12, 40


def _randomise(d: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in d.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.05 if name == "threshold" else 0.4))
            if name == "threshold":
                p.abs_()


def _x() -> torch.Tensor:
    return torch.randn(30, D, generator=torch.Generator().manual_seed(5))


def test_registry_holds_the_saelens_v6_names() -> None:
    assert set(ARCHITECTURES) == {"standard", "topk", "batchtopk", "jumprelu", "gated"}
    with pytest.raises(FormatError, match="unknown SAE architecture 'matryoshka'"):
        dictionary_class("matryoshka")


def test_every_training_architecture_comes_from_its_own_module() -> None:
    from saescope.dictionaries.architectures import TRAINING_SPECS

    assert set(TRAINING_SPECS) == {"relu", "topk", "batchtopk", "jumprelu", "gated"}
    for name, spec in TRAINING_SPECS.items():
        assert type(spec).__module__.startswith("saescope.dictionaries.architectures."), name


@pytest.mark.parametrize("name", ["standard", "topk", "batchtopk", "jumprelu", "gated"])
def test_each_class_builds_from_a_cfg_dict_with_saelens_tensor_names(name: str) -> None:
    d = dictionary_from_config({"architecture": name, "d_in": D, "d_sae": S, "k": 5})
    names = set(d.state_dict())
    encoder_biases = {"b_gate", "r_mag", "b_mag"} if name == "gated" else {"b_enc"}
    assert {"W_enc", "W_dec", "b_dec"} | encoder_biases <= names
    assert ("threshold" in names) == (name in ("jumprelu", "batchtopk"))
    assert d.W_enc.shape == (D, S) and d.W_dec.shape == (S, D)


@pytest.mark.parametrize("name", ["standard", "topk", "batchtopk", "jumprelu", "gated"])
def test_saelens_loads_our_folders_and_encodes_identically(tmp_path: Path, name: str) -> None:
    from sae_lens import SAE

    d = dictionary_from_config({"architecture": name, "d_in": D, "d_sae": S, "k": 5})
    _randomise(d)
    save_dictionary(d, tmp_path)
    theirs = SAE.load_from_disk(str(tmp_path), device="cpu")
    expected_arch = "jumprelu" if name == "batchtopk" else name
    assert theirs.cfg.architecture() == expected_arch
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), d.encode(x))
        torch.testing.assert_close(theirs.decode(d.encode(x)), d.decode(d.encode(x)))


@pytest.mark.parametrize("name", ["topk", "batchtopk", "jumprelu", "standard", "gated"])
def test_folders_saved_by_saelens_training_saes_load_and_encode_identically(tmp_path: Path, name: str) -> None:
    from sae_lens.registry import get_sae_training_class

    cls, cfg_cls = get_sae_training_class(name)
    extra = {"k": 5} if name in ("topk", "batchtopk") else {}
    sae = cls(cfg_cls(d_in=D, d_sae=S, dtype="float32", device="cpu", **extra))
    _randomise(sae, seed=1)
    if name == "batchtopk":
        sae.topk_threshold = torch.tensor(0.3, dtype=torch.double)
    sae.save_inference_model(str(tmp_path))
    ours = load_dictionary(tmp_path)
    x = _x()
    from sae_lens import SAE

    theirs = SAE.load_from_disk(str(tmp_path), device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x))
        torch.testing.assert_close(ours(x), theirs.decode(theirs.encode(x)))


def test_a_trained_gated_sae_is_evaluated_saved_and_read_by_sae_lens(tmp_path: Path) -> None:
    """The gated architecture, added as one module: trained, evaluated on a model, saved, read by sae-lens."""
    import numpy as np
    from sae_lens import SAE
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from saescope.dictionaries.base import DictionaryMetadata
    from saescope.dictionaries.evaluation import evaluate_dictionary
    from saescope.dictionaries.training import SAETrainingConfig, train_sae

    hook = "blocks.0.mlp.hook_post"
    lm = HookedTransformer(HookedTransformerConfig(
        n_layers=1, d_model=16, d_head=4, n_heads=4, d_mlp=32, d_vocab=100, n_ctx=16,
        act_fn="gelu", normalization_type="LN", seed=0, device="cpu",
    )).eval()
    tokens = np.random.default_rng(1).integers(1, 100, size=(64, 16), dtype=np.int64)
    with torch.no_grad():
        _, cache = lm.run_with_cache(torch.from_numpy(tokens), names_filter=hook)
    acts = cache[hook].reshape(-1, 32)
    config = SAETrainingConfig(architecture="gated", d_sae=64, l1=0.5, tokens=8192, batch_size=256, lr=3e-3)
    result = train_sae(config, [acts] * 8, DictionaryMetadata(hook_name=hook, model_name="tiny"), progress=False)
    gated = result.dictionary
    assert gated.architecture == "gated" and gated.hyperparameters()["trained_as"] == "gated"
    metrics = evaluate_dictionary(lm, gated, tokens[:8])
    assert 0.0 < metrics.l0 < 64 and metrics.explained_variance > 0.3
    save_dictionary(gated, tmp_path)
    theirs = SAE.load_from_disk(str(tmp_path), device="cpu")
    assert theirs.cfg.architecture() == "gated"
    x = acts[:50]
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), gated.encode(x), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(load_dictionary(tmp_path).encode(x), gated.encode(x))
