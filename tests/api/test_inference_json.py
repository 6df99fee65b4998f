"""The pre-encoded inference body parses to exactly what a dict + json serialisation would give, and
the compiled assembly gives the same bytes as joining the fragments in Python."""

from __future__ import annotations

import json
import math

import numpy as np

from saescope.api.inference_json import LabelFragmentCache, LabelFragments, activations_json
from saescope.api.schemas import ActivationsResponse
from saescope.engine.top_features import RowSummaries

LABELS = ['plain', 'quote " and \\ backslash', "newline\nand tab\t", "unicode é → 字", ""]


def _summaries(indices, values, k=3):
    """[pos, k] summaries whose firing entries are the given rows (the rest zero-padded), float64 so
    the test values keep every digit."""
    top_values, top_indices = np.zeros((len(indices), k)), np.zeros((len(indices), k), np.int64)
    for r, (ix, vs) in enumerate(zip(indices, values)):
        top_indices[r, : len(ix)], top_values[r, : len(vs)] = ix, vs
    return RowSummaries(top_values, top_indices, top_values.sum(axis=-1), np.array([len(ix) for ix in indices], np.int64))


def _expected(indices, values, labels):
    return [
        [{"index": i, "activation": v, "label": labels[i] if i < len(labels) else ""} for i, v in zip(ix, vs)]
        for ix, vs in zip(indices, values)
    ]


def test_per_token_entries_carry_escaped_labels_and_exact_activations():
    fragments = LabelFragments(d_sae=7, labels=LABELS)  # features 5 and 6 have no stored label
    indices = [[], [1, 3, 6], [0], [2, 5]]
    values = [[], [3.25, 1e-07, 0.1], [12345.678901234], [2.0, 0.30000000000000004]]
    got = json.loads(fragments.per_token(_summaries(indices, values), 5))
    assert got == _expected(indices, values, LABELS)


def test_non_finite_activations_become_null_and_empty_input_is_an_empty_list():
    fragments = LabelFragments(d_sae=2, labels=["a", "b"])
    assert json.loads(fragments.per_token(_summaries([[0, 1]], [[math.inf, math.nan]]), 5)) == [
        [{"index": 0, "activation": None, "label": "a"}, {"index": 1, "activation": None, "label": "b"}]
    ]
    assert json.loads(fragments.per_token(_summaries([], []), 5)) == []
    assert json.loads(fragments.per_token(_summaries([[]], [[]]), 5)) == [[]]


def test_whole_body_matches_the_response_schema():
    fragments = LabelFragments(d_sae=4, labels=LABELS[:4])
    body = activations_json(
        ["<bos>", "x", ' "y"'],
        [0, 17, 3],
        [
            {
                "dictionary_id": 'd "1"',
                "hook_name": "blocks.0.mlp.hook_post",
                "per_token": fragments.per_token(_summaries([[], [1, 2], [3]], [[], [0.5, 0.25], [9.0]]), 5),
                "token_totals": [0.0, 0.75, 9.0],
                "token_l0": [0, 2, 1],
            }
        ],
    )
    parsed = json.loads(body)
    ActivationsResponse.model_validate(parsed)
    assert parsed["tokens"] == ["<bos>", "x", ' "y"'] and parsed["results"][0]["dictionary_id"] == 'd "1"'
    assert parsed["results"][0]["token_totals"] == [0.0, 0.75, 9.0]
    assert parsed["results"][0]["per_token"][1][1] == {"index": 2, "activation": 0.25, "label": LABELS[2]}


def test_cache_keys_on_dictionary_version():
    cache, calls = LabelFragmentCache(), []

    def labels_of(dictionary_id, version):
        calls.append(version)
        return [f"{dictionary_id}@{version}"]

    info = {"id": "d", "created_at": "t1", "d_sae": 1}
    first = cache.get(info, labels_of)
    assert cache.get(info, labels_of) is first and calls == ["t1"]
    republished = cache.get({**info, "created_at": "t2"}, labels_of)
    assert json.loads(republished.per_token(_summaries([[0]], [[1.0]]), 5))[0][0]["label"] == "d@t2"


def test_entries_beyond_the_limit_are_left_out():
    fragments = LabelFragments(d_sae=4, labels=LABELS[:4])
    got = json.loads(fragments.per_token(_summaries([[3, 1, 0], [2]], [[3.0, 2.0, 1.0], [0.5]]), 2))
    assert got == _expected([[3, 1], [2]], [[3.0, 2.0], [0.5]], LABELS)


def _joined_in_python(fragments_of, indices, values, limit):
    """The body as the fragments joined in Python (the assembly before the compiled kernel)."""
    prefix, suffix = fragments_of
    numbers = iter(json.dumps([v for row in values for v in row[:limit]])[1:-1].replace(" ", "").split(","))
    rows = [b"[" + b",".join(prefix[i] + next(numbers).encode() + suffix[i] for i in row[:limit]) + b"]" for row in indices]
    return b"[" + b",".join(rows) + b"]"


def test_compiled_assembly_gives_the_bytes_of_a_python_join_on_random_rows():
    rng = np.random.default_rng(0)
    labels = [f"feature {i} \"q\" é" for i in range(40)]
    fragments = LabelFragments(d_sae=50, labels=labels)  # the last ten have no label
    prefix = [b'{"index":%d,"activation":' % i for i in range(50)]
    suffix = [b',"label":' + json.dumps(labels[i] if i < 40 else "", ensure_ascii=False, separators=(",", ":")).encode() + b"}" for i in range(50)]
    for limit in (1, 3, 5):
        indices = [list(rng.choice(50, size=rng.integers(0, 6), replace=False)) for _ in range(30)]
        values = [sorted((float(np.float32(v)) for v in rng.random(len(ix)) * 10), reverse=True) for ix in indices]
        got = fragments.per_token(_summaries(indices, values, k=5), limit)
        assert got == _joined_in_python((prefix, suffix), indices, values, limit)
