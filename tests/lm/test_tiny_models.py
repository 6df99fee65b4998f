"""The tiny real-architecture fixtures (Llama folder, GPT-2 folder, Llama GGUF) load through `load_lm`
into HookedTransformers that compute the transformers models' own predictions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saescope.corpus.encoding import encode_text, tokenizer_adds_bos
from saescope.lm.loading import lm_info, load_lm

TEXT = "The quick brown fox jumps over the lazy dog. def f(x): return x + 1\n" * 2  # < 128 tokens


def _log_probs_of_both(location: Path, hf_folder: Path, hf_class: type) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Log-probabilities of TEXT from the HookedTransformer at `location` and the transformers model
    of `hf_folder` (HookedTransformer logits are centred, so log-probabilities are compared)."""
    model = load_lm(location)
    tokens = encode_text(model.tokenizer, TEXT, prepend_bos=True)
    batch = torch.tensor([tokens])
    hf_model = hf_class.from_pretrained(str(hf_folder), local_files_only=True).eval()
    with torch.no_grad():
        got = model(batch).log_softmax(-1)
        expected = hf_model(batch).logits.log_softmax(-1)
    return got, expected, tokens


def test_the_tiny_llama_folder_loads_with_the_transformers_models_log_probs(tiny_llama_folder):
    from transformers import LlamaForCausalLM

    got, expected, tokens = _log_probs_of_both(tiny_llama_folder, tiny_llama_folder, LlamaForCausalLM)
    assert len(tokens) > 40 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert (expected.exp().amax(-1) > 0.05).any()  # random weights large enough to be far from uniform


def test_the_tiny_llama_has_the_architecture_it_was_built_with(tiny_llama_folder):
    model = load_lm(tiny_llama_folder)
    cfg = model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_mlp) == (2, 64, 4, 2, 128)
    assert cfg.normalization_type.startswith("RMS") and cfg.positional_embedding_type == "rotary"
    assert cfg.d_vocab == len(model.tokenizer) <= 512


def test_the_tiny_gpt2_folder_loads_with_the_transformers_models_log_probs(tiny_gpt2_folder):
    from transformers import GPT2LMHeadModel

    got, expected, _ = _log_probs_of_both(tiny_gpt2_folder, tiny_gpt2_folder, GPT2LMHeadModel)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    model = load_lm(tiny_gpt2_folder)
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.n_heads) == (2, 64, 4)


def test_the_tiny_gguf_loads_with_the_source_llamas_log_probs(tiny_gguf_file, tiny_llama_folder):
    from transformers import LlamaForCausalLM

    got, expected, _ = _log_probs_of_both(tiny_gguf_file, tiny_llama_folder, LlamaForCausalLM)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_the_gguf_tokenizer_reads_back_the_folders_vocabulary_and_bos(tiny_gguf_file, tiny_llama_folder):
    from transformers import AutoTokenizer

    from_gguf = load_lm(tiny_gguf_file).tokenizer
    from_folder = AutoTokenizer.from_pretrained(str(tiny_llama_folder), local_files_only=True)
    assert from_gguf.bos_token_id == from_folder.bos_token_id == 0
    assert len(from_gguf) == len(from_folder)
    assert encode_text(from_gguf, TEXT) == encode_text(from_folder, TEXT)
    assert tokenizer_adds_bos(from_gguf) and tokenizer_adds_bos(from_folder)


def test_the_gguf_model_shows_the_same_token_strings_as_the_folder_model(tiny_gguf_file, tiny_llama_folder):
    from_gguf = lm_info(load_lm(tiny_gguf_file))["vocab"]
    from_folder = lm_info(load_lm(tiny_llama_folder))["vocab"]
    assert from_gguf == from_folder
    assert any(s.startswith(" ") for s in from_gguf)  # leading spaces kept, not stripped by the decoder


def test_the_fixture_tokenizers_differ_only_in_whether_they_add_bos(tiny_llama_folder, tiny_gpt2_folder):
    from transformers import AutoTokenizer

    llama = AutoTokenizer.from_pretrained(str(tiny_llama_folder), local_files_only=True)
    gpt2 = AutoTokenizer.from_pretrained(str(tiny_gpt2_folder), local_files_only=True)
    assert llama("hello world")["input_ids"] == [0, *gpt2("hello world")["input_ids"]]
    assert tokenizer_adds_bos(llama) and not tokenizer_adds_bos(gpt2)


@pytest.mark.parametrize("fixture", ["tiny_llama_folder", "tiny_gpt2_folder", "tiny_gguf_file"])
def test_every_tiny_model_runs_with_a_hook_cache(fixture, request):
    model = load_lm(request.getfixturevalue(fixture))
    tokens = torch.tensor([encode_text(model.tokenizer, TEXT)])
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(("hook_resid_post", "hook_z")))
    assert cache["blocks.1.hook_resid_post"].shape == (1, tokens.shape[1], 64)
    assert cache["blocks.0.attn.hook_z"].shape == (1, tokens.shape[1], 4, 16)
