"""Publishing SAELens folders of any model: the `saescope precompute` command.

Owns turning a model location and a list of dictionary folders into publish entries (id = folder
name, metrics from `metrics.json`, display prefix from the hook point, locations relative to the
atlas when inside it) and running `pipeline.publish.precompute_and_publish` over contexts of the
offline corpus.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saescope import __version__
from saescope.analysis.config import PrecomputeConfig
from saescope.atlas_layout import AtlasLayout
from saescope.devices import resolve_device
from saescope.dictionaries.evaluation import METRICS_FILE, load_metrics
from saescope.dictionaries.saelens_format import load_dictionary
from saescope.errors import ConfigError
from saescope.lm.checkpoint import TOKENIZER_DIR, is_checkpoint_folder
from saescope.pipeline.contexts import CORPUS_NAME, corpus_contexts
from saescope.pipeline.dictionaries import load_model, pruned_indices
from saescope.pipeline.publish import DictionaryEntry, ModelRecord, display_prefix, precompute_and_publish
from saescope.pipeline.validation import check_fits_model

BUILTIN_MODEL_ID = "builtin-stdlib-1l"
PRECOMPUTE_CONTEXT_SEED = 2


def location_in_atlas(location: str, atlas_root: Path) -> str:
    """A model/tokenizer location as stored: relative to the atlas root when inside it, else as given."""
    path = Path(location)
    if path.exists():
        try:
            return str(path.resolve().relative_to(atlas_root.resolve()))
        except ValueError:
            return str(path.resolve())
    return location


def model_id_for(model_location: str, layout: AtlasLayout) -> str:
    """The store id of a model: the built-in id for the atlas's own model folder, else its name."""
    path = Path(model_location)
    if path.exists() and path.resolve() == layout.model_dir.resolve():
        return BUILTIN_MODEL_ID
    return path.name if path.exists() else model_location


def _model_record(model_location: str, layout: AtlasLayout) -> ModelRecord:
    location = location_in_atlas(model_location, layout.root)
    if is_checkpoint_folder(model_location):
        source = "builtin"
    else:
        source = "local" if Path(model_location).exists() else "pretrained"
    tokenizer = str(Path(location) / TOKENIZER_DIR) if source == "builtin" else location
    return ModelRecord(id=model_id_for(model_location, layout), source=source, location=location, tokenizer=tokenizer)


def folder_entry(folder: Path, layout: AtlasLayout, model_location: str, model: Any) -> DictionaryEntry:
    """The publish entry of one SAELens folder (ConfigError when its cfg.json names no hook point or
    it does not fit `model`'s hook point)."""
    folder = Path(folder)
    dictionary = load_dictionary(folder)
    if dictionary.metadata.hook_name == "":
        raise ConfigError(f"{folder}/cfg.json names no hook point (metadata.hook_name)")
    check_fits_model(model, dictionary, str(folder))
    metrics = load_metrics(folder).model_dump(mode="json") if (folder / METRICS_FILE).is_file() else {}
    return DictionaryEntry(
        id=folder.name,
        dictionary=dictionary,
        weights_path=location_in_atlas(str(folder), layout.root),
        metrics=metrics,
        display_prefix=display_prefix(dictionary.metadata.hook_name),
        provenance={"model": str(model_location), "corpus": CORPUS_NAME, "saescope_version": __version__},
        pruned=pruned_indices(folder),
    )


def precompute_folders(
    atlas: Path,
    model_location: str,
    sae_folders: list[Path],
    store_url: str | None = None,
    n_contexts: int = 2048,
    device: str = "auto",
    config: PrecomputeConfig | None = None,
) -> str:
    """Precompute and publish the feature records of SAELens folders for one model into an atlas store;
    returns the one-line report (empty on ranks other than 0 of a multi-process run)."""
    if n_contexts < 1:
        raise ConfigError("--contexts must be positive")
    layout = AtlasLayout(root=Path(atlas))
    model = load_model(model_location, device)
    entries = [folder_entry(folder, layout, model_location, model) for folder in sae_folders]
    layout.root.mkdir(parents=True, exist_ok=True)  # only once every dictionary fits the model
    report = precompute_and_publish(
        store_url=layout.store_url(store_url),
        model=model,
        model_record=_model_record(model_location, layout),
        entries=entries,
        contexts=corpus_contexts(model, "train", n_contexts, PRECOMPUTE_CONTEXT_SEED),
        config=(config or PrecomputeConfig()).model_copy(update={"device": str(resolve_device(device))}),
        work_dir=layout.work_dir / "precompute",
        atlas_root=layout.root,
    )
    if report is None:  # a rank other than 0 of a multi-process precompute: rank 0 publishes and reports
        return ""
    return (
        f"published {', '.join(report.dictionary_ids)}: {report.n_features} features, {report.n_examples} "
        f"examples over {report.n_tokens} tokens in {report.timings.get('total', 0):.1f} s"
    )
