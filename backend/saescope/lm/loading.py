"""Loading language models as transformer_lens `HookedTransformer`s, and describing them for the store.

Owns `load_lm`: a saescope checkpoint folder (config.json + model.safetensors + tokenizer/), a local
Hugging Face model folder (config.json with a `model_type`, loaded through
`AutoModelForCausalLM.from_pretrained` and converted by transformer_lens), a GGUF file (dequantised
by transformers' GGUF loader, then converted the same way), or a transformer_lens pretrained model
name fetched from the Hugging Face hub; the Hugging Face weights are released as soon as they are
converted, so the model is never held twice. Also `peek_layer_count(location)` (a model's layer
count from its config alone, to check hook names before loading) and `lm_info(model)`, the model facts and
vocabulary strings the store records. The returned model always has its tokenizer attached, so
`model.to_str_tokens` works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from saescope.devices import resolve_device
from saescope.errors import ConfigError, FormatError, NotFoundError
from saescope.lm import checkpoint as ckpt
from saescope.lm.tokenizer import load_tokenizer, readable_vocab


def _looks_like_path(location: str) -> bool:
    return location.startswith((".", "/", "~")) or "\\" in location or location.count("/") > 1


def load_checkpoint_lm(folder: str | Path, device: str | torch.device = "cpu") -> Any:
    """Load a saescope checkpoint folder as an eval-mode HookedTransformer with its tokenizer."""
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    path = Path(folder)
    config = ckpt.read_checkpoint_config(path)
    dev = resolve_device(str(device) if device is not None else "auto")
    try:
        cfg = HookedTransformerConfig(**config["hooked_transformer_config"], device=str(dev))
    except (TypeError, ValueError, AssertionError) as exc:
        raise FormatError(f"{path / ckpt.CONFIG_FILE}: invalid hooked_transformer_config: {exc}") from exc
    tokenizer = load_tokenizer(path / ckpt.TOKENIZER_DIR)
    with torch.random.fork_rng(devices=[]):  # weight init below is overwritten; keep global RNG intact
        model = HookedTransformer(cfg, tokenizer=tokenizer)
    state = load_file(str(path / ckpt.WEIGHTS_FILE), device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise FormatError(f"{path / ckpt.WEIGHTS_FILE} does not match config.json: {exc}") from exc
    model.to(dev, print_details=False)  # stdout stays clean for commands that print JSON
    model.eval()
    return model


def _hf_config_fixes(cfg: Any, hf_config: Any) -> None:
    """Settings transformer_lens's conversion drops for some architectures: the rotary base
    (`rope_theta`, e.g. 100000 in SmolLM2, where transformer_lens assumes 10000)."""
    rope_theta = getattr(hf_config, "rope_theta", None)
    if rope_theta and getattr(cfg, "positional_embedding_type", "") == "rotary":
        cfg.rotary_base = int(rope_theta) if float(rope_theta).is_integer() else float(rope_theta)


def _hf_config_defaults(hf_config: Any) -> None:
    """Fields transformer_lens reads that a config written by recent transformers may lack: GPT-2's
    `n_ctx` (transformers keeps only `n_positions`, the same number)."""
    if getattr(hf_config, "model_type", "") == "gpt2" and getattr(hf_config, "n_ctx", None) is None:
        hf_config.n_ctx = hf_config.n_positions


def _release_hf_weights(hf_model: Any, state_dict: dict[str, Any]) -> None:
    """Free the transformers model's own tensors once its state dict is converted, so the model is
    not held twice in memory while the HookedTransformer is built. Tensors the converted state dict
    shares (transformer_lens keeps some weights as views) stay alive through it."""
    import gc

    for module in hf_model.modules():
        for name in list(module._parameters):
            module._parameters[name] = None
        for name in list(module._buffers):
            module._buffers[name] = None
    gc.collect()


def _hooked_from_hf(hf_model: Any, tokenizer: Any, device: torch.device) -> Any:
    """A HookedTransformer with the weights of the transformers model `hf_model`, processed as
    `HookedTransformer.from_pretrained` does (fold LayerNorm, centre writing weights and unembedding).

    transformer_lens reads the config from a folder, and guesses the architecture from words in the
    folder's path ("llama", "gemma") before reading it; the config is therefore written to a fresh
    temporary folder whose name says nothing about the model."""
    import tempfile

    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as tl_loading

    if not getattr(hf_model.config, "architectures", None):  # e.g. models read from GGUF
        hf_model.config.architectures = [type(hf_model).__name__]
    _hf_config_defaults(hf_model.config)
    with tempfile.TemporaryDirectory(prefix="saescope-") as config_dir:
        hf_model.config.save_pretrained(config_dir)
        cfg = tl_loading.get_pretrained_model_config(
            config_dir, hf_cfg=hf_model.config.to_dict(), fold_ln=True, device=str(device)
        )
        _hf_config_fixes(cfg, hf_model.config)
        state_dict = tl_loading.get_pretrained_state_dict(config_dir, cfg, hf_model)
    _release_hf_weights(hf_model, state_dict)
    with torch.random.fork_rng(devices=[]):
        model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict, fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True,
    )
    state_dict.clear()  # the converted tensors now live in `model` (processed copies)
    model.move_model_modules_to_device()
    model.eval()
    return model


def load_hf_folder_lm(folder: str | Path, device: str | torch.device = "cpu") -> Any:
    """Load a local Hugging Face causal-LM folder (config.json, weights, tokenizer) via transformer_lens.

    Mirrors `HookedTransformer.from_pretrained`, which itself only accepts official model names.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(folder).resolve()
    dev = resolve_device(str(device) if device is not None else "auto")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise FormatError(f"the model folder {path} has no loadable tokenizer: {exc}") from exc
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        return _hooked_from_hf(hf_model, tokenizer, dev)
    except Exception as exc:
        raise FormatError(
            f"could not load the Hugging Face model folder {path} through transformer_lens "
            f"(its architecture must be one transformer_lens supports): {type(exc).__name__}: {exc}"
        ) from exc


