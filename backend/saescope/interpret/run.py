"""Explaining and scoring the features of one dictionary: the interpret stage's driver.

Owns, per feature: the explanation (lookup or an LLM back end), the scorers asked for —
simulation (Pearson correlation of simulated and real activations pooled over the tokens of the
scoring set: top_and_random, top and random variants), detection and fuzzing (balanced accuracy) —
each `Score` carrying its scorer name and version; per-feature failure handling (an unusable LLM
answer fails that feature's score, the batch goes on); bounded concurrency over features; progress
with calls/s and token counts; and the resumable log of finished features (one JSON line each).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from saescope.errors import ConfigError
from saescope.interpret import lookup, prompts
from saescope.interpret.config import EXPLAINERS, SCORERS, ExplainConfig
from saescope.interpret.fragments import DictionaryFragments, FeatureFragments, Fragment, rescale
from saescope.interpret.llm import ChatBackend, LLMError
from saescope.interpret.prompts import AnswerError
from saescope.interpret.scoring import Score, balanced_accuracy, pearson

SIMULATION_VARIANTS = ("top_and_random", "top", "random")


@dataclass
class FeatureResult:
    """A feature's explanation and scores (what the store keeps)."""

    index: int
    explanation: str
    method: str  # lookup | llm
    explainer: str  # e.g. "lookup/1", "openai:gpt-4o-mini"
    scores: list[Score] = field(default_factory=list)
    error: str = ""  # why there is no explanation (dead feature, LLM failure)

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "explanation": self.explanation, "method": self.method,
                           "explainer": self.explainer, "error": self.error,
                           "scores": [s.as_dict() for s in self.scores]})

    @classmethod
    def from_json(cls, line: str) -> "FeatureResult":
        d = json.loads(line)
        return cls(int(d["index"]), d["explanation"], d["method"], d["explainer"],
                   [Score(**s) for s in d["scores"]], d.get("error", ""))

    def score(self, scorer: str, variant: str) -> float | None:
        return next((s.value for s in self.scores if s.scorer == scorer and s.variant == variant), None)


def validate_choice(explainer: str, scorers: Sequence[str]) -> None:
    if explainer not in EXPLAINERS:
        raise ConfigError(f"unknown explainer {explainer!r}: choose one of {', '.join(EXPLAINERS)}")
    bad = [s for s in scorers if s not in SCORERS]
    if bad or not scorers:
        raise ConfigError(f"unknown scorer(s) {bad or scorers!r}: choose among {', '.join(SCORERS)}")


def _failed(scorer: str, method: str, version: str, variants: Sequence[str], note: str, nan: bool = False) -> list[Score]:
    return [Score(scorer, method, version, v, None, nan=nan, failed=not nan, note=note) for v in variants]


def _levels(fragment: Fragment, feature: FeatureFragments) -> np.ndarray:
    """The fragment's activations on the 0-10 scale prompts show (0: the feature does not fire)."""
    return rescale(fragment.activations, feature.max_activation)


def detection_items(feature: FeatureFragments, per_class: int | None) -> tuple[list[Fragment], list[int]]:
    """Activating fragments (scoring set, then random activating) labelled 1 and unconditional random
    fragments where the feature stays at level 0 of the 0-10 scale labelled 0, at most `per_class` each."""
    positives = [f for f in feature.scoring + feature.random_activating if _levels(f, feature).max(initial=0) > 0]
    negatives = [f for f in feature.random if _levels(f, feature).max(initial=0) == 0]
    if per_class is not None:
        positives, negatives = positives[:per_class], negatives[:per_class]
    return positives + negatives, [1] * len(positives) + [0] * len(negatives)


def fuzzing_items(feature: FeatureFragments, per_class: int | None, seed: int
                  ) -> tuple[list[Fragment], list[np.ndarray], list[int]]:
    """Each activating fragment twice: with its activating tokens (level 1-10) highlighted (label 1) and
    with as many level-0 tokens highlighted (label 0), at most `per_class` of each."""
    levels = [(f, _levels(f, feature)) for f in feature.scoring + feature.random_activating]
    chosen = [(f, lv) for f, lv in levels if lv.max(initial=0) > 0 and (lv == 0).any()]
    if per_class is not None:
        chosen = chosen[:per_class]
    rng = np.random.default_rng([seed, feature.index, 31])
    items, marks, labels = [], [], []
    for f, lv in chosen:
        on = np.nonzero(lv > 0)[0]
        off = np.nonzero(lv == 0)[0]
        items += [f, f]
        marks += [on, np.sort(rng.choice(off, size=min(len(on), len(off)), replace=False))]
        labels += [1, 0]
    return items, marks, labels


