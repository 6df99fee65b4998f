"""The pre-encoded inference body parses to exactly what a dict + json serialisation would give."""

from __future__ import annotations

import json
import math

from saescope.api.inference_json import LabelFragmentCache, LabelFragments, activations_json
from saescope.api.schemas import ActivationsResponse

LABELS = ['plain', 'quote " and \\ backslash', "newline\nand tab\t", "unicode é → 字", ""]


def _expected(indices, values, labels):
    return [
        [{"index": i, "activation": v, "label": labels[i] if i < len(labels) else ""} for i, v in zip(ix, vs)]
        for ix, vs in zip(indices, values)
    ]


def test_per_token_entries_carry_escaped_labels_and_exact_activations():
    fragments = LabelFragments(d_sae=7, labels=LABELS)  # features 5 and 6 have no stored label
    indices = [[], [1, 3, 6], [0], [2, 5]]
    values = [[], [3.25, 1e-07, 0.1], [12345.678901234], [2.0, 0.30000000000000004]]
    got = json.loads(fragments.per_token(indices, values, 5))
    assert got == _expected(indices, values, LABELS)


def test_non_finite_activations_become_null_and_empty_input_is_an_empty_list():
    fragments = LabelFragments(d_sae=2, labels=["a", "b"])
    assert json.loads(fragments.per_token([[0, 1]], [[math.inf, math.nan]], 5)) == [
        [{"index": 0, "activation": None, "label": "a"}, {"index": 1, "activation": None, "label": "b"}]
    ]
    assert json.loads(fragments.per_token([], [], 5)) == []
    assert json.loads(fragments.per_token([[]], [[]], 5)) == [[]]


def test_whole_body_matches_the_response_schema():
    fragments = LabelFragments(d_sae=4, labels=LABELS[:4])
    body = activations_json(
        ["<bos>", "x", ' "y"'],
        [0, 17, 3],
        [
            {
                "dictionary_id": 'd "1"',
                "hook_name": "blocks.0.mlp.hook_post",
                "per_token": fragments.per_token([[], [1, 2], [3]], [[], [0.5, 0.25], [9.0]], 5),
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
    assert json.loads(republished.per_token([[0]], [[1.0]], 5))[0][0]["label"] == "d@t2"


def test_entries_beyond_the_limit_are_left_out():
    fragments = LabelFragments(d_sae=4, labels=LABELS[:4])
    got = json.loads(fragments.per_token([[3, 1, 0], [2]], [[3.0, 2.0, 1.0], [0.5]], 2))
    assert got == _expected([[3, 1], [2]], [[3.0, 2.0], [0.5]], LABELS)
