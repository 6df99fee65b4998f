"""Tiny real-architecture models for tests: a 2-layer Llama and a 2-layer GPT-2 as local Hugging Face
folders, and the same Llama written as a GGUF file, all with random weights (seed 0).

They share one tiny byte-level BPE tokenizer (vocab about 512, trained on a few standard-library
files) with special tokens `<s>` (BOS, id 0) and `</s>` (EOS, id 1). `build_tiny_tokenizer` can save
it with a TemplateProcessing post-processor that prepends BOS on `tokenizer(text)` (as Llama's does)
or without one (as GPT-2's), so BOS handling can be tested both ways. The GGUF file carries the
tokenizer in the metadata keys transformers' GGUF loader reads (`tokenizer.ggml.model` "gpt2",
tokens, token types, merges, BOS/EOS ids, no space prefix); the q/k weights are permuted the way llama.cpp's
converter does, which transformers' loader undoes. Fixtures are defined in conftest.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BOS = "<s>"
EOS = "</s>"
TINY_VOCAB = 512
N_CTX = 128


def tiny_training_texts() -> list[str]:
    """A few KB of deterministic text: the first standard-library files in sorted order."""
    from saescope.corpus.stdlib import stdlib_documents

    return [d.text[:20_000] for d in stdlib_documents("train", max_files=6)]


def build_tiny_tokenizer(folder: Path, prepend_bos: bool) -> Any:
    """Train the tiny byte-level BPE, save it to `folder` as a PreTrainedTokenizerFast and load it
    back with AutoTokenizer. `prepend_bos` adds a post-processor that puts BOS before every text
    encoded with special tokens (`tokenizer(text)`); without it the tokenizer adds nothing."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(
        tiny_training_texts(), vocab_size=TINY_VOCAB, min_frequency=2, show_progress=False,
        special_tokens=[BOS, EOS],
    )
    backend = bpe._tokenizer
    if prepend_bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 0)]
        )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOS, unk_token=None,
        model_max_length=N_CTX, clean_up_tokenization_spaces=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder.resolve()), local_files_only=True)


def _perturb_norms(model: Any, seed: int) -> None:
    """Give every norm weight a random scale around 1, so that folding them is actually tested."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or ".ln_" in name:
                param.mul_(1.0 + 0.2 * torch.randn(param.shape, generator=gen))


def build_tiny_llama_folder(folder: Path) -> Path:
    """A random 2-layer Llama (d_model 64, 4 heads, 2 KV heads, MLP 128) saved with safetensors,
    with the BOS-prepending tiny tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(folder, prepend_bos=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=N_CTX,
        rope_theta=10_000.0, rms_norm_eps=1e-6, initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    _perturb_norms(model, seed=0)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def build_tiny_gpt2_folder(folder: Path) -> Path:
    """A random 2-layer GPT-2 (n_embd 64, 4 heads) saved with safetensors, with the tiny tokenizer
    that adds no BOS by itself (as GPT-2's)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tiny_tokenizer(folder, prepend_bos=False)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=N_CTX, n_embd=64, n_layer=2, n_head=4,
        initializer_range=0.1, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    _perturb_norms(model, seed=0)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def _llama_cpp_permute(weights: Any, n_head: int) -> Any:
    """llama.cpp's q/k row permutation (rotary halves interleaved), which transformers reverses."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_llama_gguf(llama_folder: Path, out: Path) -> Path:
    """Write the Llama of `llama_folder` (weights and tokenizer) as an f32 GGUF file at `out`."""
    import json

    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((llama_folder / "config.json").read_text())
    tokenizer_json = json.loads((llama_folder / "tokenizer.json").read_text())
    weights = load_file(str(llama_folder / "model.safetensors"))
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]

    vocab: dict[str, int] = dict(tokenizer_json["model"]["vocab"])
    for added in tokenizer_json.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert [vocab[t] for t in tokens] == list(range(len(tokens))), "token ids must be contiguous"
    special = {a["content"] for a in tokenizer_json.get("added_tokens", []) if a.get("special")}
    token_types = [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"]["merges"]]

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_rope_dimension_count(config["hidden_size"] // n_head)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)  # as llama.cpp writes byte-level BPEs (SmolLM2's GGUF too)

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
        "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for layer in range(config["num_hidden_layers"]):
        for hf_part, gguf_part in per_layer.items():
            names[f"model.layers.{layer}.{hf_part}.weight"] = f"blk.{layer}.{gguf_part}.weight"
    for hf_name, gguf_name in names.items():
        tensor = np.ascontiguousarray(weights[hf_name], dtype=np.float32)
        if gguf_name.endswith("attn_q.weight"):
            tensor = _llama_cpp_permute(tensor, n_head)
        elif gguf_name.endswith("attn_k.weight"):
            tensor = _llama_cpp_permute(tensor, n_kv)
        writer.add_tensor(gguf_name, np.ascontiguousarray(tensor))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