class Interpreter:
    """Explains and scores features with one explainer and a list of scorers."""

    def __init__(self, explainer: str, scorers: Sequence[str], vocab: Sequence[str], token_counts: np.ndarray,
                 config: ExplainConfig, backend: ChatBackend | None = None) -> None:
        validate_choice(explainer, scorers)
        if explainer != "lookup" and backend is None:
            raise ConfigError(f"explainer {explainer!r} needs a chat back end")
        self.explainer, self.scorers, self.config = explainer, list(scorers), config
        self.vocab, self.token_counts, self.backend = list(vocab), token_counts, backend
        self.lookup = lookup.LookupSimulator(self.vocab)
        self.llm_scoring = explainer != "lookup" and config.simulator == "same"

    @property
    def explainer_name(self) -> str:
        return f"lookup/{lookup.VERSION}" if self.backend is None or self.explainer == "lookup" else self.backend.name

    @property
    def method(self) -> str:
        return "lookup" if self.explainer == "lookup" else "llm"

    def _version(self, scorer: str) -> tuple[str, str]:
        method = "llm" if self.llm_scoring else "lookup"
        v = prompts.VERSION if self.llm_scoring else lookup.VERSION
        return method, f"{scorer}-{method}/{v}"

    # -- explaining -------------------------------------------------------------------------------

    def explain(self, feature: FeatureFragments) -> str:
        if self.explainer == "lookup":
            return lookup.lookup_explanation(feature, self.vocab, self.token_counts, self.config.lookup_tokens)
        assert self.backend is not None
        messages = prompts.explain_messages(feature.explanation, self.vocab, feature.max_activation)
        return prompts.parse_explanation(self.backend.complete(messages, schema=prompts.EXPLANATION_SCHEMA).text)

    # -- scoring ----------------------------------------------------------------------------------

    def _simulate(self, explanation: str, fragments: Sequence[Fragment]) -> list[np.ndarray]:
        if not self.llm_scoring:
            return self.lookup.simulate(explanation, fragments)
        assert self.backend is not None
        out = []
        for f in fragments:
            answer = self.backend.complete(prompts.simulate_messages(explanation, f, self.vocab),
                                           logprobs=self.config.llm.logprobs,
                                           schema=prompts.values_schema("activations", len(f.tokens), range(11)))
            weighted = prompts.expected_digits(answer.logprobs, len(f.tokens)) if self.config.llm.logprobs else None
            out.append(weighted if weighted is not None else prompts.parse_activations(answer.text, len(f.tokens)))
        return out

    def simulation(self, feature: FeatureFragments, explanation: str) -> list[Score]:
        method, version = self._version("simulation")
        top, rand = feature.scoring, feature.random
        if self.llm_scoring:
            top, rand = top[: self.config.llm_scoring_top], rand[: self.config.llm_scoring_random]
        try:
            pred_top, pred_rand = self._simulate(explanation, top), self._simulate(explanation, rand)
        except (AnswerError, LLMError) as exc:
            return _failed("simulation", method, version, SIMULATION_VARIANTS, str(exc))
        sets = {"top_and_random": (top + rand, pred_top + pred_rand), "top": (top, pred_top), "random": (rand, pred_rand)}
        out = []
        for variant in SIMULATION_VARIANTS:
            frags, preds = sets[variant]
            if not frags:
                out.append(Score("simulation", method, version, variant, None, nan=True, note="no fragments"))
                continue
            truth = np.concatenate([f.activations for f in frags])
            r, why = pearson(truth, np.concatenate(preds))
            out.append(Score("simulation", method, version, variant, r, n=int(truth.size), nan=r is None, note=why))
        return out

    def _judge(self, system: str, explanation: str, texts: list[str]) -> list[int]:
        assert self.backend is not None
        answer = self.backend.complete(prompts.judge_messages(system, explanation, texts),
                                       schema=prompts.values_schema("answers", len(texts), (0, 1)))
        return prompts.parse_answers(answer.text, len(texts))

    def detection(self, feature: FeatureFragments, explanation: str) -> list[Score]:
        method, version = self._version("detection")
        per_class = self.config.llm_detection_items if self.llm_scoring else None
        items, labels = detection_items(feature, per_class)
        try:
            if self.llm_scoring:
                predicted = self._judge(prompts.DETECT_SYSTEM, explanation,
                                        [prompts.plain_text(f, self.vocab) for f in items])
            else:
                predicted = self.lookup.detect(explanation, items)
        except (AnswerError, LLMError) as exc:
            return _failed("detection", method, version, ["balanced_accuracy"], str(exc))
        value, why = balanced_accuracy(labels, predicted)
        return [Score("detection", method, version, "balanced_accuracy", value, n=len(items), nan=value is None, note=why)]

    def fuzzing(self, feature: FeatureFragments, explanation: str) -> list[Score]:
        method, version = self._version("fuzzing")
        per_class = self.config.llm_detection_items if self.llm_scoring else None
        items, marks, labels = fuzzing_items(feature, per_class, self.config.seed)
        try:
            if self.llm_scoring:
                predicted = self._judge(prompts.FUZZ_SYSTEM, explanation,
                                        [prompts.highlighted_text(f, self.vocab, m) for f, m in zip(items, marks)])
            else:
                predicted = self.lookup.judge_highlights(explanation, items, marks)
        except (AnswerError, LLMError) as exc:
            return _failed("fuzzing", method, version, ["balanced_accuracy"], str(exc))
        value, why = balanced_accuracy(labels, predicted)
        return [Score("fuzzing", method, version, "balanced_accuracy", value, n=len(items), nan=value is None, note=why)]

    def _undefined(self, note: str, failed: bool) -> list[Score]:
        out = []
        for scorer in self.scorers:
            method, version = self._version(scorer)
            variants = SIMULATION_VARIANTS if scorer == "simulation" else ("balanced_accuracy",)
            out += _failed(scorer, method, version, variants, note, nan=not failed)
        return out

    def feature(self, feature: FeatureFragments) -> FeatureResult:
        """Explain and score one feature; never raises for an unusable LLM answer."""
        result = FeatureResult(feature.index, "", self.method, self.explainer_name)
        if feature.is_dead:
            result.error = "no activating fragment"
            result.scores = self._undefined(result.error, failed=False)
            return result
        try:
            result.explanation = self.explain(feature)
        except (AnswerError, LLMError) as exc:
            result.error = f"explanation failed: {exc}"
            result.scores = self._undefined(result.error, failed=True)
            return result
        if not result.explanation:
            result.error = "empty explanation"
            result.scores = self._undefined(result.error, failed=False)
            return result
        for scorer in self.scorers:
            result.scores += getattr(self, scorer)(feature, result.explanation)
        return result


