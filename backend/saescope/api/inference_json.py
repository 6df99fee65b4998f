"""The JSON body of `POST /inference/activations`, assembled from pre-encoded pieces.

Owns `LabelFragments` (per dictionary version: each feature's `{"index":i,"activation":` prefix and
`,"label":"..."}` suffix, JSON-encoded once) and `activations_json` (the whole response body). A
128-token answer holds 640 or more `{index, activation, label}` entries; building them as dicts and
serialising costs about 0.7 ms, joining pre-encoded fragments with the activations formatted in one
`to_json` call about 0.2 ms, the same bytes' meaning (the API tests parse it back and the
schemathesis fuzz checks it against `ActivationsResponse`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from pydantic_core import to_json

MAX_CACHED_DICTIONARIES = 16


class LabelFragments:
    """JSON fragments of every feature entry of one dictionary version (labels fixed at publish)."""

    def __init__(self, d_sae: int, labels: Sequence[str]) -> None:
        n_labels = len(labels)
        self.prefix = [b'{"index":%d,"activation":' % i for i in range(d_sae)]
        self.suffix = [b',"label":' + to_json(labels[i] if i < n_labels else "") + b"}" for i in range(d_sae)]

    def per_token(
        self, indices: Sequence[Sequence[int]], values: Sequence[Sequence[float]], limit: int
    ) -> bytes:
        """`[[{"index", "activation", "label"}, ...] per token]` for matching index / value rows,
        at most `limit` entries a token (a micro-batch computes its largest top_k for all)."""
        flat = [v for row in values for v in row[:limit]]
        # one to_json call formats every activation (non-finite ones as null, like json_response)
        numbers = iter(to_json(flat, inf_nan_mode="null")[1:-1].split(b",")) if flat else iter(())
        prefix, suffix = self.prefix, self.suffix
        rows = [
            b"[" + b",".join([prefix[i] + next(numbers) + suffix[i] for i in row[:limit]]) + b"]" for row in indices
        ]
        return b"[" + b",".join(rows) + b"]"


class LabelFragmentCache:
    """`LabelFragments` per (dictionary id, created_at), at most MAX_CACHED_DICTIONARIES kept."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], LabelFragments] = {}
        self._lock = threading.Lock()

    def get(self, info: dict[str, Any], labels_of: Any) -> LabelFragments:
        """Fragments of the dictionary `info` (a store brief); `labels_of(id, version)` gives labels."""
        key = (str(info["id"]), str(info["created_at"]))
        found = self._items.get(key)
        if found is not None:
            return found
        fragments = LabelFragments(int(info["d_sae"]), labels_of(info["id"], info["created_at"]))
        with self._lock:
            if len(self._items) >= MAX_CACHED_DICTIONARIES:
                self._items.pop(next(iter(self._items)))
            self._items[key] = fragments
        return fragments


def activations_json(
    tokens: Sequence[str], token_ids: Sequence[int], results: Sequence[dict[str, Any]]
) -> bytes:
    """The ActivationsResponse body; each result holds `dictionary_id`, `hook_name`, `per_token`
    (bytes from `LabelFragments.per_token`), `token_totals` and `token_l0`."""
    parts = [
        b'{"dictionary_id":' + to_json(r["dictionary_id"])
        + b',"hook_name":' + to_json(r["hook_name"])
        + b',"per_token":' + r["per_token"]
        + b',"token_totals":' + to_json(r["token_totals"], inf_nan_mode="null")
        + b',"token_l0":' + to_json(r["token_l0"])
        + b"}"
        for r in results
    ]
    return (
        b'{"tokens":' + to_json(list(tokens))
        + b',"token_ids":' + to_json(list(token_ids))
        + b',"results":[' + b",".join(parts) + b"]}"
    )
