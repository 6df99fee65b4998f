"""Fixtures for store tests (tiny random model and contexts from store_helpers)."""

from __future__ import annotations

import pytest
from transformer_lens import HookedTransformer

from store_helpers import Packed, make_contexts, make_model


@pytest.fixture(scope="session")
def model() -> HookedTransformer:
    return make_model()


@pytest.fixture()
def contexts() -> Packed:
    return make_contexts()
