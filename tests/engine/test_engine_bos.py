"""Stored contexts and live inference read the same tokens, for a tokenizer that prepends BOS by
itself (the tiny Llama's, like SmolLM2's GGUF tokenizer) and one that does not (the tiny GPT-2's)."""

from __future__ import annotations

import pytest
import torch

from saescope.corpus.documents import Document
from saescope.corpus.encoding import encode_text, tokenizer_adds_bos
from saescope.corpus.packing import pack_documents
from saescope.lm.loading import load_lm

HOOK = "blocks.0.hook_resid_post"
TEXT = "Anarchism is a political philosophy. It was first named in 1539, and again in 1840.\n"


@pytest.fixture(scope="module", params=["tiny_llama_folder", "tiny_gpt2_folder"])
def engine(request):
    """An Engine on a tiny real-architecture model with a random SAE on the layer-0 residual stream."""
    from saescope.dictionaries.architectures.standard import StandardSAE
    from saescope.dictionaries.base import DictionaryMetadata
    from saescope.engine.engine import Engine

    model = load_lm(request.getfixturevalue(request.param))
    torch.manual_seed(0)
    sae = StandardSAE(64, 32, metadata=DictionaryMetadata(hook_name=HOOK, context_size=32))
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.5)
        sae.W_dec.copy_(sae.W_enc.T)
        sae.b_enc.fill_(0.0)
    eng = Engine(model, model_id=request.param)
    eng.add_dictionary("sae", sae)
    return eng


def test_the_fixtures_cover_both_bos_behaviours(tiny_llama_folder, tiny_gpt2_folder):
    assert tokenizer_adds_bos(load_lm(tiny_llama_folder).tokenizer)
    assert not tokenizer_adds_bos(load_lm(tiny_gpt2_folder).tokenizer)


def test_a_stored_context_and_the_live_tokens_of_its_text_are_identical(engine):
    tokenizer = engine.tokenizer
    n_body = len(encode_text(tokenizer, TEXT, prepend_bos=False))
    stored = pack_documents([Document(id="doc", text=TEXT)], tokenizer, n_ctx=n_body + 1).tokens[0].tolist()
    live = engine.tokenize(TEXT)
    assert live == stored
    assert live[0] == engine.bos_id and engine.bos_id not in live[1:]  # one BOS, never two


def test_live_feature_activations_equal_those_of_the_stored_context(engine):
    tokenizer = engine.tokenizer
    n_body = len(encode_text(tokenizer, TEXT, prepend_bos=False))
    stored = torch.from_numpy(pack_documents([Document(id="doc", text=TEXT)], tokenizer, n_ctx=n_body + 1).tokens)
    with torch.no_grad():
        _, cache = engine.model.run_with_cache(stored, names_filter=HOOK)
        offline = engine.dictionary("sae").dictionary.encode(cache[HOOK])[0]
    live = engine.feature_activations(engine.tokenize(TEXT), ["sae"])["sae"][0]
    torch.testing.assert_close(live[1:], offline[1:], atol=1e-5, rtol=1e-4)
    assert (live[1:] > 0).any()


def test_text_beginning_with_the_bos_string_still_gets_one_bos(engine):
    bos_text = engine.tokenizer.convert_ids_to_tokens(engine.bos_id)
    assert engine.tokenize(bos_text + TEXT) == engine.tokenize(TEXT)
