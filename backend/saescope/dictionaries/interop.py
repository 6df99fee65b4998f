"""Importing and exporting dictionaries from and to other tools' on-disk formats.

Owns `import_sae` (used by `saescope import-sae PATH`) and `export_sae` (used by
`saescope export-sae`). Import reads a SAELens folder (v6 or pre-6.0; standard, topk, jumprelu,
batchtopk-as-jumprelu), a folder holding exactly one such folder (a release layout), or an
EleutherAI sparsify folder (`cfg.json` + `sae.safetensors`, TopK), checks it, and writes a clean
SAELens v6 folder (plus `sparsity.safetensors` when the source has one). Export writes a folder
that `sae_lens.SAE.load_from_disk` reads with identical encodings. It does not evaluate, train or
store anything in the atlas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field

from saescope.dictionaries.base import Dictionary, DictionaryMetadata
from saescope.dictionaries.saelens_format import (
    CFG_FILE,
    SPARSITY_FILE,
    WEIGHTS_FILE,
    check_config_shape,
    check_finite,
    load_dictionary,
    read_sparsity,
    save_dictionary,
)
from saescope.errors import ConfigError, FormatError, NotFoundError

SPARSIFY_WEIGHTS_FILE = "sae.safetensors"


class ImportReport(BaseModel):
    """What `import_sae` read and wrote."""

    source: str = Field(description="Path that was imported.")
    source_format: str = Field(description="saelens-v6 | saelens-pre6 | sparsify.")
    folder: str = Field(description="The SAELens v6 folder written.")
    architecture: str = Field(description="Architecture of the imported dictionary.")
    kind: str = Field(description="Dictionary kind (sae or a baseline kind).")
    d_in: int = Field(description="Input dimension.")
    d_sae: int = Field(description="Number of features.")
    hook_name: str = Field(description="Hook point recorded in the metadata.")
    model_name: str = Field(description="Model recorded in the metadata.")
    has_sparsity: bool = Field(description="Whether a sparsity.safetensors file was carried over.")

    def __str__(self) -> str:
        return (
            f"{self.folder} ({self.source_format} {self.kind}/{self.architecture}, "
            f"d_in {self.d_in} -> d_sae {self.d_sae}, hook {self.hook_name or '?'})"
        )


def detect_format(path: Path) -> tuple[str, Path]:
    """(`saelens` | `sparsify`, folder) for `path`; descends into a single child folder holding
    a dictionary. Raises NotFoundError / FormatError naming the path."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path} not found: pass a SAELens folder (cfg.json + {WEIGHTS_FILE})")
    if path.is_file():
        if path.name in (CFG_FILE, WEIGHTS_FILE, SPARSIFY_WEIGHTS_FILE):
            return detect_format(path.parent)
        raise FormatError(f"{path} is a file: pass the folder holding cfg.json and {WEIGHTS_FILE}")
    if (path / CFG_FILE).is_file() and (path / SPARSIFY_WEIGHTS_FILE).is_file() and not (path / WEIGHTS_FILE).is_file():
        return "sparsify", path
    if (path / CFG_FILE).is_file():
        return "saelens", path
    children = [c for c in sorted(path.iterdir()) if c.is_dir() and (c / CFG_FILE).is_file()]
    if len(children) == 1:
        return detect_format(children[0])
    if len(children) > 1:
        names = ", ".join(c.name for c in children[:8])
        raise FormatError(f"{path} holds several dictionaries ({names}); pass one of those folders")
    raise FormatError(f"{path} has no cfg.json: not a SAELens or sparsify folder")


def load_sparsify(folder: Path, metadata: DictionaryMetadata | None = None) -> Dictionary:
    """An EleutherAI sparsify TopK SAE (`cfg.json` with k/num_latents/expansion_factor,
    `sae.safetensors` with encoder.weight [d_sae, d_in], encoder.bias, W_dec, b_dec) as a TopKSAE."""
    from safetensors.torch import load_file

    from saescope.dictionaries.architectures.topk import TopKSAE

    folder = Path(folder)
    cfg_path = folder / CFG_FILE
    try:
        cfg = json.loads(cfg_path.read_text())
        state = load_file(str(folder / SPARSIFY_WEIGHTS_FILE))
    except (json.JSONDecodeError, OSError) as exc:
        raise FormatError(f"{folder} is not a readable sparsify folder: {exc}") from exc
    except Exception as exc:
        raise FormatError(f"{folder / SPARSIFY_WEIGHTS_FILE} is not a readable safetensors file: {exc}") from exc
    if cfg.get("transcode") or cfg.get("skip_connection") or "W_skip" in state:
        raise FormatError(f"{cfg_path}: sparsify transcoders / skip connections are not supported")
    try:
        w_enc = state["encoder.weight"].float()  # [d_sae, d_in]
        b_enc = state["encoder.bias"].float()
        w_dec = state["W_dec"].float()
        b_dec = state["b_dec"].float()
        k = cfg["k"]
    except (KeyError, TypeError) as exc:
        raise FormatError(f"{folder}: sparsify folder lacks {exc}") from exc
    if w_enc.ndim != 2:
        raise FormatError(f"{folder}: sparsify encoder.weight must be [d_sae, d_in], got {tuple(w_enc.shape)}")
    d_sae, d_in = w_enc.shape
    if w_dec.shape != (d_sae, d_in) or b_enc.shape != (d_sae,) or b_dec.shape != (d_in,):
        raise FormatError(f"{folder}: sparsify tensor shapes disagree (encoder {tuple(w_enc.shape)}, W_dec {tuple(w_dec.shape)})")
    check_config_shape({"architecture": "topk", "d_in": d_in, "d_sae": d_sae, "k": k}, cfg_path)
    check_finite(state, folder / SPARSIFY_WEIGHTS_FILE)
    sae = TopKSAE(d_in, d_sae, k, metadata or DictionaryMetadata(), apply_b_dec_to_input=True)
    with torch.no_grad():
        sae.W_enc.copy_(w_enc.T)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(w_dec)
        sae.b_dec.copy_(b_dec)
    return sae.eval()


