"""Optional pipeline steps reach the atlas: random and ICA baselines, pruning flags, fine-tuned
decoders (`saescope demo --baselines ... --prune --finetune`), and activation cache folders
(`saescope cache-activations --out FOLDER` then `train-sae --activations FOLDER`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from saescope.cli import build_parser, main

pytestmark = pytest.mark.slow

HOOK = "blocks.0.mlp.hook_post"


@pytest.fixture(scope="module")
def postprocessed_atlas(demo_atlas, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the demo atlas rebuilt with random and ICA baselines, pruning and fine-tuning on."""
    from saescope.pipeline.build import build_atlas
    from saescope.pipeline.build_config import builtin_tiny_preset

    root = tmp_path_factory.mktemp("postprocessed") / "atlas"
    shutil.copytree(demo_atlas.root, root)
    config = builtin_tiny_preset(device="cpu", sae_tokens=30_000, baselines=["neurons", "random", "ica"],
                                     postprocess={"prune": True, "finetune": True})
    report = build_atlas(root, config)
    return root, report


def _stored_features(root: Path, dictionary_id: str) -> list[tuple[int, bool]]:
    from saescope.store.database import create_database
    from saescope.store.schema import FeatureRow

    db = create_database(f"sqlite:///{root / 'atlas.db'}")
    try:
        with db.connect() as conn:
            return [tuple(r) for r in conn.execute(
                select(FeatureRow.index, FeatureRow.pruned)
                .where(FeatureRow.dictionary_id == dictionary_id).order_by(FeatureRow.index)
            ).all()]
    finally:
        db.dispose()


def test_random_and_ica_baselines_are_built_and_published(postprocessed_atlas) -> None:
    root, report = postprocessed_atlas
    kinds = {d.id: d.kind for d in report.dictionaries}
    assert kinds["random"] == "random" and kinds["ica"] == "ica"
    assert not report.precompute_reused
    for name in ("random", "ica"):
        assert len(_stored_features(root, name)) == next(d.d_sae for d in report.dictionaries if d.id == name)


def test_pruning_flags_reach_the_store(postprocessed_atlas) -> None:
    from saescope.dictionaries.postprocess import load_prune_result

    root, _ = postprocessed_atlas
    for name in ("relu-64", "relu-256"):
        result = load_prune_result(root / "dictionaries" / name)
        assert result is not None
        assert [pruned for _, pruned in _stored_features(root, name)] == result.pruned


def test_fine_tuned_decoders_are_published_beside_their_sae(postprocessed_atlas) -> None:
    root, report = postprocessed_atlas
    tuned = next(d for d in report.dictionaries if d.id == "relu-64-finetuned")
    notes = json.loads((root / "dictionaries" / "relu-64-finetuned" / "training.json").read_text())
    assert notes["finetuned_from"] == "relu-64"
    assert notes["after"]["mse"] <= notes["before"]["mse"] * 1.05
    assert tuned.d_sae == 64 and len(_stored_features(root, "relu-64-finetuned")) == 64


def test_the_map_holds_the_live_sae_features_and_no_baseline(postprocessed_atlas) -> None:
    from saescope.store.database import create_database
    from saescope.store.schema import DictionaryRow, FeatureRow

    root, _ = postprocessed_atlas
    db = create_database(f"sqlite:///{root / 'atlas.db'}")
    try:
        with db.connect() as conn:
            rows = conn.execute(
                select(DictionaryRow.kind, FeatureRow.dead, FeatureRow.umap_x)
                .join(DictionaryRow, DictionaryRow.id == FeatureRow.dictionary_id)
            ).all()
    finally:
        db.dispose()
    mapped = [(kind, dead) for kind, dead, x in rows if x is not None]
    assert mapped and all(kind == "sae" and not dead for kind, dead in mapped)
    assert len(mapped) == sum(1 for kind, dead, _ in rows if kind == "sae" and not dead)


def test_the_demo_trains_its_topk_sae_with_the_chosen_dead_feature_settings() -> None:
    from saescope.pipeline.build import _trainer_config
    from saescope.pipeline.build_config import builtin_preset

    config = builtin_preset()
    spec = next(s for s in config.saes if s.architecture == "topk")
    trainer = _trainer_config(spec, config)
    assert trainer.architecture_options == spec.architecture_options and trainer.options is not None
    assert spec.dead_tokens is None or trainer.dead_tokens == spec.dead_tokens


def test_the_demo_command_exposes_the_optional_steps() -> None:
    args = build_parser().parse_args(["demo", "--baselines", "pca,ica", "--prune", "--finetune"])
    assert (args.baselines, args.prune, args.finetune) == ("pca,ica", True, True)


def test_an_unknown_baseline_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--tiny", "--no-serve", "--atlas", str(tmp_path / "a"), "--baselines", "svd"]) == 2
    assert "baselines" in capsys.readouterr().err


def test_cache_activations_to_a_folder_feeds_train_sae(tmp_path: Path, tiny_lm_dir: Path) -> None:
    from saescope.activations.cache import ActivationCache
    from saescope.dictionaries.saelens_format import load_dictionary

    cache = tmp_path / "cache"
    assert main(["cache-activations", "--model", str(tiny_lm_dir), "--hook", HOOK, "--tokens", "2000",
                 "--device", "cpu", "--out", str(cache)]) == 0
    opened = ActivationCache.open(cache)
    assert opened.n_tokens >= 2000 and opened.manifest.hook_name == HOOK
    out = tmp_path / "sae"
    assert main(["train-sae", "--activations", str(cache), "--architecture", "relu", "--d-sae", "32",
                 "--tokens", "4000", "--batch-size", "500", "--out", str(out)]) == 0
    assert load_dictionary(out).d_in == opened.d_in
