"""Retraining from the stream: the feedback topic (every applied event) and the catalog topic as
training data, a new model version trained on them, evaluated against the serving one on each
user's most recent interaction, and announced only if it is better."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from app.core.codec import decode_item, parse_time_ms
from app.core.ranking import TYPE_IDS
from app.core.records import ITEM_EVENTS, Item, item_genres
from app.core.scoring.package import LoadedModel
from app.core.settings import Settings
from app.kafka.topic_reader import read_topic
from app.training.sequences import SequenceData

# The events that are interactions with an item (searches and forget_user are not).
INTERACTIONS = frozenset(t.value for t in ITEM_EVENTS)


@dataclass(frozen=True, slots=True)
class Interaction:
    user_id: str
    item_id: str
    kind: str
    time_ms: int
    order: tuple[int, int]  # (partition, offset): ties in time keep log order


def catalog_items(messages: Iterable[Any]) -> dict[str, Item]:
    """The catalog as of now (the topic is compacted: last record per key wins)."""
    items: dict[str, Item] = {}
    for msg in messages:
        try:
            decoded = decode_item(msg.value(), msg.key())
        except ValueError:
            continue  # the worker dead-letters these
        if isinstance(decoded, str):
            items.pop(decoded, None)
        else:
            items[decoded.item_id] = decoded
    return items


def interactions(messages: Iterable[Any]) -> Iterator[Interaction]:
    """Item interactions from the feedback topic (redeliveries and other records skipped)."""
    for msg in messages:
        if msg.value() is None:
            continue
        doc = orjson.loads(msg.value())
        if doc.get("duplicate") or doc.get("type") not in INTERACTIONS or not doc.get("item_id"):
            continue
        yield Interaction(
            doc["user_id"],
            doc["item_id"],
            doc["type"],
            parse_time_ms(doc["event_time"]),
            (msg.partition() or 0, msg.offset() or 0),
        )


def sequence_data(
    items: dict[str, Item], events: Iterable[Interaction], min_length: int = 3
) -> SequenceData:
    """Per-user sequences in event-time order over the catalog's items (indices 1..n)."""
    ordered = sorted(items.values(), key=lambda i: i.item_id)
    index = {item.item_id: n for n, item in enumerate(ordered, start=1)}
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for e in events:
        if e.item_id in index:
            by_user[e.user_id].append(e)
    users = sorted(u for u, evs in by_user.items() if len(evs) >= min_length)
    sequences: list[NDArray[np.int64]] = []
    types: list[NDArray[np.int64]] = []
    times: list[NDArray[np.int64]] = []
    for user in users:
        evs = sorted(by_user[user], key=lambda e: (e.time_ms, e.order))
        sequences.append(np.array([index[e.item_id] for e in evs], dtype=np.int64))
        types.append(np.array([TYPE_IDS[e.kind] for e in evs], dtype=np.int64))
        times.append(np.array([e.time_ms for e in evs], dtype=np.int64))
    return SequenceData(
        times=tuple(times),
        n_items=len(ordered),
        item_tokens=("", *(i.item_id for i in ordered)),
        item_titles=("", *(i.title for i in ordered)),
        item_genres=((), *(item_genres(i) for i in ordered)),
        user_tokens=tuple(users),
        sequences=tuple(sequences),
        types=tuple(types),
    )


def read_stream_data(
    settings: Settings, since_ms: int | None = None, timeout_s: float = 120.0
) -> SequenceData:
    """The training data the stream holds now: the catalog and every applied interaction
    (only those from ``since_ms`` on, event time, when given: recent behaviour after a shift)."""
    items = catalog_items(read_topic(settings, settings.topic_catalog, timeout_s=timeout_s))
    events = interactions(read_topic(settings, settings.topic_feedback, timeout_s=timeout_s))
    if since_ms is not None:
        events = (e for e in events if e.time_ms >= since_ms)
    return sequence_data(items, events)


def serving_package(settings: Settings, timeout_s: float = 30.0) -> Path:
    """The package the workers serve: the newest one announced on the model-updates topic for
    the packaged model's name, else the packaged one (``MODEL_PATH``)."""
    from app.core.codec import decode_model_update
    from app.core.scoring.package import read_spec

    name = read_spec(settings.model_path)[0].name
    path = settings.model_path
    try:
        for msg in read_topic(settings, settings.topic_model_updates, timeout_s=timeout_s):
            try:
                update = decode_model_update(msg.value())
            except ValueError:
                continue
            if update.name == name:
                path = Path(update.path)
    except RuntimeError:  # no model-updates topic: nothing was ever announced
        pass
    return path


def serving_ids(model: LoadedModel, data: SequenceData) -> NDArray[np.int64]:
    """The id the serving model encodes each data item with: its own index (items.tsv), or 0
    for items it never saw (then their text alone makes the vector)."""
    return np.array(
        [0, *(model.spec.item_index.get(t, 0) for t in data.item_tokens[1:])], dtype=np.int64
    )


def better(candidate: dict[str, float], serving: dict[str, float], min_gain: float) -> bool:
    """Publish only a model that beats the serving one on HR@10 by ``min_gain`` (absolute) and
    is no worse on NDCG@10.

    >>> better({"hr@10": 0.30, "ndcg@10": 0.2}, {"hr@10": 0.25, "ndcg@10": 0.2}, 0.01)
    True
    >>> better({"hr@10": 0.255, "ndcg@10": 0.2}, {"hr@10": 0.25, "ndcg@10": 0.2}, 0.01)
    False
    """
    return (
        candidate["hr@10"] >= serving["hr@10"] + min_gain
        and candidate["ndcg@10"] >= serving["ndcg@10"]
    )


def next_version(version: str) -> str:
    """The next minor version.

    >>> next_version("1.0.0"), next_version("1.9.3"), next_version("7")
    ('1.1.0', '1.10.0', '7.1')
    """
    parts = version.split(".")
    major = parts[0]
    minor = int(parts[1]) + 1 if len(parts) > 1 and parts[1].isdigit() else 1
    return f"{major}.{minor}.0" if len(parts) > 2 else f"{major}.{minor}"
