"""What a replay streams: a data set's interactions with their times, cut down as asked, in
global time order, with event times shifted so that the last one is now."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from app.core.records import Item
from app.dev.replay.scoring import Interaction
from app.training.movielens import fetch_ml100k, load_ml100k, movielens_catalog
from app.training.sequences import SequenceData, synthetic_sequences

DEFAULT_CACHE = Path.home() / ".cache" / "liverank" / "datasets"  # as scripts/train's
ML100K = "ml-100k"
# Synthetic users' sessions: a start within this window, then one interaction every
# SYNTHETIC_GAP_S seconds or so (they carry no times of their own).
SYNTHETIC_WINDOW_S = 7 * 86400
SYNTHETIC_GAP_S = (5, 300)

Times = tuple[NDArray[np.int64], ...]  # per user, milliseconds, aligned with the sequences


@dataclass(frozen=True, slots=True)
class Dataset:
    """A data set as the replay needs it: sequences, their times, and the catalog."""

    name: str
    data: SequenceData
    times: Times
    catalog: list[Item]


def parse_spec(spec: str) -> tuple[str, int, int]:
    """``ml-100k`` or ``synthetic:USERS:ITEMS`` (defaults 1000 users, 500 items).

    >>> parse_spec("ml-100k"), parse_spec("synthetic:300:200"), parse_spec("synthetic")
    (('ml-100k', 0, 0), ('synthetic', 300, 200), ('synthetic', 1000, 500))
    """
    if spec == ML100K:
        return ML100K, 0, 0
    if spec == "synthetic" or spec.startswith("synthetic:"):
        parts = spec.split(":")
        try:
            users = int(parts[1]) if len(parts) > 1 else 1000
            items = int(parts[2]) if len(parts) > 2 else 500
        except ValueError:
            raise ValueError(f"bad data set {spec!r}: synthetic:USERS:ITEMS") from None
        if len(parts) > 3 or users < 1 or items < 1:
            raise ValueError(f"bad data set {spec!r}: synthetic:USERS:ITEMS")
        return "synthetic", users, items
    raise ValueError(f"unknown data set {spec!r}: ml-100k or synthetic:USERS:ITEMS")


def load_dataset(spec: str, cache: Path = DEFAULT_CACHE, seed: int = 0) -> Dataset:
    """The data set ``spec`` names (see :func:`parse_spec`), with per-user times."""
    kind, users, items = parse_spec(spec)
    if kind == ML100K:
        directory = fetch_ml100k(cache)
        data = load_ml100k(directory)
        # load_ml100k may carry the times itself (SequenceData.times, ms); until it does they
        # are read here, in the same order.
        times = getattr(data, "times", None)
        if times is None:
            times = ml100k_times(directory / "ml-100k.inter", data)
        return Dataset(spec, data, tuple(times), movielens_catalog(data))
    data = synthetic_sequences(users, items, seed=seed)
    return Dataset(spec, data, synthetic_times(data, seed), movielens_catalog(data))


def ml100k_times(inter: Path, data: SequenceData) -> Times:
    """Each interaction's timestamp (ms) from ML-100K's ``.inter`` file, aligned with
    ``data.sequences`` as :func:`app.training.movielens.load_ml100k` orders them (per user by
    time, ties in file order: a stable sort by time, then by user). Raises ValueError if the
    items do not line up, so a change in that order cannot go unnoticed."""
    raw = inter.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = text.splitlines()
    columns = {name.split(":", 1)[0]: i for i, name in enumerate(lines[0].split("\t"))}
    rows = [line.split("\t") for line in lines[1:] if line]
    user_at, item_at, time_at = columns["user_id"], columns["item_id"], columns["timestamp"]
    user_index = {token: u for u, token in enumerate(data.user_tokens)}
    item_index = {token: i for i, token in enumerate(data.item_tokens) if i}
    users = np.fromiter((user_index[r[user_at]] for r in rows), np.int64, count=len(rows))
    items = np.fromiter((item_index[r[item_at]] for r in rows), np.int64, count=len(rows))
    stamps = np.fromiter((float(r[time_at]) for r in rows), np.float64, count=len(rows))
    order = np.argsort(stamps, kind="stable")
    order = order[np.argsort(users[order], kind="stable")]
    bounds = np.cumsum(np.bincount(users, minlength=data.n_users))[:-1]
    per_user_items = np.split(items[order], bounds)
    per_user_ms = np.split(np.round(stamps[order] * 1000).astype(np.int64), bounds)
    for u, (mine, expected) in enumerate(zip(per_user_items, data.sequences, strict=True)):
        if not np.array_equal(mine, expected):
            raise ValueError(f"{inter}: user {data.user_tokens[u]}'s items are not in load order")
    return tuple(per_user_ms)


def synthetic_times(data: SequenceData, seed: int = 0) -> Times:
    """Times for data without any: each user starts at a random moment of a week and acts every
    5 to 300 seconds (seeded, so the same data always gets the same times)."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for seq in data.sequences:
        start = int(rng.integers(0, SYNTHETIC_WINDOW_S * 1000))
        gaps = rng.integers(SYNTHETIC_GAP_S[0] * 1000, SYNTHETIC_GAP_S[1] * 1000, size=len(seq))
        gaps[:1] = 0
        out.append((start + np.cumsum(gaps)).astype(np.int64))
    return tuple(out)


