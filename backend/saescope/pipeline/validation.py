"""Checks that a dictionary fits a model, run before an offline job writes anything.

Owns the one question every command that pairs dictionaries with a model asks first: does the
dictionary's hook point exist in this model, is its `d_in` the width of that hook's
activations, and are its weights finite? Commands call it after loading the model and the dictionaries and before they create
a store, an atlas folder or a metrics file, so a mismatch is one clear ConfigError and leaves
nothing behind. It must not load files or write anything itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from saescope.activations.hooks import hook_dimension
from saescope.dictionaries.base import Dictionary
from saescope.dictionaries.saelens_format import check_finite
from saescope.errors import ConfigError


def check_fits_model(model: Any, dictionary: Dictionary, name: str) -> None:
    """ConfigError naming `name` when the hook point is unknown to `model` or `d_in` is not its width;
    FormatError when a weight holds NaN or Inf."""
    md = dictionary.metadata
    if not md.hook_name:
        raise ConfigError(f"{name}: its cfg.json names no hook point (metadata.hook_name)")
    try:
        width = hook_dimension(model, md.hook_name, md.hook_head_index)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if width != dictionary.d_in:
        raise ConfigError(
            f"{name}: d_in is {dictionary.d_in}, but hook point {md.hook_name!r} of this model has width "
            f"{width}; this dictionary was made for another model or hook point"
        )
    check_finite(dict(dictionary.state_dict()), name)


def check_all_fit_model(model: Any, named: Iterable[tuple[str, Dictionary]]) -> None:
    """`check_fits_model` for each `(name, dictionary)`, stopping at the first that does not fit."""
    for name, dictionary in named:
        check_fits_model(model, dictionary, name)
