"""Serve only the weights that were published: a dictionary's file must still match its stored hash.

Owns the check the live engine runs before it loads a dictionary: the store keeps, in each
dictionary's provenance, the sha256 of its `sae_weights.safetensors` taken at publish time
(`sae_weights_sha256`); a file that is missing, unreadable or no longer matches that hash is
refused with `DictionaryUnavailable` (HTTP 409), because the feature pages describe other weights.
Messages name the weights location relative to the atlas (never an absolute server path). It must
not load the model or touch anything but the weights file and the store reader.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from saescope.errors import DictionaryUnavailable, SaescopeError

WEIGHTS_FILE = "sae_weights.safetensors"
REPUBLISH = "re-publish it (saescope precompute) or restore the published file"


def weights_file(atlas_root: Path, weights_path: str) -> Path:
    """The weights file of a stored `weights_path` (a dictionary folder, or the file itself)."""
    p = Path(weights_path)
    if not p.is_absolute():
        p = atlas_root / p
    return p if p.suffix == ".safetensors" else p / WEIGHTS_FILE


def shown_path(path: Path, atlas_root: Path) -> str:
    """`path` relative to the atlas when inside it, else its file name only."""
    try:
        return str(path.resolve().relative_to(atlas_root.resolve()))
    except (ValueError, OSError):
        return path.name


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified_weights_folder(reader: Any, atlas_root: Path, info: dict[str, Any]) -> Path:
    """The folder of dictionary `info` (a reader brief) once its weights file matches the published hash.

    DictionaryUnavailable when the file is missing, unreadable or changed. A dictionary published
    without a hash (no weights file at publish) is loaded as it is."""
    did = info["id"]
    wf = weights_file(Path(atlas_root), str(info["weights_path"]))
    shown = shown_path(wf, Path(atlas_root))
    if not wf.is_file():
        raise DictionaryUnavailable(f"the weights of dictionary {did!r} are missing ({shown}); {REPUBLISH}")
    expected = (reader.get_dictionary(did).get("provenance") or {}).get("sae_weights_sha256")
    if expected:
        try:
            current = file_sha256(wf)
        except OSError:
            raise DictionaryUnavailable(f"the weights of dictionary {did!r} cannot be read ({shown})") from None
        if current != expected:
            raise DictionaryUnavailable(
                f"the weights of dictionary {did!r} ({shown}) changed since it was published, so its feature "
                f"pages describe other weights; {REPUBLISH}"
            )
    return wf.parent


def load_verified(engine: Any, reader: Any, atlas_root: Path, info: dict[str, Any]) -> None:
    """Load dictionary `info` into `engine` after `verified_weights_folder`; a file that fails to load
    is DictionaryUnavailable with the reason but without the server's absolute path."""
    folder = verified_weights_folder(reader, atlas_root, info)
    try:
        engine.load_dictionary(info["id"], folder, info["hook_name"])
    except DictionaryUnavailable:
        raise
    except SaescopeError as exc:
        reason = str(exc).replace(str(folder.resolve()), shown_path(folder, Path(atlas_root)))
        reason = reason.replace(str(folder), shown_path(folder, Path(atlas_root)))
        raise DictionaryUnavailable(f"dictionary {info['id']!r} cannot be loaded: {reason}") from None
