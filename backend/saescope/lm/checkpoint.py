"""Reading and writing saescope language-model checkpoint folders.

Owns the on-disk format of a model checkpoint:

    FOLDER/
      config.json        {"format": "saescope-lm/1", "hooked_transformer_config": {...kwargs},
                          "builtin_config": {...} | null, "report": {...} | null}
      model.safetensors  the HookedTransformer state dict
      tokenizer/         a PreTrainedTokenizerFast folder
      report.json        the build report (built-in models)

Writes are atomic: everything goes to a temporary sibling folder that is renamed into place last, so
a half-written checkpoint is never taken for a complete one. Knows nothing about training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from saescope.atomic_files import atomic_folder
from saescope.errors import FormatError, NotFoundError

FORMAT = "saescope-lm/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
REPORT_FILE = "report.json"


def is_checkpoint_folder(folder: str | Path) -> bool:
    """True when `folder` holds a complete saescope checkpoint (our config.json and model.safetensors).

    A Hugging Face model folder also has these two files; it is told apart by config.json's format.
    """
    path = Path(folder)
    if not ((path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()):
        return False
    try:
        return json.loads((path / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (json.JSONDecodeError, OSError, AttributeError):
        return False


def read_checkpoint_config(folder: str | Path) -> dict[str, Any]:
    """The parsed config.json of a checkpoint folder; FormatError when it is not one of ours."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise NotFoundError(f"no {CONFIG_FILE} in {Path(folder)}: not a saescope model checkpoint")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path} is not valid JSON: {exc.msg}") from exc
    if config.get("format") != FORMAT or "hooked_transformer_config" not in config:
        raise FormatError(
            f"{path} is not a saescope model config (expected format {FORMAT!r} and a "
            "'hooked_transformer_config' entry)"
        )
    return config


def write_checkpoint(
    folder: str | Path,
    state_dict: dict[str, torch.Tensor],
    hooked_transformer_config: dict[str, Any],
    tokenizer: Any,
    *,
    builtin_config: dict[str, Any] | None = None,
    report: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (temp folder, then rename). `folder` must not exist."""
    from safetensors.torch import save_file

    final = Path(folder)
    if final.exists():
        raise FormatError(f"{final} already exists; remove it or choose another folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(final) as tmp:
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT})
        tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        config = {
            "format": FORMAT,
            "hooked_transformer_config": hooked_transformer_config,
            "builtin_config": builtin_config,
            "report": report,
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        if report is not None:
            (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True))
    return final
