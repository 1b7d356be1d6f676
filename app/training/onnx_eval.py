"""Evaluate and time a model package through ONNX Runtime, exactly as the worker runs it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from app.core.features import user_features
from app.core.ranking import TYPE_IDS
from app.core.scoring.base import RankInputs
from app.core.scoring.package import LoadedModel, load_package
from app.core.transitions import Transitions, blend
from app.training.features import affinity_after
from app.training.train import ItemTables, model_ids

ScoreFn = Callable[[NDArray[np.int64], list[NDArray[np.int64]]], NDArray[np.float32]]


def package_vectors(
    model: LoadedModel, tables: ItemTables, ids: NDArray[np.int64] | None = None
) -> NDArray[np.float32]:
    """Item vectors for model indices 0..n (row 0 is the padding row, zeros). ``ids``: the id
    the package knows each item by (default: the package was trained on these items, in this
    order)."""
    ids = model_ids(tables) if ids is None else ids
    vectors = model.encoder.encode(ids[1:], tables.terms[1:])
    return np.vstack([np.zeros((1, vectors.shape[1]), dtype=np.float32), vectors])


def onnx_score_fn(
    model: LoadedModel,
    tables: ItemTables,
    n_items: int | None = None,
    batch: int = 32,
    ids: NDArray[np.int64] | None = None,
) -> ScoreFn:
    """Full-ranking scores through the package's ranker: every item ``1..n_items`` is a candidate
    (default: all items of ``tables``); ``ids`` as in :func:`package_vectors`."""
    spec = model.spec
    width = (n_items if n_items is not None else tables.terms.shape[0] - 1) + 1
    vectors = package_vectors(model, tables, ids)[:width]
    items = vectors[1:]

    def score(users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> NDArray[np.float32]:
        out = np.zeros((len(histories), vectors.shape[0]), dtype=np.float32)
        for start in range(0, len(histories), batch):
            chunk = histories[start : start + batch]
            inputs = RankInputs.zeros(spec, len(chunk), items.shape[0])
            for r, hist in enumerate(chunk):
                last = hist[-spec.max_len :]
                off = spec.max_len - len(last)
                inputs.history_vectors[r, off:] = vectors[last]
                inputs.history_mask[r, off:] = 1.0
                inputs.history_types[r, off:] = TYPE_IDS["click"]
                inputs.user_features[r] = user_features(
                    is_search=False, interactions=len(hist), max_len=spec.max_len
                )
                affinity = affinity_after(tables.track, int(users[start + r]), len(hist))
                inputs.candidate_features[r, :, 0] = tables.popularity[1:width]
                inputs.candidate_features[r, :, 1] = affinity @ tables.genres[:, 1:width]
            inputs.candidate_vectors[:] = items[None]
            out[start : start + len(chunk), 1:] = model.ranker.score(inputs)
        return out

    return score


def with_transitions(base: ScoreFn, table: Transitions, model_index: NDArray[np.int64]) -> ScoreFn:
    """The hybrid score the worker serves (app.core.ranking.Ranker.rank): ``base``'s scores
    blended with the transition signal of each user's last ``table.params.recent`` items,
    newest first, through the same :class:`Transitions` and :func:`blend`. ``model_index``: the
    package's index of each data item (0: unknown to it)."""
    depth = table.params.recent

    def score(users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> NDArray[np.float32]:
        scores = np.asarray(base(users, histories), dtype=np.float32)
        width = scores.shape[1]
        recent = [model_index[h[-depth:][::-1]].tolist() for h in histories]
        items = np.broadcast_to(model_index[1:width], (len(histories), width - 1))
        out = scores.copy()
        out[:, 1:] = blend(scores[:, 1:], table.gather(recent).at(items), table.params.alpha)
        return out

    return score


def package_score_fn(
    model: LoadedModel,
    tables: ItemTables,
    ids: NDArray[np.int64] | None = None,
    n_items: int | None = None,
) -> ScoreFn:
    """What the worker serves with this package: the ranker, blended with the package's
    transitions when it has them. ``ids``: the package's index of each data item, 0 for those
    it does not know (default: the data's item indices are the package's); ``n_items`` as in
    :func:`onnx_score_fn`."""
    base = onnx_score_fn(model, tables, n_items, ids=ids)
    table = model.spec.transitions
    if table is None:
        return base
    model_index = ids
    if model_index is None:
        model_index = np.arange(tables.terms.shape[0], dtype=np.int64)
        model_index[model_index > table.n_items] = 0
    return with_transitions(base, table, model_index)


def time_scoring(
    package: Path, variant: str, *, candidates: int = 200, batch: int = 1, repeats: int = 300
) -> dict[str, float]:
    """Median and p99 wall time of scoring one batch on one CPU thread, and events per second:
    the ranker call plus, for a package with transitions, the blend (each event's signal from
    ten recent items, summed at its candidates) as the worker computes it."""
    model = load_package(package, variant=variant, threads=1)
    rng = np.random.default_rng(0)
    inputs = RankInputs.zeros(model.spec, batch, candidates)
    inputs.history_vectors[:] = rng.standard_normal(inputs.history_vectors.shape)
    inputs.history_mask[:] = 1.0
    inputs.history_types[:] = TYPE_IDS["click"]
    inputs.candidate_vectors[:] = rng.standard_normal(inputs.candidate_vectors.shape)
    table = model.spec.transitions
    n = max(model.spec.item_index.values(), default=1)
    recent = [rng.integers(1, n + 1, size=10).tolist() for _ in range(batch)]
    items = rng.integers(1, n + 1, size=(batch, candidates))

    def once() -> None:
        scores = model.ranker.score(inputs)
        if table is not None:
            blend(scores, table.gather(recent).at(items), table.params.alpha)

    for _ in range(20):
        once()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    return {
        "median_ms": median * 1000,
        "p99_ms": float(np.percentile(times, 99)) * 1000,
        "events_per_s": batch / median,
        "batch": float(batch),
        "candidates": float(candidates),
        "blend": float(table is not None),
    }
