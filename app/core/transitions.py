"""Item-to-item transitions shipped with a model package, and the hybrid score that blends them
into the ranker's: one implementation for serving (app.core.ranking), evaluation and tuning
(app.training), so what is measured offline is what the worker computes.

A table counts, over the training sequences, how often item ``b`` came 1 to ``window`` positions
after item ``a`` (a pair ``k`` apart counts ``pair_decay ** (k - 1)``), stores ``log1p`` of the
count, and keeps the ``max_per_item`` strongest successors of each item (memory grows with the
catalog, not with its square). A user's signal for a candidate is the recency-weighted sum over
their last ``recent`` items, newest weighing 1, the one before ``recent_decay``, and so on; the
served score is ``model + alpha * log1p(signal)``, which leaves the model's order wherever the
counts say nothing, and lets strong evidence of "what people watch next" move an item up.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

# Never more than this many successors per item, whatever a package asks for.
MAX_PER_ITEM = 1024


@dataclass(frozen=True, slots=True)
class BlendParams:
    """How a table is built and blended (the manifest's ``blend`` section)."""

    alpha: float = 1.0
    window: int = 5
    pair_decay: float = 1.0
    recent: int = 5
    recent_decay: float = 0.8
    max_per_item: int = 256

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError("alpha must be at least 0")
        if self.window < 1 or self.recent < 1:
            raise ValueError("window and recent must be at least 1")
        if not 0 < self.pair_decay <= 1 or not 0 < self.recent_decay <= 1:
            raise ValueError("pair_decay and recent_decay must be in (0, 1]")
        if not 1 <= self.max_per_item <= MAX_PER_ITEM:
            raise ValueError(f"max_per_item must be in [1, {MAX_PER_ITEM}]")

    def as_dict(self) -> dict[str, float | int]:
        return {
            "alpha": self.alpha,
            "window": self.window,
            "pair_decay": self.pair_decay,
            "recent": self.recent,
            "recent_decay": self.recent_decay,
            "max_per_item": self.max_per_item,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, object]) -> BlendParams:
        unknown = set(doc) - set(cls().as_dict())
        if unknown:
            raise ValueError(f"unknown blend settings {sorted(unknown)}")
        try:
            return cls(
                alpha=float(doc["alpha"]),  # type: ignore[arg-type]
                window=int(doc["window"]),  # type: ignore[call-overload]
                pair_decay=float(doc["pair_decay"]),  # type: ignore[arg-type]
                recent=int(doc["recent"]),  # type: ignore[call-overload]
                recent_decay=float(doc["recent_decay"]),  # type: ignore[arg-type]
                max_per_item=int(doc["max_per_item"]),  # type: ignore[call-overload]
            )
        except KeyError as exc:
            raise ValueError(f"blend setting {exc} is missing") from None


# Batches whose (rows x items) fit in this many cells sum their signal into a dense matrix (a
# small catalog: one bincount); larger ones sum only at the items asked for.
DENSE_CELLS = 1 << 20