def _clear_stale_files(out_dir: Path) -> None:
    """Remove files of a previous dictionary in `out_dir` that the new one would not overwrite."""
    for name in (SPARSITY_FILE, "metrics.json", "pruning.json"):
        path = Path(out_dir) / name
        if path.is_file():
            path.unlink()


def _override_metadata(dictionary: Dictionary, overrides: dict[str, Any]) -> None:
    values = {k: v for k, v in overrides.items() if v is not None}
    if values:
        dictionary.metadata = DictionaryMetadata(**{**dictionary.metadata.model_dump(), **values})


def import_sae(
    path: Path,
    out_dir: Path,
    model_name: str | None = None,
    hook_name: str | None = None,
    hook_head_index: int | None = None,
    context_size: int | None = None,
    prepend_bos: bool | None = None,
    dataset_path: str | None = None,
) -> ImportReport:
    """Read the dictionary at `path`, override metadata fields given, and write a SAELens v6
    folder to `out_dir`. A sparsify folder needs `hook_name` (its config does not record one)."""
    source_format, folder = detect_format(Path(path))
    overrides = dict(
        model_name=model_name, hook_name=hook_name, hook_head_index=hook_head_index,
        context_size=context_size, prepend_bos=prepend_bos, dataset_path=dataset_path,
    )
    sparsity = None
    if source_format == "sparsify":
        dictionary = load_sparsify(folder)
        if not hook_name:
            raise ConfigError(
                f"{folder} is a sparsify folder, which does not record its hook point; "
                "pass hook_name (e.g. --hook-name blocks.6.hook_resid_post)"
            )
    else:
        from saescope.dictionaries.saelens_format import is_pre_v6_config, read_config

        source_format = "saelens-pre6" if is_pre_v6_config(read_config(folder)) else "saelens-v6"
        dictionary = load_dictionary(folder)
        sparsity = read_sparsity(folder)
        if sparsity is not None and sparsity.shape != (dictionary.d_sae,):
            sparsity = None
    _override_metadata(dictionary, overrides)
    out_dir = Path(out_dir)
    if out_dir.resolve() == folder.resolve():
        raise ConfigError(f"import output {out_dir} is the source folder; choose another folder")
    _clear_stale_files(out_dir)
    save_dictionary(dictionary, out_dir, log10_sparsity=sparsity)
    return ImportReport(
        source=str(path),
        source_format=source_format,
        folder=str(out_dir),
        architecture=dictionary.architecture,
        kind=dictionary.kind,
        d_in=dictionary.d_in,
        d_sae=dictionary.d_sae,
        hook_name=dictionary.metadata.hook_name,
        model_name=dictionary.metadata.model_name,
        has_sparsity=sparsity is not None,
    )


def export_sae(folder: Path, out_dir: Path) -> Path:
    """Write the saescope dictionary in `folder` as a SAELens v6 folder at `out_dir` that
    `sae_lens.SAE.load_from_disk` loads with identical encodings; returns `out_dir`.

    Linear baselines (PCA/ICA/neurons/random without ReLU) have no SAELens equivalent and raise
    ConfigError. `metrics.json` is copied along when present.
    """
    folder = Path(folder)
    dictionary = load_dictionary(folder)
    if getattr(dictionary, "activation", "relu") == "identity":
        raise ConfigError(
            f"{folder} is a linear {dictionary.kind} baseline (no ReLU); SAELens has no linear "
            "architecture, so it cannot be exported. Fit the baseline with relu=True to export it"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and out_dir.resolve() == folder.resolve():
        raise ConfigError(f"export output {out_dir} is the source folder; choose another folder")
    _clear_stale_files(out_dir)
    save_dictionary(dictionary, out_dir, log10_sparsity=read_sparsity(folder))
    metrics = folder / "metrics.json"
    if metrics.is_file():
        (out_dir / "metrics.json").write_text(metrics.read_text())
    return out_dir
