"""Training and serving compute the same model inputs from the same history.

A user history goes through the training path (item_tables, BatchMaker, the evaluation's score
inputs) and, independently, through app.core.state.apply_event and the worker's Ranker.inputs; the
inputs the model would see must be equal at every position."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.catalog import Catalog, CatalogIndex
from app.core.features import CANDIDATE_FEATURES
from app.core.ranking import TYPE_IDS, Ranker, RankingParams
from app.core.records import Event, EventType, Item
from app.core.retrieval import Candidates
from app.core.scoring.package import LoadedModel
from app.core.state import StateLimits, UserState, apply_event
from app.training.features import data_items
from app.training.model import ModelConfig
from app.training.sequences import SequenceData, Split, leave_one_out
from app.training.train import BatchMaker, item_tables

HOUR_MS = 3_600_000
KINDS = {1: EventType.VIEW, 2: EventType.CLICK, 3: EventType.ADD_TO_CART, 4: EventType.PURCHASE}


def history_data() -> SequenceData:
    """Two users over twelve items with one to three genres each (one with none), mixed
    interaction types, and gaps from seconds to days (so affinity decay matters)."""
    genres = (
        (),
        ("Drama",),
        ("Comedy", "Romance"),
        ("Action", "Thriller", "Crime"),
        ("Drama", "Romance"),
        (),
        ("Comedy",),
        ("Sci-Fi", "Action"),
        ("Thriller",),
        ("Drama", "War"),
        ("Animation", "Comedy", "Children's"),
        ("Crime",),
        ("Action",),
    )
    n = len(genres) - 1
    seq_a = [1, 2, 3, 4, 6, 7, 9, 10, 11, 12, 5, 8]
    seq_b = [3, 7, 12, 2, 10, 1, 4]
    gaps_a = [
        0,
        5_000,
        60_000,
        2 * HOUR_MS,
        30 * HOUR_MS,
        1_000,
        7 * HOUR_MS,
        0,
        90_000,
        3 * HOUR_MS,
        50 * HOUR_MS,
        10_000,
    ]
    gaps_b = [0, HOUR_MS, 2 * HOUR_MS, 5_000, 12 * HOUR_MS, 1_000, 20_000]
    start = 1_700_000_000_000
    return SequenceData(
        n_items=n,
        item_tokens=("", *(f"m{i}" for i in range(1, n + 1))),
        item_titles=("", *(f"Movie number {i}" for i in range(1, n + 1))),
        item_genres=genres,
        user_tokens=("alice", "bob"),
        sequences=(np.array(seq_a, dtype=np.int64), np.array(seq_b, dtype=np.int64)),
        types=(
            np.array([2, 1, 1, 2, 3, 2, 1, 4, 2, 2, 1, 2], dtype=np.int64),
            np.array([2, 2, 1, 1, 2, 4, 2], dtype=np.int64),
        ),
        times=(
            start + np.cumsum(gaps_a).astype(np.int64),
            start + np.cumsum(gaps_b).astype(np.int64),
        ),
    )


def data_catalog(data: SequenceData, split: Split) -> tuple[list[Item], CatalogIndex]:
    """The data's items as catalog items (popularity from the training sequences), published."""
    counts = np.bincount(np.concatenate(split.train), minlength=data.n_items + 1)
    items = data_items(data, counts)
    catalog = Catalog()
    for item in items:
        catalog.upsert(item)
    catalog.publish()
    return items, catalog.index


def served_states(
    data: SequenceData, user: int, items: list[Item]
) -> list[tuple[UserState, Event]]:
    """The worker's path: one event per interaction through apply_event."""
    assert data.types is not None and data.times is not None
    state: UserState | None = None
    out = []
    for j, index in enumerate(data.sequences[user].tolist()):
        event = Event(
            event_id=f"e{user}-{j}",
            user_id=data.user_tokens[user],
            type=KINDS[int(data.types[user][j])],
            event_time_ms=int(data.times[user][j]),
            event_time="2023-11-14T22:13:20Z",
            item_id=f"m{index}",
        )
        state = apply_event(state, event, items[index - 1], StateLimits())
        out.append((state, event))
    return out


@pytest.mark.parametrize("user", [0, 1])
def test_training_and_serving_give_the_model_equal_inputs(model: LoadedModel, user: int) -> None:
    data = history_data()
    spec = model.spec
    cfg = ModelConfig(n_items=data.n_items, max_len=spec.max_len)
    split = leave_one_out(data)
    tables = item_tables(data, split.train, cfg)
    items, index = data_catalog(data, split)
    ranker = Ranker(model.ranker, spec, RankingParams())
    all_rows = np.array([index.row_of[f"m{i}"] for i in range(1, data.n_items + 1)], dtype=np.int32)
    everything = Candidates(
        all_rows, ("popular",) * len(all_rows), np.zeros(len(all_rows), np.float32)
    )

    # Training: one window over the user's whole training sequence.
    seq = split.train[user]
    maker = BatchMaker(data, tables, cfg, split.train, list(split.users), 0.0, seed=0)
    batch = maker.make([(user, 0, len(seq))])
    n = len(seq) - 1
    off = spec.max_len - n
    train_category = (batch.genre_affinity[0].numpy() @ tables.genres)[:, 1:]

    served = served_states(data, user, items)
    for j in range(n):  # the input after item j predicts item j + 1
        state, event = served[j]
        request = ranker._request(index, state, event)  # noqa: SLF001
        inputs = ranker.inputs(index, [request], [everything])
        # History: the same items, in the same slots, with the same types.
        trained = batch.inputs[0, off : off + j + 1].tolist()
        assert [i.item_id for i in state.history] == [f"m{i}" for i in trained]
        mask = inputs.history_mask[0] > 0
        assert np.flatnonzero(mask).tolist() == list(range(spec.max_len - j - 1, spec.max_len))
        rows = [index.row_of[f"m{i}"] for i in trained]
        assert np.array_equal(inputs.history_vectors[0][mask], index.vectors[rows])
        assert inputs.history_types[0][mask].tolist() == batch.types[0, off : off + j + 1].tolist()
        assert np.allclose(inputs.user_features[0], batch.user_features[0, off + j].numpy())
        # Candidates: popularity and genre affinity of every item.
        features = inputs.candidate_features[0]
        assert CANDIDATE_FEATURES[:2] == ("popularity", "category_affinity")
        assert np.allclose(features[:, 0], tables.popularity[1:], atol=1e-6)
        assert np.allclose(features[:, 1], train_category[off + j], atol=1e-6)
        assert np.abs(features[:, 1]).sum() > 0  # not vacuous: the user has affinities


def test_the_evaluation_scores_with_the_same_affinity(model: LoadedModel) -> None:
    """The held-out evaluation's input for a history is the training path's last position."""
    from app.training.features import affinity_after

    data = history_data()
    cfg = ModelConfig(n_items=data.n_items, max_len=model.spec.max_len)
    split = leave_one_out(data)
    tables = item_tables(data, split.train, cfg)
    seq = split.train[0]
    maker = BatchMaker(data, tables, cfg, split.train, list(split.users), 0.0, seed=0)
    batch = maker.make([(0, 0, len(seq))])
    last = batch.genre_affinity[0, -1].numpy()
    assert np.allclose(affinity_after(tables.track, 0, len(seq) - 1), last)
    assert TYPE_IDS["click"] == 2
