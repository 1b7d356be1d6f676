"""SequenceData checks, the leave-one-out split and the synthetic generator."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from app.dev.synthetic import GENRES
from app.training.sequences import (
    ADD_TO_CART,
    CLICK,
    PURCHASE,
    VIEW,
    SequenceData,
    history_for,
    leave_one_out,
    synthetic_sequences,
)
from tests.unit.training.factories import make_data


def test_sequence_data_rejects_inconsistent_tables() -> None:
    with pytest.raises(ValueError, match="item_titles"):
        SequenceData(2, ("", "a", "b"), ("",), ((),) * 3, (), ())
    with pytest.raises(ValueError, match="user tokens"):
        SequenceData(2, ("", "a", "b"), ("",) * 3, ((),) * 3, ("u",), ())
    with pytest.raises(ValueError, match="1..9"):
        make_data([1, 10])
    with pytest.raises(ValueError, match="1..9"):
        make_data([0, 1])
    data = make_data([1, 2, 3])
    with pytest.raises(ValueError, match="types"):
        replace(data, types=(np.array([2, 2], dtype=np.int64),))
    with pytest.raises(ValueError, match="queries"):
        replace(data, queries=((None,),))
    with pytest.raises(ValueError, match="int64"):
        replace(data, sequences=(np.array([1, 2], dtype=np.int32),))


def test_leave_one_out_holds_out_the_last_two_items() -> None:
    data = make_data([1, 2, 3, 4, 5], [6, 7, 8], [9, 1], [])
    split = leave_one_out(data)
    assert split.users == (0, 1, 2, 3)
    assert [t.tolist() for t in split.train] == [[1, 2, 3], [6], [9, 1], []]
    assert split.valid_target.tolist() == [4, 7, 0, 0]
    assert split.test_target.tolist() == [5, 8, 0, 0]
    assert split.evaluated.tolist() == [True, True, False, False]
    assert split.n_items == 9


def test_history_for_each_stage() -> None:
    split = leave_one_out(make_data([1, 2, 3, 4, 5], [6, 7, 8], [9, 1]))
    assert history_for(split, 0, "valid").tolist() == [1, 2, 3]
    assert history_for(split, 0, "test").tolist() == [1, 2, 3, 4]
    assert history_for(split, 1, "test").tolist() == [6, 7]
    assert history_for(split, 1, "test").dtype == np.int64
    assert split.history(0, "test").tolist() == [1, 2, 3, 4]
    assert (split.target(0, "valid"), split.target(0, "test")) == (4, 5)
    with pytest.raises(ValueError, match="fewer than three"):
        history_for(split, 2, "test")
    with pytest.raises(ValueError, match="stage"):
        history_for(split, 0, "train")


def test_type_numbers_match_the_serving_model() -> None:
    from app.core.ranking import TYPE_IDS

    assert TYPE_IDS == {
        "view": VIEW,
        "click": CLICK,
        "add_to_cart": ADD_TO_CART,
        "purchase": PURCHASE,
    }


@pytest.fixture(scope="module")
def synthetic() -> SequenceData:
    return synthetic_sequences(300, 240, seed=3)


def test_synthetic_is_deterministic(synthetic: SequenceData) -> None:
    again = synthetic_sequences(300, 240, seed=3)
    other = synthetic_sequences(300, 240, seed=4)
    assert all(
        np.array_equal(a, b) for a, b in zip(synthetic.sequences, again.sequences, strict=True)
    )
    assert synthetic.types is not None and again.types is not None
    assert all(np.array_equal(a, b) for a, b in zip(synthetic.types, again.types, strict=True))
    assert synthetic.queries == again.queries
    assert synthetic.item_titles == again.item_titles
    assert any(
        not np.array_equal(a, b) for a, b in zip(synthetic.sequences, other.sequences, strict=False)
    )


def test_synthetic_shape(synthetic: SequenceData) -> None:
    assert (synthetic.n_users, synthetic.n_items) == (300, 240)
    assert synthetic.item_tokens[0] == "" and synthetic.item_titles[0] == ""
    assert len(set(synthetic.item_tokens)) == 241
    assert all(len(g) == 1 and g[0] in GENRES for g in synthetic.item_genres[1:])
    lengths = [len(s) for s in synthetic.sequences]
    assert min(lengths) >= 20 and max(lengths) <= 60
    # Never the same item twice, like ML-100K's ratings.
    assert all(len(np.unique(s)) == len(s) for s in synthetic.sequences)
    assert synthetic.types is not None
    kinds = np.concatenate(synthetic.types)
    assert set(np.unique(kinds).tolist()) == {VIEW, CLICK, ADD_TO_CART, PURCHASE}


def test_synthetic_users_stick_to_their_genres(synthetic: SequenceData) -> None:
    genre = {i: synthetic.item_genres[i][0] for i in range(1, synthetic.n_items + 1)}
    shares = []
    for seq in synthetic.sequences:
        counts = Counter(genre[int(i)] for i in seq)
        shares.append(sum(n for _, n in counts.most_common(2)) / len(seq))
    assert np.mean(shares) > 0.75  # about 85% planted; 2 of 8 genres would give 25% at random


def test_synthetic_queries_name_what_gets_clicked(synthetic: SequenceData) -> None:
    assert synthetic.queries is not None and synthetic.types is not None
    searched = 0
    for seq, asked, kinds in zip(
        synthetic.sequences, synthetic.queries, synthetic.types, strict=True
    ):
        for item, query, kind in zip(seq.tolist(), asked, kinds.tolist(), strict=True):
            if query is None:
                continue
            searched += 1
            assert kind == CLICK
            words = set(synthetic.item_titles[item].lower().split()) | set(
                synthetic.item_genres[item]
            )
            assert words & set(query.split()), (query, synthetic.item_titles[item])
    total = synthetic.n_interactions
    assert 0.05 < searched / total < 0.3


def test_synthetic_popularity_is_skewed(synthetic: SequenceData) -> None:
    counts = np.sort(np.bincount(np.concatenate(synthetic.sequences))[1:])[::-1]
    assert counts[: len(counts) // 10].sum() > 1.5 * counts.sum() / 10


def test_synthetic_more_genres_than_named() -> None:
    data = synthetic_sequences(20, 50, seed=1, genres=10)
    assert {g[0] for g in data.item_genres[1:]} >= {"genre8", "genre9"}
    with pytest.raises(ValueError):
        synthetic_sequences(10, 5, genres=8)
