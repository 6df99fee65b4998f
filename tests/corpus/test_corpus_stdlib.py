"""The built-in stdlib corpus: deterministic, disjoint stable split, no site-packages."""

from __future__ import annotations

from saescope.corpus.documents import is_heldout
from saescope.corpus.stdlib import stdlib_documents


def test_stdlib_documents_are_sorted_and_identical_between_calls():
    first = stdlib_documents(max_files=30)
    second = stdlib_documents(max_files=30)
    assert [d.id for d in first] == [d.id for d in second]
    assert [d.text for d in first] == [d.text for d in second]
    assert [d.id for d in first] == sorted(d.id for d in first)
    assert all(d.id.startswith("stdlib/") and d.id.endswith(".py") for d in first)


def test_train_and_heldout_splits_are_disjoint_and_cover_all_files():
    every = stdlib_documents("all")
    train = stdlib_documents("train")
    heldout = stdlib_documents("heldout")
    train_ids, heldout_ids = {d.id for d in train}, {d.id for d in heldout}
    assert not train_ids & heldout_ids
    assert train_ids | heldout_ids == {d.id for d in every}
    assert 0.02 < len(heldout) / len(every) < 0.09  # about 5 %
    assert all(is_heldout(d.id.removeprefix("stdlib/"), 0.05) for d in heldout)
    assert not any("site-packages/" in d.id or "__pycache__" in d.id for d in every)


def test_split_membership_depends_only_on_the_path():
    small = {d.id for d in stdlib_documents("heldout", max_files=5)}
    assert small <= {d.id for d in stdlib_documents("heldout")}


def test_excluding_tests_drops_test_folders():
    docs = stdlib_documents("all", include_tests=False)
    assert docs
    assert not any("/test/" in d.id or d.id.startswith("stdlib/test/") for d in docs)