class ResultLog:
    """Finished features of one run, one JSON line each, appended as they finish (resume reads it)."""

    def __init__(self, path: Path | str | None) -> None:
        self.path = Path(path) if path else None

    def load(self) -> dict[int, FeatureResult]:
        if self.path is None or not self.path.is_file():
            return {}
        done: dict[int, FeatureResult] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                r = FeatureResult.from_json(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by an interruption
            done[r.index] = r
        return done

    def open(self) -> Any:
        if self.path is None:
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.path.open("a", encoding="utf-8")


def interpret_dictionary(
    fragments: DictionaryFragments,
    interpreter: Interpreter,
    log: ResultLog | None = None,
    progress: bool = True,
    on_result: Callable[[FeatureResult], None] | None = None,
) -> list[FeatureResult]:
    """Every feature of one dictionary explained and scored, in index order; features already in
    `log` are not redone, new ones are appended to it as they finish."""
    log = log or ResultLog(None)
    done = log.load()
    todo = [f for f in fragments.features if f.index not in done and not f.is_dead]
    todo_dead = [f for f in fragments.features if f.index not in done and f.is_dead]
    handle = log.open()
    bar = tqdm(total=len(fragments.features), initial=len(done), desc=f"explain {fragments.dictionary_id}",
               disable=not progress)

    def finish(r: FeatureResult) -> None:
        done[r.index] = r
        if handle is not None:
            handle.write(r.to_json() + "\n")
            handle.flush()
        if on_result is not None:
            on_result(r)
        bar.update(1)
        if interpreter.backend is not None:
            bar.set_postfix(interpreter.backend.stats.postfix(), refresh=False)

    try:
        for f in todo_dead:
            finish(interpreter.feature(f))
        if interpreter.backend is None:
            for f in todo:
                finish(interpreter.feature(f))
        else:
            pool = ThreadPoolExecutor(max_workers=max(1, interpreter.config.llm.concurrency))
            try:
                for r in pool.map(interpreter.feature, todo):
                    finish(r)
            finally:  # an interruption drops the features not started yet
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
        if handle is not None:
            handle.close()
    return [done[f.index] for f in fragments.features]
