"""Shared session fixtures for the whole test suite.

Fixtures here are built once per session in temporary folders, from real components at tiny sizes
and fixed seeds. Add new shared fixtures in their own clearly titled section; keep stage-specific
fixtures in tests/<stage>/conftest.py.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# --- torch threads --------------------------------------------------------------------------------

ONE_THREAD_FOLDERS = ("store", "analysis")  # tiny matmuls only: one thread is faster on shared cores


@pytest.fixture(autouse=True)
def one_torch_thread(request: pytest.FixtureRequest):
    """Run the tests of ONE_THREAD_FOLDERS with one torch thread (restored afterwards)."""
    if Path(str(request.node.fspath)).parent.name not in ONE_THREAD_FOLDERS:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- corpus + lm ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny trained saescope checkpoint (BuiltinLMConfig.tiny(): 1 layer, d_model 32,
    d_mlp 128, n_heads 2, n_ctx 32, vocab 512, 120 steps on 12 stdlib files; a few seconds)."""
    from saescope.lm.builtin import BuiltinLMConfig, build_builtin_lm

    out = tmp_path_factory.mktemp("tiny_lm") / "model"
    # One torch thread: a tiny model trains faster on one thread when the cores are shared.
    build_builtin_lm(BuiltinLMConfig.tiny(), out, progress=False, num_threads=1)
    return out


@pytest.fixture(scope="session")
def tiny_lm(tiny_lm_dir: Path):
    """The tiny model loaded on CPU as a HookedTransformer (eval mode, tokenizer attached).
    Shared by the whole session: do not change its weights or hooks (use `load_lm(tiny_lm_dir)` for a copy)."""
    from saescope.lm.loading import load_lm

    return load_lm(tiny_lm_dir, device="cpu")


# --- the demo atlas (owner: lead) ----------------------------------------------------------------


@dataclass(frozen=True)
class DemoAtlas:
    """A real atlas built by the demo pipeline at tiny size: model, two SAEs, a baseline, records."""

    root: Path
    store_url: str
    report: Any  # the AtlasBuildReport of the demo pipeline


@pytest.fixture(scope="session")
def demo_atlas(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path) -> DemoAtlas:
    """`saescope demo --tiny` built once per session (reusing the `tiny_lm_dir` checkpoint as its model).

    Holds dictionaries relu-64, relu-256 and neurons on blocks.0.mlp.hook_post, published to SQLite.
    Read-only for tests: copy it (shutil.copytree) before changing anything. (The API tests use a
    different atlas, `random_sae_atlas` in tests/api/conftest.py, with random SAEs and test rows.)
    """
    from saescope.atlas_layout import AtlasLayout
    from saescope.pipeline.build import build_atlas
    from saescope.pipeline.build_config import builtin_tiny_preset

    root = tmp_path_factory.mktemp("demo_atlas") / "atlas"
    layout = AtlasLayout(root=root)
    shutil.copytree(tiny_lm_dir, layout.model_dir)
    config = builtin_tiny_preset(device="cpu", sae_tokens=30_000)
    report = build_atlas(root, config)
    return DemoAtlas(root=root, store_url=layout.sqlite_url, report=report)


# --- PostgreSQL -------------------------------------------------------------------------------------

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


@pytest.fixture()
def pg_url():
    """URL of a fresh PostgreSQL database on 127.0.0.1:5432 (dropped afterwards); skips with a
    message when no server answers."""
    import os

    from sqlalchemy import create_engine, text

    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text("select 1"))
    except Exception as exc:  # pragma: no cover - depends on the machine
        admin.dispose()
        pytest.skip(f"no PostgreSQL server reachable at 127.0.0.1:5432 ({type(exc).__name__}: {exc})")
    name = f"saescope_test_{os.getpid()}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"{PG_SERVER}/{name}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# --- tiny real-architecture models (builders in tests/model_fixtures.py) -------------------------


@pytest.fixture(scope="session")
def tiny_llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local Hugging Face folder of a random 2-layer Llama (d_model 64, 4 heads, 2 KV heads, seed 0)
    with a tiny BPE tokenizer (vocab about 512) that prepends BOS `<s>` on `tokenizer(text)`."""
    from model_fixtures import build_tiny_llama_folder

    return build_tiny_llama_folder(tmp_path_factory.mktemp("tiny_llama") / "model")


@pytest.fixture(scope="session")
def tiny_gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local Hugging Face folder of a random 2-layer GPT-2 (n_embd 64, 4 heads, seed 0) with the same
    tiny tokenizer, saved without a BOS post-processor (adds no special tokens, as GPT-2's)."""
    from model_fixtures import build_tiny_gpt2_folder

    return build_tiny_gpt2_folder(tmp_path_factory.mktemp("tiny_gpt2") / "model")


@pytest.fixture(scope="session")
def tiny_gguf_file(tmp_path_factory: pytest.TempPathFactory, tiny_llama_folder: Path) -> Path:
    """`tiny_llama_folder` written as an f32 GGUF file with its tokenizer in the metadata (skips when
    the optional `gguf` package is missing)."""
    pytest.importorskip("gguf", reason="pip install gguf (the smollm2 extra) to write GGUF files")
    from model_fixtures import write_llama_gguf

    return write_llama_gguf(tiny_llama_folder, tmp_path_factory.mktemp("tiny_gguf") / "tiny-llama.gguf")