class Signal:
    """The transition evidence of a batch of users, unsummed: one entry per (recent item,
    successor), its key ``row * stride + successor`` and its weight (the table's times the
    recent item's recency factor). Summed where asked (:meth:`at`): densely for a small
    catalog, else at the asked items only, so a big catalog never costs rows x catalog."""

    __slots__ = ("_dense", "bounds", "keys", "stride", "values")

    def __init__(
        self,
        keys: NDArray[np.int64],
        values: NDArray[np.float64],
        stride: int,
        bounds: NDArray[np.int64],
    ) -> None:
        self.keys = keys
        self.values = values
        self.stride = stride
        self.bounds = bounds  # per row, its entries' span (rows are contiguous, in order)
        self._dense: NDArray[np.float64] | None = None

    @property
    def rows(self) -> int:
        return int(self.bounds.shape[0] - 1)

    def _summed(self) -> NDArray[np.float64] | None:
        if self._dense is None and self.rows * self.stride <= DENSE_CELLS:
            cells = np.bincount(self.keys, weights=self.values, minlength=self.rows * self.stride)
            self._dense = cells.astype(np.float64).reshape(self.rows, self.stride)
        return self._dense

    def at(self, items: NDArray[np.int64]) -> NDArray[np.float32]:
        """The summed signal of ``items`` (shape ``(rows, width)``, model indices; 0: none)."""
        rows, width = items.shape
        if self.keys.size == 0 or items.size == 0:
            return np.zeros((rows, width), dtype=np.float32)
        dense = self._summed()
        if dense is not None:
            picked: NDArray[np.float32] = np.take_along_axis(dense, items, axis=1).astype(
                np.float32
            )
            return picked
        wanted = (np.arange(rows, dtype=np.int64)[:, None] * self.stride + items).reshape(-1)
        unique, inverse = np.unique(wanted, return_inverse=True)
        pos = np.minimum(np.searchsorted(unique, self.keys), unique.size - 1)
        hit = unique[pos] == self.keys
        sums = np.bincount(pos[hit], weights=self.values[hit], minlength=unique.size)
        out: NDArray[np.float32] = sums[inverse].reshape(rows, width).astype(np.float32)
        return out

    def tops(self, limit: int) -> list[NDArray[np.int64]]:
        """Per row, up to ``limit`` distinct items with evidence, strongest first (ties: lower
        index first); for a large catalog, strongest by their strongest single entry."""
        if limit < 1:
            return [np.zeros(0, dtype=np.int64) for _ in range(self.rows)]
        dense = self._summed()
        if dense is None:
            return [self._sparse_top(row, limit) for row in range(self.rows)]
        if limit < dense.shape[1]:
            picked = np.argpartition(-dense, limit - 1, axis=1)[:, :limit]
        else:
            picked = np.broadcast_to(np.arange(dense.shape[1]), dense.shape)
        picked = np.sort(picked, axis=1)  # index order, so the stable sort breaks ties by it
        values = np.take_along_axis(dense, picked, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        ranked = np.take_along_axis(picked, order, axis=1)
        strong = np.take_along_axis(values, order, axis=1) > 0
        return [ranked[r][strong[r]] for r in range(self.rows)]

    def _sparse_top(self, row: int, limit: int) -> NDArray[np.int64]:
        lo, hi = int(self.bounds[row]), int(self.bounds[row + 1])
        items = self.keys[lo:hi] - row * self.stride
        values = self.values[lo:hi]
        if items.size > limit:
            keep = np.argpartition(-values, limit - 1)[:limit]
            # Ties at the cut: argpartition picks any; take every entry as strong as the last.
            keep = np.flatnonzero(values >= values[keep].min())
            items, values = items[keep], values[keep]
        order = np.lexsort((items, -values))
        ranked = items[order]
        _, first = np.unique(ranked, return_index=True)
        result: NDArray[np.int64] = ranked[np.sort(first)[:limit]]
        return result


class Transitions:
    """A successor table over model item indices (CSR: ``offsets``, ``targets``, ``weights``).

    >>> t = Transitions.build([np.array([1, 2, 3]), np.array([1, 2])], 3, BlendParams(window=1))
    >>> t.successors(1)
    (array([2], dtype=int32), array([1.0986123], dtype=float32))
    >>> s = t.gather([[2, 1]])  # the user's recent items, newest first
    >>> s.at(np.array([[1, 2, 3]])).round(4)  # 2 after 1: twice, weight 0.8; 3 after 2: once
    array([[0.    , 0.8789, 0.6931]], dtype=float32)
    """

    __slots__ = ("n_items", "offsets", "params", "targets", "weights")

    def __init__(
        self,
        n_items: int,
        offsets: NDArray[np.int64],
        targets: NDArray[np.int32],
        weights: NDArray[np.float32],
        params: BlendParams,
    ) -> None:
        if offsets.shape != (n_items + 2,) or targets.shape != weights.shape:
            raise ValueError("transition table arrays do not fit together")
        if targets.size and (targets.min() < 1 or targets.max() > n_items):
            raise ValueError("transition targets outside 1..n_items")
        self.n_items = n_items
        self.offsets = offsets
        self.targets = targets
        self.weights = weights
        self.params = params

    @classmethod
    def build(
        cls, sequences: Iterable[NDArray[np.int64]], n_items: int, params: BlendParams
    ) -> Transitions:
        """Count the transitions of ``sequences`` (item indices 1..n_items, 0 is padding)."""
        stride = n_items + 1
        codes: list[NDArray[np.int64]] = []
        amounts: list[NDArray[np.float64]] = []
        seqs = [np.asarray(s, dtype=np.int64) for s in sequences]
        for gap in range(1, params.window + 1):
            for seq in seqs:
                if len(seq) <= gap:
                    continue
                a, b = seq[:-gap], seq[gap:]
                keep = (a != b) & (a > 0) & (b > 0)
                codes.append(a[keep] * stride + b[keep])
                amounts.append(np.full(int(keep.sum()), params.pair_decay ** (gap - 1)))
        if codes:
            flat, amount = np.concatenate(codes), np.concatenate(amounts)
        else:
            flat, amount = np.zeros(0, np.int64), np.zeros(0, np.float64)
        unique, inverse = np.unique(flat, return_inverse=True)
        counts = np.bincount(inverse, weights=amount, minlength=unique.size)
        sources, targets = unique // stride, unique % stride
        # Per source, the strongest successors first (ties: lower index), cut at max_per_item.
        order = np.lexsort((targets, -counts, sources))
        sources, targets, counts = sources[order], targets[order], counts[order]
        starts = np.searchsorted(sources, np.arange(stride + 1))
        rank = np.arange(sources.size) - starts[sources]
        kept = rank < params.max_per_item
        sources, targets, counts = sources[kept], targets[kept], counts[kept]
        offsets = np.searchsorted(sources, np.arange(stride + 1)).astype(np.int64)
        return cls(
            n_items,
            offsets,
            targets.astype(np.int32),
            np.log1p(counts).astype(np.float32),
            params,
        )

    def successors(self, item: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """What followed ``item``, strongest first, and the weights."""
        lo, hi = self.offsets[item], self.offsets[item + 1]
        return self.targets[lo:hi], self.weights[lo:hi]

    def gather(self, recent: Sequence[Sequence[int]] | NDArray[np.int64]) -> Signal:
        """The evidence of each user's recent items (model indices, newest first, one row per
        user; only the first ``params.recent`` count, 0s and unknown indices are skipped, the
        newest weighing 1, then ``recent_decay``, ...)."""
        stride = self.n_items + 1
        depth = self.params.recent
        if isinstance(recent, np.ndarray):
            matrix = np.asarray(recent[:, :depth], dtype=np.int64)
        else:
            matrix = np.zeros((len(recent), depth), dtype=np.int64)
            for r, items in enumerate(recent):
                head = items[:depth]
                matrix[r, : len(head)] = head
        known = (matrix > 0) & (matrix <= self.n_items)
        row_of, position = np.nonzero(known)  # row-major: each row's entries together
        src = matrix[row_of, position]
        factor = self.params.recent_decay ** position.astype(np.float64)
        starts, ends = self.offsets[src], self.offsets[src + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        per_row = np.bincount(row_of, weights=lengths, minlength=matrix.shape[0])
        bounds = np.concatenate(([0], np.cumsum(per_row))).astype(np.int64)
        if total == 0:
            return Signal(np.zeros(0, np.int64), np.zeros(0, np.float64), stride, bounds)
        # Every (source, entry) of the CSR slices at once: entry j of slice s is starts[s] + j.
        first = np.cumsum(lengths) - lengths
        entry = np.arange(total) - np.repeat(first, lengths) + np.repeat(starts, lengths)
        keys = np.repeat(row_of.astype(np.int64), lengths) * stride + self.targets[entry]
        values = self.weights[entry] * np.repeat(factor, lengths)
        return Signal(keys, values, stride, bounds)

    def to_bytes(self) -> bytes:
        """The package file (``transitions.npz``)."""
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            n_items=np.array([self.n_items], dtype=np.int64),
            offsets=self.offsets,
            targets=self.targets,
            weights=self.weights,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes, params: BlendParams) -> Transitions:
        with np.load(io.BytesIO(raw), allow_pickle=False) as doc:
            return cls(
                int(doc["n_items"][0]),
                doc["offsets"].astype(np.int64),
                doc["targets"].astype(np.int32),
                doc["weights"].astype(np.float32),
                params,
            )


def blend(
    scores: NDArray[np.float32], signal: NDArray[np.float32], alpha: float
) -> NDArray[np.float32]:
    """The hybrid score: the model's plus ``alpha * log1p(signal)``.

    >>> blend(np.array([1.0, 2.0], np.float32), np.array([np.e - 1, 0.0], np.float32), 2.0)
    array([3., 2.], dtype=float32)
    """
    out: NDArray[np.float32] = (scores + np.float32(alpha) * np.log1p(signal)).astype(np.float32)
    return out