def replay_stream(
    dataset: Dataset,
    *,
    prefix: str,
    now_ms: int,
    limit_users: int | None = None,
    last_events: int | None = None,
) -> list[Interaction]:
    """The clicks to publish, in global time order (ties: by user, then the user's own order).

    ``limit_users``: only the data set's first N users; ``last_events``: only each user's last N
    interactions. Event times keep their gaps and are shifted by one constant so that the last
    is ``now_ms``. Event ids are ``<prefix><n>``, n the position in the stream.

    >>> d = SequenceData(3, ("", "a", "b", "c"), ("",) * 4, ((),) * 4, ("u", "v"),
    ...                  (np.array([1, 2, 3]), np.array([3, 1])))
    >>> ds = Dataset("t", d, (np.array([0, 10, 30]), np.array([5, 10])), [])
    >>> [(e.event_id, e.user, e.item, e.time_ms) for e in replay_stream(ds, prefix="e", now_ms=100,
    ...  last_events=2)]
    [('e0', 'v', 'c', 75), ('e1', 'u', 'b', 80), ('e2', 'v', 'a', 80), ('e3', 'u', 'c', 100)]
    """
    data = dataset.data
    n_users = data.n_users if limit_users is None else min(limit_users, data.n_users)
    keep = None if last_events is None else max(0, last_events)
    users: list[NDArray[np.int64]] = []
    items: list[NDArray[np.int64]] = []
    stamps: list[NDArray[np.int64]] = []
    positions: list[NDArray[np.int64]] = []
    for u in range(n_users):
        seq, times = data.sequences[u], dataset.times[u]
        if len(seq) != len(times):
            raise ValueError(f"user {data.user_tokens[u]}: {len(seq)} items, {len(times)} times")
        start = 0 if keep is None else max(0, len(seq) - keep)
        n = len(seq) - start
        users.append(np.full(n, u, dtype=np.int64))
        items.append(np.asarray(seq[start:], dtype=np.int64))
        stamps.append(np.asarray(times[start:], dtype=np.int64))
        positions.append(np.arange(n, dtype=np.int64))
    if not users or not sum(len(a) for a in users):
        return []
    user = np.concatenate(users)
    item = np.concatenate(items)
    stamp = np.concatenate(stamps)
    position = np.concatenate(positions)
    order = np.lexsort((position, user, stamp))
    shift = now_ms - int(stamp.max())
    return [
        Interaction(
            event_id=f"{prefix}{n}",
            user=data.user_tokens[int(user[i])],
            item=data.item_tokens[int(item[i])],
            time_ms=int(stamp[i]) + shift,
        )
        for n, i in enumerate(order.tolist())
    ]


def span_s(stream: list[Interaction]) -> float:
    """Seconds from the first event time to the last."""
    if not stream:
        return 0.0
    times = [e.time_ms for e in stream]
    return (max(times) - min(times)) / 1000.0
