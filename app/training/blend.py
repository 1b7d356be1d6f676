"""Fit the hybrid's transition table and blend weight on validation, and add them to a package.

The table is counted over the training sequences only (what the ranker was trained on); the
parameters are chosen by NDCG@10 on the validation targets, as the worker would serve them
(app.training.onnx_eval.with_transitions, the worker's own blend); the test split is not read.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.core.scoring.package import MANIFEST
from app.core.transitions import BlendParams, Transitions
from app.training.evaluate import KEPT_SEEN, ScoreFn, evaluate
from app.training.onnx_eval import with_transitions
from app.training.sequences import Split
from app.training.stamp import restamp

TRANSITIONS_FILE = "transitions.npz"
# The search space: small on purpose (943 validation targets do not support a large one).
WINDOWS = (3, 5)
RECENTS = (5, 10)
RECENT_DECAYS = (0.8,)
ALPHAS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


@dataclass(frozen=True, slots=True)
class Fitted:
    params: BlendParams
    table: Transitions
    valid: dict[str, float]
    model_valid: dict[str, float]
    tried: list[dict[str, Any]]


def cached_scores(score_fn: ScoreFn, split: Split, stage: str, batch: int = 64) -> ScoreFn:
    """``score_fn``'s rows for every evaluated user at ``stage``, computed once and looked up."""
    rows = np.flatnonzero(split.evaluated)
    users = np.asarray(split.users, dtype=np.int64)
    parts = []
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        parts.append(
            np.asarray(score_fn(users[chunk], [split.history(int(r), stage) for r in chunk]))
        )
    table = np.concatenate(parts) if parts else np.zeros((0, split.n_items + 1), np.float32)
    position = {int(u): i for i, u in enumerate(users[rows])}

    def score(batch_users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> Any:
        return table[[position[int(u)] for u in batch_users]]

    return score


def training_sequences(split: Split, model_index: NDArray[np.int64]) -> list[NDArray[np.int64]]:
    """The training part of each user's sequence, as the package's item indices."""
    return [model_index[s] for s in split.train]


def fit_blend(
    model_scores: ScoreFn,
    split: Split,
    model_index: NDArray[np.int64],
    n_model_items: int,
    *,
    windows: Sequence[int] = WINDOWS,
    recents: Sequence[int] = RECENTS,
    recent_decays: Sequence[float] = RECENT_DECAYS,
    alphas: Sequence[float] = ALPHAS,
    kept: int = KEPT_SEEN,
) -> Fitted:
    """The parameters with the best validation NDCG@10 (ties: HR@10, then the earlier in the
    grid); ``model_scores`` gives the ranker's scores (cache them: :func:`cached_scores`)."""
    model_valid = evaluate(model_scores, split, stage="valid", kept=kept)
    sequences = training_sequences(split, model_index)
    best: tuple[float, float] | None = None
    chosen: tuple[BlendParams, Transitions, dict[str, float]] | None = None
    tried: list[dict[str, Any]] = []
    for window in windows:
        table = Transitions.build(sequences, n_model_items, BlendParams(window=window))
        for recent, decay, alpha in itertools.product(recents, recent_decays, alphas):
            params = BlendParams(alpha=alpha, window=window, recent=recent, recent_decay=decay)
            candidate = with_params(table, params)
            m = evaluate(
                with_transitions(model_scores, candidate, model_index),
                split,
                stage="valid",
                kept=kept,
            )
            tried.append({**params.as_dict(), "hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"]})
            key = (m["ndcg@10"], m["hr@10"])
            if best is None or key > best:
                best, chosen = key, (params, candidate, m)
    if chosen is None:
        raise ValueError("an empty search space")
    return Fitted(chosen[0], chosen[1], chosen[2], model_valid, tried)


def attach(package: Path, table: Transitions, *, version: str | None, fit: dict[str, Any]) -> None:
    """Write ``table`` into ``package`` (``transitions.npz``, the manifest's ``blend`` and
    checksums); with ``version``, restamp the package (manifest and ONNX files) as that version,
    since the served scores change. Needs ``onnx`` (the train extra) to restamp."""
    manifest_path = package / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    path = package / TRANSITIONS_FILE
    path.write_bytes(table.to_bytes())
    manifest["files"]["transitions"] = TRANSITIONS_FILE
    manifest["blend"] = table.params.as_dict()
    manifest["blend_fit"] = fit
    names = [TRANSITIONS_FILE]
    if version is not None and version != manifest["version"]:
        onnx_files = [manifest["files"]["item_encoder"], *manifest["files"]["ranker"].values()]
        for name in onnx_files:
            restamp(package / name, version)
        manifest["version"] = version
        names += onnx_files
    for name in names:
        file = package / name
        manifest["sha256"][name] = hashlib.sha256(file.read_bytes()).hexdigest()
        manifest["sizes_bytes"][name] = file.stat().st_size
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def with_params(table: Transitions, params: BlendParams) -> Transitions:
    """The same counts blended with other parameters (window and cap must match the build)."""
    if (params.window, params.pair_decay, params.max_per_item) != (
        table.params.window,
        table.params.pair_decay,
        table.params.max_per_item,
    ):
        raise ValueError("window, pair_decay and max_per_item are the table's own")
    return Transitions(table.n_items, table.offsets, table.targets, table.weights, params)
