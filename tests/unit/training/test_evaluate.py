"""Full-ranking metrics on hand-made cases, and the baselines on real and synthetic splits."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from numpy.typing import NDArray

from app.training.evaluate import (
    ALL_SEEN,
    ScoreFn,
    cooccurrence,
    evaluate,
    metrics,
    most_popular,
    popularity,
    recent_cooccurrence,
    target_ranks,
)
from app.training.sequences import Split, leave_one_out, synthetic_sequences
from tests.unit.training.factories import make_data

N_ITEMS = 9


def make_split(*sequences: list[int], n_items: int = N_ITEMS) -> Split:
    return leave_one_out(make_data(*sequences, n_items=n_items))


def oracle(split: Split, stage: str) -> ScoreFn:
    """Scores 1 for the target and 0 elsewhere."""

    def score(users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> NDArray[np.float64]:
        out = np.zeros((len(users), split.n_items + 1))
        out[np.arange(len(users)), split.targets(stage)[users]] = 1.0
        return out

    return score


def fixed(scores: list[float]) -> ScoreFn:
    row = np.array(scores, dtype=np.float64)

    def score(users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> NDArray[np.float64]:
        return np.tile(row, (len(users), 1))

    return score


def uniform_random(n_items: int, seed: int = 0) -> ScoreFn:
    rng = np.random.default_rng(seed)

    def score(users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> NDArray[np.float64]:
        return rng.random((len(users), n_items + 1))

    return score


SPLIT = make_split([1, 2, 3, 4, 5], [6, 7, 8], [9, 1, 2, 3], [4, 5])


@pytest.mark.parametrize("stage", ["valid", "test"])
def test_perfect_scorer(stage: str) -> None:
    result = evaluate(oracle(SPLIT, stage), SPLIT, stage=stage, k=10)
    assert result == {"hr@10": 1.0, "ndcg@10": 1.0, "mrr": 1.0, "users": 3}


def test_rank_three_gets_ndcg_one_over_log2_five() -> None:
    split = make_split([1, 2, 3])  # test: history [1, 2], target 3
    # Items 9, 8, 7 beat the target; 1 and 2 are seen (filtered) though they score highest.
    scores = [100.0, 50, 50, 4, 0, 0, 0, 5, 6, 7]
    result = evaluate(fixed(scores), split, stage="test", k=10)
    assert result["hr@10"] == 1.0
    assert result["ndcg@10"] == pytest.approx(1 / np.log2(5))
    assert result["mrr"] == pytest.approx(1 / 4)
    assert evaluate(fixed(scores), split, stage="test", k=3)["hr@3"] == 0.0
    assert evaluate(fixed(scores), split, stage="test", k=3)["ndcg@3"] == 0.0


def test_constant_scorer_ranks_last() -> None:
    split = make_split([1, 2, 3, 4, 5], [6, 7, 8], n_items=30)
    result = evaluate(fixed([0.0] * 31), split, stage="test")
    assert result["hr@10"] == 0.0 and result["ndcg@10"] == 0.0 and result["mrr"] < 0.04
    ranks = target_ranks(np.zeros((1, 10)), [np.array([1, 2], dtype=np.int64)], np.array([3]))
    assert ranks.tolist() == [6]  # 9 items, 2 seen: the 6 others all tie with the target


def test_seen_items_are_filtered_but_never_the_target() -> None:
    scores = np.array([[0.0, 9, 8, 7, 1, 0, 0, 0, 0, 0]])
    seen = [np.array([1, 2, 3], dtype=np.int64)]
    assert target_ranks(scores, seen, np.array([4])).tolist() == [0]
    assert target_ranks(scores, [np.zeros(0, np.int64)], np.array([4])).tolist() == [3]
    # A target that is also in the history (a repeat) still competes.
    assert target_ranks(scores, seen, np.array([3])).tolist() == [0]
    assert target_ranks(scores, [np.array([3, 4], dtype=np.int64)], np.array([2])).tolist() == [1]


def test_ties_count_against_the_target() -> None:
    scores = np.array([[9.0, 8, 1, 1, 0.5]], dtype=np.float32)
    assert target_ranks(scores, [np.array([1])], np.array([2])).tolist() == [1]
    assert target_ranks(scores, [np.array([1, 3])], np.array([2])).tolist() == [0]


def test_padding_column_never_competes() -> None:
    scores = np.array([[1e9, 0, 1, 0]])
    assert target_ranks(scores, [np.zeros(0, np.int64)], np.array([2])).tolist() == [0]


def test_nan_scores_count_as_minus_infinity() -> None:
    scores = np.array([[0.0, np.nan, 1.0, np.nan]])
    none = [np.zeros(0, np.int64)]
    assert target_ranks(scores, none, np.array([2])).tolist() == [0]
    assert target_ranks(scores, none, np.array([1])).tolist() == [2]  # ties the other NaN


def test_metrics_math() -> None:
    result = metrics(np.array([0, 1, 9, 10, 100]), k=10)
    assert result["hr@10"] == pytest.approx(3 / 5)
    expected = (1 + 1 / np.log2(3) + 1 / np.log2(11)) / 5
    assert result["ndcg@10"] == pytest.approx(expected)
    assert result["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 10 + 1 / 11 + 1 / 101) / 5)
    assert result["users"] == 5
    with pytest.raises(ValueError, match="no users"):
        metrics(np.zeros(0, np.int64), k=10)


def test_batches_do_not_change_the_result() -> None:
    data = synthetic_sequences(60, 50, seed=2)
    split = leave_one_out(data)
    fn = cooccurrence(split)
    assert evaluate(fn, split, batch_size=7) == evaluate(fn, split, batch_size=1000)


def test_score_fn_sees_users_and_histories() -> None:
    calls: list[tuple[list[int], list[list[int]]]] = []

    def spy(users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> NDArray[np.float64]:
        calls.append((users.tolist(), [h.tolist() for h in histories]))
        return np.zeros((len(users), N_ITEMS + 1))

    evaluate(spy, SPLIT, stage="test", batch_size=2)
    assert calls == [([0, 1], [[1, 2, 3, 4], [6, 7]]), ([2], [[9, 1, 2]])]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate(fixed([0.0] * 4), SPLIT)
    with pytest.raises(ValueError, match="stage"):
        evaluate(fixed([0.0] * 10), SPLIT, stage="train")


def test_progress_without_tqdm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # importing it now raises ImportError
    evaluate(fixed([0.0] * 10), SPLIT, progress=True)
    assert "3/3 users" in capsys.readouterr().err


def test_most_popular_counts_training_items_only() -> None:
    split = make_split([1, 2, 2, 3, 4], [2, 5, 6], [7])
    # Training parts: [1, 2, 2], [2], and [7] whole (too short to evaluate).
    assert popularity(split).tolist() == [0, 1, 3, 0, 0, 0, 0, 1, 0, 0]
    scores = most_popular(split)(np.array([0, 1]), [np.array([1]), np.array([2])])
    assert scores.shape == (2, 10)
    assert np.array_equal(scores[0], scores[1])
    assert scores[0].argmax() == 2


def test_cooccurrence_scores_the_last_items_successors() -> None:
    split = make_split([1, 2, 3, 1, 2, 9, 9], [1, 3, 8, 8])
    fn = cooccurrence(split)
    histories = [np.array([5, 1]), np.array([3]), np.zeros(0, np.int64), np.array([6])]
    scores = fn(np.array([0, 1, 0, 1]), histories)
    # After 1 came 2 twice and 3 once; after 3 came 1 once.
    assert scores[0].argsort()[::-1][:2].tolist() == [2, 3]
    assert scores[0, 2] == pytest.approx(2, abs=1) and scores[0, 2] - scores[0, 3] > 0.5
    assert scores[1].argmax() == 1
    # No transitions from an empty history or from 6: popularity alone, below one count.
    assert scores[2].argmax() == 1 and scores[2].max() < 1
    assert np.array_equal(scores[2], scores[3])


def test_cooccurrence_matches_a_dense_count() -> None:
    data = synthetic_sequences(80, 60, seed=5)
    split = leave_one_out(data)
    dense = np.zeros((61, 61))
    for seq in split.train:
        np.add.at(dense, (seq[:-1], seq[1:]), 1)
    histories = [split.history(u, "test") for u in range(len(split.train))]
    scores = cooccurrence(split)(np.arange(len(histories)), histories)
    last = [h[-1] for h in histories]
    assert np.array_equal(np.floor(scores), dense[last])


def test_the_last3_baseline_is_the_workers_scorer_over_the_training_pairs() -> None:
    split = make_split([1, 2, 3, 1, 2, 9, 9], [1, 3, 8, 8])
    fn = recent_cooccurrence(split)
    scores = fn(np.array([0]), [np.array([3, 1])])  # 1 newest (weight 1), 3 before (0.5)
    # After 1: 2 twice, 3 once; after 3: 1 once. 2: 2.0, 3: 1.0, 1: 0.5 (plus tie-breaks < 1).
    assert scores[0].argsort()[::-1][:3].tolist() == [2, 3, 1]
    assert np.floor(scores[0, [2, 3]]).tolist() == [2.0, 1.0]
    assert 0.5 <= scores[0, 1] < 1.5


def test_all_seen_filters_the_whole_history(synthetic_split: Split) -> None:
    served = evaluate(recent_cooccurrence(synthetic_split), synthetic_split)
    seen = evaluate(recent_cooccurrence(synthetic_split), synthetic_split, kept=ALL_SEEN)
    # Filtering more of what users saw can only move targets up (the target is never filtered).
    assert seen["ndcg@10"] >= served["ndcg@10"] and seen["hr@10"] >= served["hr@10"]


@pytest.fixture(scope="module")
def synthetic_split() -> Split:
    return leave_one_out(synthetic_sequences(400, 300, seed=0))


def test_baselines_beat_random_on_synthetic_data(synthetic_split: Split) -> None:
    split = synthetic_split
    random = evaluate(uniform_random(split.n_items), split)
    popular = evaluate(most_popular(split), split)
    cooc = evaluate(cooccurrence(split), split)
    assert random["hr@10"] < 0.08  # expected about 10 in 280 unseen items, 0.036
    assert popular["ndcg@10"] > random["ndcg@10"] + 0.015
    assert popular["hr@10"] > random["hr@10"] + 0.025
    assert cooc["ndcg@10"] > random["ndcg@10"] + 0.15
    assert cooc["ndcg@10"] > popular["ndcg@10"] + 0.1
