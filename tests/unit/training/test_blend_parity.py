"""The hybrid score is one implementation: the worker's Ranker and the offline evaluation
(app.training.onnx_eval.with_transitions) give every item the same score and exclude the same
items, event after event of a user's history; and the fit chooses on validation alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from app.core.ranking import Ranker, RankingParams
from app.core.scoring.base import RankInputs
from app.core.scoring.package import LoadedModel
from app.core.transitions import BlendParams, Transitions
from app.training.blend import fit_blend
from app.training.evaluate import served_exclusions
from app.training.onnx_eval import with_transitions
from app.training.sequences import leave_one_out
from tests.unit.training.test_feature_parity import data_catalog, history_data, served_states


class ItemScorer:
    """Scores that depend on the candidate item alone (the sum of its vector), so the offline
    side can compute them without the ranker's inputs."""

    model_version = "parity"

    def score(self, inputs: RankInputs) -> NDArray[np.float32]:
        scores: NDArray[np.float32] = inputs.candidate_vectors.sum(axis=2) * np.float32(0.1)
        return scores


def test_serving_and_evaluation_blend_alike(model: LoadedModel) -> None:
    data = history_data()
    split = leave_one_out(data)
    items, index = data_catalog(data, split)
    # The model knows every item by its data index (items.tsv), as the default package does.
    params = BlendParams(alpha=2.0, window=2, recent=3, recent_decay=0.5)
    table = Transitions.build(split.train, data.n_items, params)
    spec = replace(
        model.spec,
        item_index={f"m{i}": i for i in range(1, data.n_items + 1)},
        transitions=table,
    )
    ranker = Ranker(ItemScorer(), spec, RankingParams(top_k=data.n_items, candidates=50))
    rows = [index.row_of[f"m{i}"] for i in range(1, data.n_items + 1)]
    item_scores = (index.vectors[rows].sum(axis=1) * np.float32(0.1)).astype(np.float32)

    def base(users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> NDArray[np.float32]:
        out = np.zeros((len(histories), data.n_items + 1), dtype=np.float32)
        out[:, 1:] = item_scores
        return out

    offline = with_transitions(base, table, np.arange(data.n_items + 1, dtype=np.int64))
    moved = 0
    for user in (0, 1):
        sequence = data.sequences[user]
        for j, (state, event) in enumerate(served_states(data, user, items)):
            history = sequence[: j + 1]
            (rec,) = ranker.rank(index, [(state, event)])
            want = offline(np.array([user]), [history])[0]
            skip = set(served_exclusions([history])[0].tolist())
            # The same items are shown (every item the evaluation lets compete) ...
            shown = {int(i.item_id[1:]) for i in rec.items}
            assert shown == set(range(1, data.n_items + 1)) - skip
            # ... with the same scores, hence in the same order.
            for ranked in rec.items:
                assert abs(ranked.score - float(want[int(ranked.item_id[1:])])) < 1e-5
            moved += int(np.abs(want[1:] - item_scores).max() > 1e-3)
    assert moved > 10  # not vacuous: the transitions moved the scores at most positions


def test_the_fit_reads_the_validation_targets_only() -> None:
    """Changing every test target leaves the fit's choice and its validation figures as they
    are (the test split is never read while choosing)."""
    data = history_data()
    split = leave_one_out(data)
    n = data.n_items

    def scores(users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> NDArray[np.float64]:
        rng = np.random.default_rng(len(histories[0]))
        return rng.standard_normal((len(histories), n + 1))

    index = np.arange(n + 1, dtype=np.int64)
    first = fit_blend(scores, split, index, n, windows=(1, 2), recents=(2,), alphas=(0.5, 2.0))
    shuffled = [s.copy() for s in data.sequences]
    for s in shuffled:
        s[-1] = (s[-1] % n) + 1
    other = leave_one_out(replace(data, sequences=tuple(shuffled)))
    second = fit_blend(scores, other, index, n, windows=(1, 2), recents=(2,), alphas=(0.5, 2.0))
    assert first.params == second.params
    assert first.valid == second.valid
    assert len(first.tried) == 4
