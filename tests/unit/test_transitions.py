"""The transition table and the hybrid score (app.core.transitions) against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from app.core import transitions
from app.core.transitions import BlendParams, Transitions, blend


def brute_counts(seqs: list[np.ndarray], n: int, window: int, pair_decay: float) -> np.ndarray:
    counts = np.zeros((n + 1, n + 1))
    for seq in seqs:
        for i, a in enumerate(seq.tolist()):
            for gap in range(1, window + 1):
                if i + gap < len(seq) and seq[i + gap] != a:
                    counts[a, seq[i + gap]] += pair_decay ** (gap - 1)
    return counts


def random_sequences(rng: np.random.Generator, n: int, users: int) -> list[np.ndarray]:
    return [rng.integers(1, n + 1, size=int(rng.integers(0, 30))) for _ in range(users)]


@pytest.mark.parametrize(("window", "pair_decay"), [(1, 1.0), (3, 1.0), (5, 0.5)])
def test_the_table_holds_the_windowed_counts(window: int, pair_decay: float) -> None:
    rng = np.random.default_rng(window)
    n = 40
    seqs = random_sequences(rng, n, 60)
    params = BlendParams(window=window, pair_decay=pair_decay, max_per_item=n)
    table = Transitions.build(seqs, n, params)
    want = brute_counts(seqs, n, window, pair_decay)
    for item in range(n + 1):
        targets, weights = table.successors(item)
        got = np.zeros(n + 1)
        got[targets] = weights
        assert np.allclose(got, np.log1p(want[item]), atol=1e-6)
        assert list(weights) == sorted(weights, reverse=True)  # strongest first
    assert table.weights.size == np.count_nonzero(want)


def test_each_item_keeps_its_strongest_successors_only() -> None:
    rng = np.random.default_rng(7)
    n = 30
    seqs = random_sequences(rng, n, 200)
    full = Transitions.build(seqs, n, BlendParams(window=3, max_per_item=n))
    cut = Transitions.build(seqs, n, BlendParams(window=3, max_per_item=4))
    for item in range(1, n + 1):
        targets, weights = cut.successors(item)
        all_targets, all_weights = full.successors(item)
        assert len(targets) == min(4, len(all_targets))
        assert targets.tolist() == all_targets[: len(targets)].tolist()
        assert weights.tolist() == all_weights[: len(targets)].tolist()


def test_the_signal_is_the_recency_weighted_sum_of_the_recent_items_rows() -> None:
    rng = np.random.default_rng(3)
    n = 25
    seqs = random_sequences(rng, n, 80)
    params = BlendParams(window=2, recent=3, recent_decay=0.5, max_per_item=n)
    table = Transitions.build(seqs, n, params)
    dense = np.log1p(brute_counts(seqs, n, 2, 1.0))
    recent = [[5, 9, 9, 2, 7], [], [0, 3], [n + 5, 1]]  # newest first; 0 and unknown skipped
    items = np.tile(np.arange(1, n + 1), (len(recent), 1))
    got = table.gather(recent).at(items)
    for r, history in enumerate(recent):
        want = np.zeros(n + 1)
        for j, item in enumerate(history[:3]):
            if 0 < item <= n:
                want += 0.5**j * dense[item]
        assert np.allclose(got[r], want[1:], atol=1e-5)
    assert got[0].sum() > 0 and got[1].sum() == 0


def test_top_lists_the_items_with_signal_strongest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    table = Transitions.build(
        [np.array([1, 2]), np.array([1, 2]), np.array([1, 3]), np.array([4, 5])],
        5,
        BlendParams(window=1),
    )
    recent = [[1], [4], [3], [4, 1]]
    for dense_cells in (1 << 20, 0):  # a small catalog's dense sums, a large one's entries
        with monkeypatch.context() as m:
            m.setattr(transitions, "DENSE_CELLS", dense_cells)
            tops = [t.tolist() for t in table.gather(recent).tops(10)]
            assert tops == [[2, 3], [5], [], [2, 5, 3]]
            assert [t.tolist() for t in table.gather(recent).tops(1)] == [[2], [5], [], [2]]


def test_blend_adds_alpha_times_log1p_of_the_signal() -> None:
    scores = np.array([[0.5, -1.0, 2.0]], dtype=np.float32)
    signal = np.array([[0.0, 1.0, 3.0]], dtype=np.float32)
    assert np.allclose(blend(scores, signal, 2.0), scores + 2.0 * np.log1p(signal))
    assert np.array_equal(blend(scores, signal, 0.0), scores)  # alpha 0: the model alone


def test_the_package_file_round_trips() -> None:
    rng = np.random.default_rng(1)
    params = BlendParams(alpha=1.5, window=2, recent=4)
    table = Transitions.build(random_sequences(rng, 20, 30), 20, params)
    back = Transitions.from_bytes(table.to_bytes(), params)
    assert back.n_items == table.n_items
    for name in ("offsets", "targets", "weights"):
        assert np.array_equal(getattr(back, name), getattr(table, name))
    assert BlendParams.from_dict(params.as_dict()) == params


def test_bad_blend_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        BlendParams(alpha=-1)
    with pytest.raises(ValueError, match="recent_decay"):
        BlendParams(recent_decay=0)
    with pytest.raises(ValueError, match="unknown blend settings"):
        BlendParams.from_dict({**BlendParams().as_dict(), "beta": 1})
    with pytest.raises(ValueError, match="missing"):
        BlendParams.from_dict({"alpha": 1.0})
    with pytest.raises(ValueError, match="do not fit"):
        Transitions(
            3, np.zeros(2, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), BlendParams()
        )
