"""The registry of SAE architectures: one module per architecture in this package.

Owns the lookup from a name to an architecture. Every module of this package (except the ones
whose name starts with `_`) is an architecture: it defines its inference class(es) (a `Dictionary`
subclass with `from_config`, building itself from a SAELens `cfg.json` dict) and a `TrainingSpec`
subclass, and lists them in two module constants:

- `SAELENS_CLASSES: dict[str, type[Dictionary]]` — the SAELens `architecture` names it loads;
- `TRAINING: TrainingSpec | None` — how to train it, under `TRAINING.name`.

Adding an architecture is adding one module here; nothing else names it. This package must not
import the trainer or any stage to the right of dictionaries.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from saescope.dictionaries.base import Dictionary
from saescope.dictionaries.training_spec import TrainingSpec
from saescope.errors import ConfigError, FormatError


def _discover() -> tuple[dict[str, type[Dictionary]], dict[str, TrainingSpec]]:
    loading: dict[str, type[Dictionary]] = {}
    training: dict[str, TrainingSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, cls in getattr(module, "SAELENS_CLASSES", {}).items():
            if name in loading:
                raise RuntimeError(f"SAELens architecture {name!r} is registered twice")
            loading[name] = cls
        spec = getattr(module, "TRAINING", None)
        if spec is not None:
            if spec.name in training:
                raise RuntimeError(f"training architecture {spec.name!r} is registered twice")
            training[spec.name] = spec
    return loading, training


ARCHITECTURES, TRAINING_SPECS = _discover()
TRAINING_NAMES: tuple[str, ...] = tuple(sorted(TRAINING_SPECS))


def dictionary_class(architecture: str) -> type[Dictionary]:
    """The class for a SAELens architecture name; FormatError naming the known ones otherwise."""
    try:
        return ARCHITECTURES[architecture]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise FormatError(f"unknown SAE architecture {architecture!r}; saescope reads {known}") from None


def dictionary_from_config(cfg: dict[str, Any]) -> Dictionary:
    """Build the (weights not yet loaded) dictionary a SAELens cfg dict describes."""
    architecture = cfg.get("architecture") or "standard"  # pre-6.0 configs have none
    return dictionary_class(architecture).from_config(cfg)  # type: ignore[attr-defined]


def check_training_name(name: str) -> str:
    """`name` when an architecture is registered under it; ValueError naming the registered ones
    otherwise (for pydantic validators of configs that name an architecture)."""
    if name not in TRAINING_SPECS:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(TRAINING_NAMES)}")
    return name


def training_spec(name: str) -> TrainingSpec:
    """The training spec registered under `name`; ConfigError naming the known ones otherwise."""
    try:
        return TRAINING_SPECS[name]
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r}; choose one of {', '.join(TRAINING_NAMES)}") from None
