"""The atlas of the API tests (fixture `random_sae_atlas`): the tiny trained model, two random SAEs,
the real precompute.

Built once per session in a temporary folder: the tiny checkpoint (tests/conftest.py `tiny_lm_dir`) is
copied to ATLAS/model, a StandardSAE on `blocks.0.mlp.hook_post` and one on `blocks.0.hook_resid_post`
are saved as SAELens folders, and `precompute_and_publish` writes the store (SQLite by default, or the
given URL, e.g. PostgreSQL) from 160 contexts of standard-library text. The builder then adds, through
a separate writable connection, one explanation (for text search) and one dictionary left in status
`building` (must stay invisible).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

MLP_HOOK = "blocks.0.mlp.hook_post"
RESID_HOOK = "blocks.0.hook_resid_post"
EXPLAINED_FEATURE = 3
EXPLANATION = "Mentions of Zebra crossings"


@dataclass
class RandomSAEAtlas:
    """Where the atlas lives, its store URL, the contexts it was built from and its SAEs."""

    root: Path
    store_url: str
    contexts: object  # PackedContexts
    dictionaries: dict  # id -> Dictionary


def _sae(d_in: int, d_sae: int, hook: str, seed: int, n_ctx: int):
    from saescope.dictionaries.base import DictionaryMetadata
    from saescope.dictionaries.architectures.standard import StandardSAE

    sae = StandardSAE(d_in, d_sae, DictionaryMetadata(model_name="tiny", hook_name=hook, context_size=n_ctx))
    sae.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.b_enc.fill_(-0.02)
    return sae


def build_tiny_atlas(root: Path, tiny_lm_dir: Path, tiny_lm, store_url: str | None = None) -> RandomSAEAtlas:
    from saescope.analysis.config import PrecomputeConfig
    from saescope.atlas_layout import AtlasLayout
    from saescope.corpus.packing import pack_documents
    from saescope.corpus.stdlib import stdlib_documents
    from saescope.dictionaries.saelens_format import save_dictionary
    from saescope.pipeline.publish import DictionaryEntry, ModelRecord, precompute_and_publish

    layout = AtlasLayout(root=root)
    shutil.copytree(tiny_lm_dir, layout.model_dir)
    n_ctx = int(tiny_lm.cfg.n_ctx)
    contexts = pack_documents(stdlib_documents("heldout", max_files=40), tiny_lm.tokenizer, n_ctx, max_contexts=160)
    dictionaries = {
        "mlp-sae": _sae(int(tiny_lm.cfg.d_mlp), 64, MLP_HOOK, 1, n_ctx),
        "resid-sae": _sae(int(tiny_lm.cfg.d_model), 48, RESID_HOOK, 2, n_ctx),
    }
    entries = []
    for name, sae in dictionaries.items():
        save_dictionary(sae, layout.dictionary_dir(name))
        entries.append(
            DictionaryEntry(
                id=name,
                dictionary=sae,
                weights_path=f"dictionaries/{name}",
                metrics={"l0": 3.5, "explained_variance": 0.5},
                provenance={"corpus": "stdlib-heldout", "seed": 1},
            )
        )
    url = store_url or layout.sqlite_url
    precompute_and_publish(
        url,
        tiny_lm,
        ModelRecord(id="tiny", source="builtin", location="model", tokenizer="model/tokenizer"),
        entries,
        contexts,
        config=PrecomputeConfig(
            top_k=5, n_intervals=3, examples_per_interval=2, n_random=2, progress=False, device="cpu",
            umap_n_neighbors=5,
        ),
        work_dir=layout.work_dir,
        atlas_root=root,
    )
    _add_test_rows(url)
    return RandomSAEAtlas(root=root, store_url=url, contexts=contexts, dictionaries=dictionaries)


def _add_test_rows(url: str) -> None:
    """One explanation (searchable) and one dictionary still `building` (invisible to the API).

    Written the way an explainer must write: the changed dictionary's pre-rendered pages are dropped
    in the same transaction and re-rendered afterwards."""
    from saescope.store.database import create_database
    from saescope.store.pages import fill_feature_pages
    from saescope.store.schema import DictionaryRow, ExplanationRow, FeatureRow
    from saescope.store.writer import delete_feature_pages

    engine = create_database(url)
    with engine.begin() as conn:
        delete_feature_pages(conn, ["mlp-sae"])
        conn.execute(
            ExplanationRow.__table__.insert().values(
                dictionary_id="mlp-sae", feature_index=EXPLAINED_FEATURE, text=EXPLANATION, method="llm",
                explainer="test", score_top_random=0.75,
            )
        )
        conn.execute(
            DictionaryRow.__table__.insert().values(
                id="half-built", model_id="tiny", hook_name=MLP_HOOK, kind="sae", architecture="standard",
                d_in=128, d_sae=4, weights_path="dictionaries/none", status="building", hyperparameters={},
                metrics={}, provenance={}, display_prefix="",
            )
        )
        conn.execute(FeatureRow.__table__.insert().values(dictionary_id="half-built", index=0, label="hidden"))
    assert fill_feature_pages(engine, ["mlp-sae"]) == 64
    engine.dispose()


def make_settings(atlas: RandomSAEAtlas, **limits):
    from saescope.api.settings import ApiLimits, ApiSettings

    return ApiSettings(
        store_url=atlas.store_url,
        atlas_root=atlas.root,
        device="cpu",
        limits=ApiLimits(**limits),
        torch_threads=1,
    )
