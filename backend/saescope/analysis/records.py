"""Feature records: the per-feature JSON-ready values that the store persists, built from arrays.

Owns turning what the analyses computed for one dictionary (streaming statistics, logit effects,
neighbours, cross-dictionary matches, UMAP coordinates, labels) into one dict per feature with the
keys of the store's `features` table, rounded to a fixed number of significant digits; the display
prefix of a hook point (`L{layer}{R|A|M}`, OpenMOSS style); and the JSON form of a model's config.
Arrays in, dicts out: no SQL, no files, no model runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from saescope.activations.hooks import hook_layer, hook_suffix
from saescope.analysis.geometry import Neighbours
from saescope.analysis.labels import FeatureLabels
from saescope.analysis.logit_effects import LogitEffects
from saescope.analysis.streaming import FeatureStreamResult


@dataclass
class Match:
    """Best match of every feature of one dictionary in another dictionary."""

    dictionary_id: str
    index: np.ndarray  # [d_sae] int64, feature index in the other dictionary
    cosine: np.ndarray  # [d_sae] float32


@dataclass
class FeatureAnalyses:
    """What the per-dictionary analyses found beyond the streaming statistics."""

    logits: LogitEffects | None
    neighbours: Neighbours | None
    matches: list[Match]
    umap: np.ndarray | None  # [d_sae, 2]
    labels: FeatureLabels


def round_sig(x: float, digits: int = 6) -> float:
    """`x` to `digits` significant digits (keeps tiny activation scales meaningful)."""
    return float(f"{float(x):.{digits}g}")


def display_prefix(hook_name: str) -> str:
    """`L{layer}{R|A|M}` (OpenMOSS style) for a hook point, '' when it has no layer."""
    layer = hook_layer(hook_name)
    if layer is None:
        return ""
    s = hook_suffix(hook_name)
    kind = "M" if "mlp" in s else "A" if ("attn" in s) else "R"
    return f"L{layer}{kind}"


def model_config_json(model: Any) -> dict[str, Any]:
    """A transformer_lens model's config with JSON values (other values as their `str`)."""
    cfg = model.cfg.to_dict() if hasattr(model.cfg, "to_dict") else dict(vars(model.cfg))
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float, bool)) for x in v):
            out[k] = list(v)
        else:
            out[k] = str(v)
    return out


def _effects(ids: np.ndarray, vals: np.ndarray, vocab: list[str]) -> list[dict[str, Any]]:
    return [{"token": vocab[t] if t < len(vocab) else str(t), "token_id": int(t), "value": round_sig(v, 5)}
            for t, v in zip(ids.tolist(), vals.tolist())]


def match_entry(match: Match, feature: int, labels: Sequence[str]) -> dict[str, Any]:
    """The stored form of `feature`'s best match in `match.dictionary_id` (`labels`: that dictionary's)."""
    j = int(match.index[feature])
    return {"dictionary_id": match.dictionary_id, "index": j, "cosine": round_sig(match.cosine[feature], 5),
            "label": labels[j] if j < len(labels) else ""}


def merged_matches(stored: list[list[dict[str, Any]]], new: Sequence[Match],
                   labels_by_dict: dict[str, list[str]]) -> list[list[dict[str, Any]]]:
    """Stored matches per feature with those against the dictionaries in `new` replaced."""
    replaced = {m.dictionary_id for m in new}
    out = []
    for f, kept in enumerate(stored):
        row = [m for m in kept if m.get("dictionary_id") not in replaced]
        row.extend(match_entry(m, f, labels_by_dict[m.dictionary_id]) for m in new)
        out.append(row)
    return out


def _head_shares(logits: LogitEffects | None, f: int) -> list[float] | None:
    """Feature `f`'s per-head share of its decoder norm (attn.hook_z dictionaries), else None."""
    if logits is None or logits.head_norm_share is None:
        return None
    return [round_sig(v, 5) for v in logits.head_norm_share[f].tolist()]


def _logit_columns(logits: LogitEffects | None, f: int, vocab: list[str]) -> dict[str, Any]:
    if logits is None:
        return {"logits_top": [], "logits_bottom": [], "logits_histogram": {"edges": [], "counts": []}}
    return {
        "logits_top": _effects(logits.top_ids[f], logits.top_values[f], vocab),
        "logits_bottom": _effects(logits.bottom_ids[f], logits.bottom_values[f], vocab),
        "logits_histogram": {"edges": [round_sig(v, 5) for v in logits.hist_edges[f].tolist()],
                             "counts": logits.hist_counts[f].tolist()},
    }


def feature_records(
    stats: FeatureStreamResult,
    analyses: FeatureAnalyses,
    decoder_norm: np.ndarray,
    vocab: list[str],
    labels_by_dict: dict[str, list[str]],
    pruned: Sequence[int] = (),
) -> list[dict[str, Any]]:
    """One dict per feature with the store's `features` columns (all but `dictionary_id`).

    `decoder_norm [d_sae]`; `labels_by_dict`: feature labels of every dictionary named in a match."""
    n = len(decoder_norm)
    pruned_set = {int(p) for p in pruned}
    fire, density = stats.fire_count.numpy(), stats.density.numpy()
    amax, mean = stats.max_activation.numpy(), stats.mean_activation.numpy()
    hedges, hcounts = stats.hist_edges.numpy(), stats.hist_counts.numpy()
    qedges = stats.interval_edges.numpy()
    own_labels = analyses.labels.label
    umap = analyses.umap
    neighbours = analyses.neighbours
    rows = []
    for f in range(n):
        alive = fire[f] > 0
        row: dict[str, Any] = {
            "index": f,
            "density": float(density[f]),
            "max_activation": round_sig(amax[f]),
            "mean_activation": round_sig(mean[f]),
            "decoder_norm": round_sig(decoder_norm[f]),
            "dead": not alive,
            "pruned": f in pruned_set,
            "label": own_labels[f],
            "top_tokens": analyses.labels.top_tokens[f],
            "score": None,
            "histogram": {"edges": [round_sig(v, 7) for v in hedges[f].tolist()], "counts": hcounts[f].tolist()}
            if alive else {"edges": [], "counts": []},
            "quantile_edges": [round_sig(v, 7) for v in qedges[f].tolist()] if alive else [],
            "umap_x": float(umap[f, 0]) if umap is not None and np.isfinite(umap[f]).all() else None,
            "umap_y": float(umap[f, 1]) if umap is not None and np.isfinite(umap[f]).all() else None,
            **_logit_columns(analyses.logits, f, vocab),
            "head_norm_share": _head_shares(analyses.logits, f),
            "neighbours": [
                {"index": int(j), "cosine": round_sig(c, 5), "label": own_labels[j]}
                for j, c in zip(neighbours.index[f].tolist(), neighbours.cosine[f].tolist())
            ] if neighbours is not None else [],
            "matches": [match_entry(m, f, labels_by_dict.get(m.dictionary_id, [])) for m in analyses.matches],
        }
        rows.append(row)
    return rows
