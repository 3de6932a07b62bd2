"""The competition data and the bundled model's corpus: counts, horizons, and no held-out
point ever reaching training or validation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from model.competitions import load, load_all
from model.corpus import HORIZONS, competition_corpus, split


@pytest.fixture(scope="module")
def everything():
    return load_all()


def test_competitions_have_their_published_sizes_and_horizons(everything):
    counts = Counter((s.dataset, s.frequency, s.horizon) for s in everything)
    assert counts == {
        ("m1", "yearly", 6): 181,
        ("m1", "quarterly", 8): 203,
        ("m1", "monthly", 18): 617,
        ("m3", "yearly", 6): 645,
        ("m3", "quarterly", 8): 756,
        ("m3", "monthly", 18): 1428,
        ("m3", "other", 8): 174,
        ("tourism", "yearly", 4): 518,
        ("tourism", "quarterly", 8): 427,
        ("tourism", "monthly", 24): 366,
    }
    assert all(len(s.xx) == s.horizon and np.isfinite(s.x).all() for s in everything)
    assert {s.period for s in everything if s.frequency == "monthly"} == {12}


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="unknown dataset 'm4'"):
        load("m4")


def test_corpus_trains_on_training_parts_and_validates_on_their_last_h(everything):
    corpus = split(everything, 0.2, seed=0)
    assert sum(c["series"] for c in corpus.counts.values()) == len(everything)
    n_val = sum(c["validation"] for c in corpus.counts.values())
    assert n_val == len(corpus.validation) and 0.17 < n_val / len(everything) < 0.23
    by_name = {(s.dataset, s.name): s for s in everything}
    for w in corpus.validation:
        s = by_name[(w.dataset, w.name)]
        h = len(w.actual)
        assert h == s.horizon
        np.testing.assert_array_equal(w.history, s.x[:-h])
        np.testing.assert_array_equal(w.actual, s.x[-h:])
    # every training array is a prefix of its training part: x itself, or x without the
    # validation window; nothing from the held-out part xx
    trained = [t for f in corpus.train.values() for t in f]
    assert len(trained) == len(everything)
    by_key = {(s.dataset, s.name): s for s in everything}
    for (key, s), t in zip(by_key.items(), _in_order(corpus, everything), strict=True):
        assert len(t) in (len(s.x), len(s.x) - s.horizon), key
        np.testing.assert_array_equal(t, s.x[: len(t)])


def _in_order(corpus, everything):
    """Training arrays back in the competitions' order (the corpus groups by frequency)."""
    seen = {f: iter(v) for f, v in corpus.train.items()}
    return [next(seen[s.frequency]) for s in everything]


def test_corpus_split_is_seeded():
    a, b = competition_corpus(0.2, seed=1), competition_corpus(0.2, seed=1)
    c = competition_corpus(0.2, seed=2)
    assert [w.name for w in a.validation] == [w.name for w in b.validation]
    assert [w.name for w in a.validation] != [w.name for w in c.validation]
    assert set(HORIZONS) == set(a.train)
