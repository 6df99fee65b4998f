"""The LLM-free explainer and simulator, and the score arithmetic (Pearson, balanced accuracy, CIs)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from planted import VOCAB, planted_dictionary
from saescope.interpret.config import ExplainConfig
from saescope.interpret.fragments import rescale
from saescope.interpret.lookup import LookupSimulator, explanation_terms, lookup_explanation
from saescope.interpret.run import Interpreter, detection_items, fuzzing_items, interpret_dictionary
from saescope.interpret.scoring import Score, balanced_accuracy, pearson, summarise, summarise_scores


def test_pearson_is_pooled_over_tokens_and_nan_for_constant_inputs() -> None:
    assert pearson(np.array([0, 1, 2, 3.0]), np.array([0, 2, 4, 6.0]))[0] == pytest.approx(1.0)
    assert pearson(np.array([0, 1, 0, 1.0]), np.array([1, 0, 1, 0.0]))[0] == pytest.approx(-1.0)
    assert pearson(np.array([0, 1, 2.0]), np.zeros(3)) == (None, "constant prediction")
    assert pearson(np.zeros(3), np.array([0, 1, 2.0])) == (None, "constant activation")


def test_balanced_accuracy_averages_both_rates_and_needs_both_classes() -> None:
    assert balanced_accuracy([1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1]) == (pytest.approx((0.5 + 0.75) / 2), "")
    assert balanced_accuracy([1, 1], [1, 1]) == (None, "no negative items")


def test_a_summary_counts_nan_and_failed_scores_and_gives_a_t_interval() -> None:
    s = summarise([0.2, 0.4, 0.6, None, None], n_nan=1, n_failed=1, scorer="simulation", method="lookup",
                  version="simulation-lookup/1", variant="top")
    assert (s.n, s.n_nan, s.n_failed) == (3, 1, 1)
    half = 4.303 * 0.2 / math.sqrt(3)
    assert s.mean == pytest.approx(0.4) and s.ci_low == pytest.approx(0.4 - half) and s.ci_high == pytest.approx(0.4 + half)
    scores = [Score("detection", "lookup", "detection-lookup/1", "balanced_accuracy", None, nan=True)] * 2
    assert summarise_scores(scores)[0].n_nan == 2 and summarise_scores(scores)[0].mean is None


def test_rescale_maps_the_top_activation_to_ten() -> None:
    assert rescale(np.array([0.0, 1.0, 2.0, -1.0]), 2.0).tolist() == [0, 5, 10, 0]
    assert rescale(np.array([1.0]), 0.0).tolist() == [0]


def test_the_lookup_explanation_names_the_planted_token_with_its_strength() -> None:
    frags = planted_dictionary([" alpha", "beta-after-gamma"])
    text = lookup_explanation(frags.features[0], VOCAB, frags.token_counts)
    assert text.startswith('Fires on the tokens " alpha" (strength 10)')
    assert '" beta"' in lookup_explanation(frags.features[1], VOCAB, frags.token_counts)


def test_explanation_terms_read_quoted_tokens_or_free_text() -> None:
    assert explanation_terms('Fires on the tokens "def" (strength 7), "\\n" (strength 3).') == [("def", 7.0), ("\n", 3.0)]
    assert explanation_terms("Fires on alpha tokens in lists") == [("alpha", 10.0), ("lists", 10.0)]


def test_the_lookup_simulator_predicts_strengths_on_matching_tokens() -> None:
    sim = LookupSimulator(VOCAB)
    frag = planted_dictionary([" alpha"]).features[0].scoring[0]
    (pred,) = sim.simulate('Fires on the tokens "alpha" (strength 6).', [frag])
    assert pred.tolist() == [6.0 if t == 1 else 0.0 for t in frag.tokens.tolist()]


def test_lookup_scores_of_planted_features_are_exact() -> None:
    frags = planted_dictionary([" alpha", "beta-after-gamma"])
    interpreter = Interpreter("lookup", ["simulation", "detection", "fuzzing"], VOCAB, frags.token_counts,
                              ExplainConfig(progress=False))
    alpha, beta = interpret_dictionary(frags, interpreter, progress=False)
    for variant in ("top_and_random", "top", "random"):
        assert alpha.score("simulation", variant) == pytest.approx(1.0)
    assert alpha.score("detection", "balanced_accuracy") == 1.0 and alpha.score("fuzzing", "balanced_accuracy") == 1.0
    f = frags.features[1]
    sets = f.scoring + f.random
    truth = np.concatenate([x.activations for x in sets])
    # the lookup explanation names " beta" first (strength 10) and possibly " gamma" weaker: recompute it
    pred = np.concatenate(LookupSimulator(VOCAB).simulate(beta.explanation, sets))
    assert beta.score("simulation", "top_and_random") == pytest.approx(np.corrcoef(truth, pred)[0, 1])
    assert {s.version for s in alpha.scores} == {"simulation-lookup/1", "detection-lookup/1", "fuzzing-lookup/1"}


def test_detection_and_fuzzing_items_are_balanced_and_labelled() -> None:
    feature = planted_dictionary([" alpha"]).features[0]
    items, labels = detection_items(feature, 3)
    assert labels == [1, 1, 1, 0, 0, 0]
    assert all(x.activations.max() > 0 for x in items[:3]) and all(x.activations.max() == 0 for x in items[3:])
    items, marks, labels = fuzzing_items(feature, 2, seed=0)
    assert labels == [1, 0, 1, 0]
    assert (items[0].activations[marks[0]] > 0).all() and (items[1].activations[marks[1]] == 0).all()
    assert len(marks[0]) == len(marks[1])


def test_a_dead_feature_gets_nan_scores_and_no_explanation() -> None:
    frags = planted_dictionary([" alpha"])
    frags.features[0].explanation, frags.features[0].scoring = [], []
    (result,) = interpret_dictionary(frags, Interpreter("lookup", ["simulation"], VOCAB, frags.token_counts,
                                                        ExplainConfig(progress=False)), progress=False)
    assert result.explanation == "" and all(s.nan and s.value is None for s in result.scores)
