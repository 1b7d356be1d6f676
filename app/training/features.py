"""Training's per-user model inputs, computed by the serving code: each user's states come from
``app.core.state.apply_event`` over their sequence, and the genre affinities from
``app.core.features.genre_affinity``, so training, evaluation and the worker cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.core.features import genre_affinity
from app.core.records import Event, EventType, Item, item_genres
from app.core.state import StateLimits, UserState, apply_event
from app.training.sequences import SequenceData, interaction_times

# The data's interaction type numbers (app.training.sequences) as event types.
EVENT_TYPES = {
    1: EventType.VIEW,
    2: EventType.CLICK,
    3: EventType.ADD_TO_CART,
    4: EventType.PURCHASE,
}


def data_items(data: SequenceData, counts: NDArray[np.int64], untitled: str = "Item") -> list[Item]:
    """The data set's items as a catalog holds them (index ``i`` is ``result[i - 1]``): the
    first genre is the category (``unknown`` without one), the others tags, ``counts[i]`` the
    popularity prior; an item without a title is called ``untitled`` and its id."""
    return [
        Item(
            item_id=data.item_tokens[i],
            title=data.item_titles[i] or f"{untitled} {data.item_tokens[i]}",
            category=(data.item_genres[i] or ("unknown",))[0],
            tags=tuple(data.item_genres[i][1:]),
            popularity=float(counts[i]),
        )
        for i in range(1, data.n_items + 1)
    ]


@dataclass(frozen=True, eq=False)
class GenreTrack:
    """Genres and every user's genre affinity after each of their interactions.

    ``genres[g, i]``: 1 / (item i's genre count) when item ``i`` has genre ``names[g]`` (so
    ``affinity @ genres`` is the mean affinity over an item's genres, as
    app.core.features.genre_match serves it); ``affinity[u][j]``: user ``u``'s scaled affinity
    vector after their ``j``-th interaction, at its time."""

    names: tuple[str, ...]
    genres: NDArray[np.float32]
    affinity: tuple[NDArray[np.float32], ...]


def user_states(
    data: SequenceData, items: list[Item], user: int, limits: StateLimits
) -> list[tuple[UserState, Event]]:
    """The user's state after each interaction, as the worker would hold it, with the event."""
    kinds = data.types[user] if data.types is not None else None
    times = interaction_times(data)[user]
    token = data.user_tokens[user]
    state: UserState | None = None
    out: list[tuple[UserState, Event]] = []
    for j, index in enumerate(data.sequences[user].tolist()):
        item = items[index - 1]
        event = Event(
            event_id=f"{token}:{j}",
            user_id=token,
            type=EVENT_TYPES[int(kinds[j])] if kinds is not None else EventType.CLICK,
            event_time_ms=int(times[j]),
            event_time="",
            item_id=item.item_id,
        )
        state = apply_event(state, event, item, limits)
        out.append((state, event))
    return out


def genre_track(data: SequenceData, items: list[Item], limits: StateLimits) -> GenreTrack:
    """Every user's genre affinities along their whole sequence (each value depends only on
    the interactions up to it, so the held-out items never leak into earlier positions)."""
    per_item = [item_genres(i) for i in items]
    names = tuple(sorted({g for gs in per_item for g in gs}))
    column = {g: c for c, g in enumerate(names)}
    genres = np.zeros((len(names), data.n_items + 1), dtype=np.float32)
    for i, gs in enumerate(per_item, start=1):
        for g in gs:
            genres[column[g], i] = 1.0 / len(gs)
    tracks: list[NDArray[np.float32]] = []
    for user in range(data.n_users):
        states = user_states(data, items, user, limits)
        track = np.zeros((len(states), len(names)), dtype=np.float32)
        for j, (state, event) in enumerate(states):
            for g, value in genre_affinity(
                state, event.event_time_ms, limits.affinity_half_life_s
            ).items():
                track[j, column[g]] = value
        tracks.append(track)
    return GenreTrack(names, genres, tuple(tracks))


def affinity_after(track: GenreTrack, user: int, length: int) -> NDArray[np.float32]:
    """User ``user``'s affinity vector after their first ``length`` interactions (zeros for
    none)."""
    if length <= 0:
        return np.zeros(len(track.names), dtype=np.float32)
    row: NDArray[np.float32] = track.affinity[user][length - 1]
    return row