def load_gguf_lm(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """Load a GGUF model file: dequantised to float32 by transformers' GGUF loader (needs the `gguf`
    package), then converted by transformer_lens like a Hugging Face folder. The tokenizer is the one
    transformers builds from the GGUF vocabulary."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = Path(path).resolve()
    dev = resolve_device(str(device) if device is not None else "auto")
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise ConfigError("loading a GGUF file needs the gguf package: pip install gguf") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name, local_files_only=True)
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(file.parent), gguf_file=file.name, dtype=torch.float32, local_files_only=True
        )
    except Exception as exc:
        raise FormatError(f"{file} could not be read as a GGUF model: {type(exc).__name__}: {exc}") from exc
    try:
        return _hooked_from_hf(hf_model, tokenizer, dev)
    except Exception as exc:
        raise FormatError(
            f"could not convert the GGUF model {file} through transformer_lens (its architecture, "
            f"{type(hf_model).__name__}, must be one transformer_lens supports): {type(exc).__name__}: {exc}"
        ) from exc


def load_pretrained_lm(name: str, device: str | torch.device = "cpu") -> Any:
    """Load a transformer_lens pretrained model by name (e.g. 'gpt2'); needs the hub or its cache."""
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError as exc:
        raise NotFoundError(
            f"{name!r} is neither a model checkpoint folder nor a transformer_lens model name "
            "(e.g. 'gpt2', 'pythia-70m'); pass an existing folder or a supported name"
        ) from exc
    dev = resolve_device(str(device) if device is not None else "auto")
    try:
        model = HookedTransformer.from_pretrained(name, device=str(dev))
    except Exception as exc:
        raise NotFoundError(
            f"could not load {name!r} from the Hugging Face hub (offline? not in the local cache?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    model.eval()
    return model


def load_lm(location: str | Path, device: str | torch.device = "cpu") -> Any:
    """Load a model as a HookedTransformer (tokenizer attached, eval mode) on `device`.

    `location` is a saescope checkpoint folder, a local Hugging Face model folder, a .gguf file, or
    a transformer_lens pretrained model name. Raises NotFoundError for a missing folder or unknown
    name (or an unreachable hub), FormatError for a folder that is not a model checkpoint.
    """
    loc = str(location)
    if not loc.strip():
        raise ConfigError("the model location is empty: pass a checkpoint folder or a model name")
    path = Path(loc).expanduser()
    if path.is_dir():
        if ckpt.is_checkpoint_folder(path):
            return load_checkpoint_lm(path, device)
        hf_config = path / "config.json"
        if hf_config.is_file():
            try:
                is_hf = "model_type" in json.loads(hf_config.read_text())
            except json.JSONDecodeError:
                is_hf = False
            if is_hf:
                return load_hf_folder_lm(path, device)
        raise FormatError(
            f"{path} is not a model checkpoint: expected config.json and model.safetensors "
            "(a saescope checkpoint), a Hugging Face model folder, or pass a .gguf file"
        )
    if path.is_file() and path.suffix.lower() == ".gguf":
        return load_gguf_lm(path, device)
    if path.exists():
        raise FormatError(
            f"{path} is a file but not a .gguf model; pass a GGUF file or the checkpoint folder that holds config.json"
        )
    if isinstance(location, Path) or _looks_like_path(loc):
        raise NotFoundError(f"model folder {path} does not exist; build the model first or fix the path")
    return load_pretrained_lm(loc, device)


_HF_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def peek_layer_count(location: str | Path) -> tuple[int, bool] | None:
    """(n_layers, attn_only) of the model at `location` read from its config alone, without loading
    weights: a saescope checkpoint's or Hugging Face folder's config.json, or a GGUF file's
    `{architecture}.block_count`. None where the config cannot be read cheaply (hub names, odd files);
    lets hook names be checked before a slow load."""
    path = Path(str(location)).expanduser()
    try:
        if path.is_dir() and (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text())
            tl_config = config.get("hooked_transformer_config")
            if isinstance(tl_config, dict) and "n_layers" in tl_config:
                return int(tl_config["n_layers"]), bool(tl_config.get("attn_only", False))
            for key in _HF_LAYER_KEYS:
                if isinstance(config.get(key), int):
                    return int(config[key]), False
            return None
        if path.is_file() and path.suffix.lower() == ".gguf":
            return _gguf_layer_count(path)
    except (OSError, ValueError):
        return None
    return None


def _gguf_layer_count(path: Path) -> tuple[int, bool] | None:
    """`{general.architecture}.block_count` of a GGUF file (memory-mapped header read), or None."""
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    try:
        reader = GGUFReader(str(path))
        arch_field = reader.fields["general.architecture"]
        arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
        count_field = reader.fields[f"{arch}.block_count"]
        return int(count_field.parts[count_field.data[0]][0]), False
    except (KeyError, IndexError, ValueError, OSError):
        return None


def lm_info(model: Any) -> dict[str, Any]:
    """Facts about `model` for the store: its config, tokenizer, and vocabulary as display strings.

    Keys: model_name, n_layers, d_model, d_mlp, n_heads, d_head, n_ctx, d_vocab, act_fn,
    normalization_type, tl_config (JSON-able HookedTransformerConfig fields), tokenizer (name or
    folder), bos_token_id, eos_token_id, vocab (token id -> readable string, len d_vocab).
    """
    cfg = model.cfg
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ConfigError("the model has no tokenizer attached; load it with load_lm")
    vocab = readable_vocab(tokenizer)
    if len(vocab) < cfg.d_vocab:  # model rows beyond the tokenizer (padding rows)
        vocab = vocab + [f"<unused{i}>" for i in range(len(vocab), cfg.d_vocab)]
    vocab = vocab[: cfg.d_vocab]
    tl_config: dict[str, Any] = {}
    for key, value in cfg.to_dict().items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            tl_config[key] = value
    return {
        "model_name": cfg.model_name,
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
        "d_mlp": cfg.d_mlp,
        "n_heads": cfg.n_heads,
        "d_head": cfg.d_head,
        "n_ctx": cfg.n_ctx,
        "d_vocab": cfg.d_vocab,
        "act_fn": cfg.act_fn,
        "normalization_type": cfg.normalization_type,
        "tl_config": tl_config,
        "tokenizer": str(tokenizer.name_or_path),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "vocab": vocab,
    }
