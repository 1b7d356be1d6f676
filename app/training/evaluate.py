"""Full-ranking HR@K, NDCG@K and MRR under leave-one-out, and the baselines scored the same way."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from app.core.cooccurrence import RECENT_WEIGHTS, Cooccurrence
from app.core.exclusions import excluded, seen_items
from app.core.state import StateLimits
from app.training.sequences import Split

# The interactions a user's state keeps in full (HISTORY_SIZE's default).
KEPT_HISTORY = StateLimits().history_size
# The distinct items a user's state remembers as seen (SEEN_SIZE's default): the worker excludes
# them after a next-item event.
KEPT_SEEN = StateLimits().max_seen
# ``kept`` for the literature's protocol: every item of the history filtered, however long.
ALL_SEEN = 1 << 62

# users (the data's user indices) and their input histories -> scores of shape
# (len(users), n_items + 1); column 0 is the padding item and is ignored.
ScoreFn = Callable[[NDArray[np.int64], list[NDArray[np.int64]]], NDArray[np.floating[Any]]]


def target_ranks(
    scores: NDArray[np.floating[Any]],
    histories: list[NDArray[np.int64]],
    targets: NDArray[np.int64],
) -> NDArray[np.int64]:
    """0-based rank of each row's target among all items, the row's ``histories`` (the items
    excluded for it) filtered out.

    Only items other than the padding column, those items and the target itself
    compete; the rank counts those scoring strictly higher plus those tied with the target
    (pessimistic: a constant scorer ranks every target last). A history item that is also the
    target is not filtered. NaN scores count as -inf.

    >>> target_ranks(np.array([[9.0, 1, 3, 2, 5]]), [np.array([4])], np.array([2]))
    array([0])
    >>> target_ranks(np.zeros((1, 5)), [np.zeros(0, np.int64)], np.array([2]))
    array([3])
    """
    rows, n_columns = scores.shape
    if len(histories) != rows or len(targets) != rows:
        raise ValueError("scores, histories and targets must have one row per user")
    scores = np.where(np.isnan(scores), -np.inf, scores)
    competes = np.ones((rows, n_columns), dtype=bool)
    competes[:, 0] = False
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=rows)
    if lengths.sum():
        competes[np.repeat(np.arange(rows), lengths), np.concatenate(histories)] = False
    everyone = np.arange(rows)
    competes[everyone, targets] = False
    target_scores = scores[everyone, targets][:, None]
    ahead = ((scores > target_scores) & competes).sum(axis=1)
    tied = ((scores == target_scores) & competes).sum(axis=1)
    result: NDArray[np.int64] = (ahead + tied).astype(np.int64)
    return result


def metrics(ranks: NDArray[np.int64], k: int) -> dict[str, float]:
    """HR@k, NDCG@k (one relevant item, so IDCG is 1) and MRR (untruncated) from 0-based ranks.

    >>> metrics(np.array([0, 2, 50]), k=10)  # NDCG: (1 + 1 / log2(4) + 0) / 3
    {'hr@10': 0.6666666666666666, 'ndcg@10': 0.5, 'mrr': 0.4509803921568627, 'users': 3}
    """
    if not len(ranks):
        raise ValueError("no users to evaluate")
    hit = ranks < k
    return {
        f"hr@{k}": float(hit.mean()),
        f"ndcg@{k}": float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean()),
        "mrr": float((1.0 / (ranks + 1.0)).mean()),
        "users": len(ranks),
    }


class _Progress(Protocol):
    def update(self, n: int) -> Any: ...

    def close(self) -> Any: ...


class _Counter:
    """Progress on stderr when tqdm (in the ``train`` extra) is not installed."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.desc, self.done = total, desc, 0

    def update(self, n: int) -> None:
        self.done += n
        print(f"\r{self.desc}: {self.done}/{self.total} users", end="", file=sys.stderr)

    def close(self) -> None:
        print(file=sys.stderr)


class _Silent:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str) -> _Progress:
    if not enabled:
        return _Silent()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Counter(total, desc)
    bar: _Progress = tqdm(total=total, desc=desc, unit="user")
    return bar


def served_exclusions(
    histories: list[NDArray[np.int64]], kept: int = KEPT_SEEN
) -> list[NDArray[np.int64]]:
    """What the worker would not show after each history's last interaction
    (app.core.exclusions, next-item, the default policy): the last ``kept`` distinct items, as
    the user's state remembers them (``SEEN_SIZE``, app.core.exclusions.seen_items).

    >>> served_exclusions([np.array([1, 2, 3, 2])], kept=2)
    [array([2, 3])]
    """
    return [
        np.array(
            sorted(excluded(seen_items(h.tolist(), kept), (), None, search=False)),
            dtype=np.int64,
        )
        for h in histories
    ]


def evaluate(
    score_fn: ScoreFn,
    split: Split,
    stage: str = "test",
    k: int = 10,
    batch_size: int = 256,
    progress: bool = False,
    kept: int = KEPT_SEEN,
) -> dict[str, float]:
    """Rank every evaluated user's ``stage`` target against all items the worker could show:
    items excluded as the worker excludes them (:func:`served_exclusions`: the last ``kept``
    distinct items of the history) do not compete.

    The score function sees users in batches of ``batch_size`` with their input histories
    (:func:`app.training.sequences.history_for`). Returns ``hr@k``, ``ndcg@k``, ``mrr`` and
    ``users`` (how many were evaluated: those with at least three interactions).
    """
    targets_all = split.targets(stage)  # validates stage
    if k < 1 or batch_size < 1:
        raise ValueError("k and batch_size must be positive")
    rows = np.flatnonzero(split.evaluated)
    users = np.asarray(split.users, dtype=np.int64)
    ranks = np.empty(len(rows), dtype=np.int64)
    bar = _progress(len(rows), progress, f"evaluate {stage}")
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            histories = [split.history(int(r), stage) for r in chunk]
            scores = np.asarray(score_fn(users[chunk], histories))
            if scores.shape != (len(chunk), split.n_items + 1):
                raise ValueError(
                    f"score_fn returned shape {scores.shape}, "
                    f"expected {(len(chunk), split.n_items + 1)}"
                )
            ranks[start : start + len(chunk)] = target_ranks(
                scores, served_exclusions(histories, kept), targets_all[chunk]
            )
            bar.update(len(chunk))
    finally:
        bar.close()
    return metrics(ranks, k)


def popularity(split: Split) -> NDArray[np.int64]:
    """How often each item occurs in the training sequences (index 0, padding, counts 0)."""
    flat = np.concatenate(split.train) if split.train else np.zeros(0, dtype=np.int64)
    counts = np.bincount(flat, minlength=split.n_items + 1).astype(np.int64)
    counts[0] = 0
    return counts


def most_popular(split: Split) -> ScoreFn:
    """Everyone gets the items ranked by their training-sequence counts.

    The counts come from ``split.train`` only, for both stages: at test time the validation
    items are not counted (they are one item per user and would barely move the ranking, and the
    trained model does not learn from them either).
    """
    counts = popularity(split).astype(np.float64)

    def score(users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> NDArray[np.float64]:
        return np.tile(counts, (len(histories), 1))

    return score


def cooccurrence(split: Split) -> ScoreFn:
    """Last item to next item: how often each item directly followed the user's last item.

    Transitions are counted over consecutive pairs of ``split.train`` (the validation items are
    not counted, as for :func:`most_popular`). Popularity, scaled into [0, 1) so that it only
    breaks ties between equal counts, ranks the rest, and everything for an empty history.

    The transitions are kept as a compressed sparse row table (sorted pairs and row offsets) in
    plain numpy: memory grows with the number of distinct pairs, not with the square of the
    catalog, so there is no catalog size above which this baseline is out of reach.
    """
    n = split.n_items + 1
    pairs = [np.stack((seq[:-1], seq[1:])) for seq in split.train if len(seq) > 1]
    flat = np.concatenate(pairs, axis=1) if pairs else np.zeros((2, 0), dtype=np.int64)
    codes, counts = np.unique(flat[0] * n + flat[1], return_counts=True)
    sources, destinations = codes // n, codes % n
    offsets = np.searchsorted(sources, np.arange(n + 1))  # row i: offsets[i]:offsets[i + 1]
    pop = popularity(split).astype(np.float64)
    tie_break = pop / (pop.max() + 1.0)

    def score(users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> NDArray[np.float64]:
        last = np.array([h[-1] if len(h) else 0 for h in histories], dtype=np.int64)
        starts, ends = offsets[last], offsets[last + 1]
        lengths = ends - starts
        out = np.tile(tie_break, (len(histories), 1))
        # Every (row, entry) of the rows' CSR slices at once: entry j of row r is starts[r] + j.
        row_of = np.repeat(np.arange(len(histories)), lengths)
        entry = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        entry += np.repeat(starts, lengths)
        out[row_of, destinations[entry]] += counts[entry]
        return out

    return score


def recent_cooccurrence(split: Split, weights: tuple[float, ...] = RECENT_WEIGHTS) -> ScoreFn:
    """The worker's own co-occurrence scorer (app.core.cooccurrence, what its cheap path and the
    replay's streaming baseline use): successors of the user's last ``len(weights)`` items,
    weighted newest first (1, 0.5, 0.25), counted over consecutive pairs of ``split.train``.
    Popularity, scaled into [0, 1), breaks ties and ranks the rest, as for :func:`cooccurrence`.
    """
    co = Cooccurrence(max_neighbours=split.n_items + 1)  # keep every successor: exact counts
    for seq in split.train:
        co.add_sequence(str(i) for i in seq.tolist())
    pop = popularity(split).astype(np.float64)
    tie_break = pop / (pop.max() + 1.0)
    depth = len(weights)

    def score(users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> NDArray[np.float64]:
        out = np.tile(tie_break, (len(histories), 1))
        for row, history in enumerate(histories):
            recent = [str(i) for i in history[-depth:].tolist()]
            for item, value in co.scores(recent, weights).items():
                out[row, int(item)] += value
        return out

    return score
