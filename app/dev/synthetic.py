"""Seeded synthetic catalog and traffic with planted user tastes, for the demo and tests."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from app.core.codec import format_time_ms
from app.core.records import Event, EventType, Item
from app.core.text import tokenize

GENRES: dict[str, tuple[str, ...]] = {
    "jazz": ("saxophone", "trumpet", "piano", "bebop", "swing", "cool"),
    "rock": ("guitar", "drums", "garage", "anthem", "riff", "live"),
    "classical": ("symphony", "piano", "violin", "baroque", "opera", "quartet"),
    "electronic": ("synth", "techno", "house", "ambient", "beats", "club"),
    "hiphop": ("rap", "beats", "boom-bap", "lyrical", "trap", "sample"),
    "folk": ("acoustic", "guitar", "ballad", "banjo", "storytelling", "roots"),
    "blues": ("delta", "guitar", "harmonica", "soul", "slide", "chicago"),
    "reggae": ("dub", "roots", "ska", "island", "bass", "riddim"),
}
_ADJECTIVES = (
    "Blue",
    "Midnight",
    "Golden",
    "Electric",
    "Quiet",
    "Wild",
    "Velvet",
    "Northern",
    "Lost",
    "Silver",
    "Crimson",
    "Endless",
    "Smoky",
    "Bright",
    "Hollow",
    "Paper",
)
_NOUNS = (
    "Train",
    "Sessions",
    "River",
    "Hours",
    "Letters",
    "Garden",
    "Skyline",
    "Echoes",
    "Roads",
    "Dreams",
    "Harbor",
    "Motel",
    "Machine",
    "Lanterns",
    "Mirrors",
    "Tides",
)


def make_catalog(n_items: int, seed: int = 7) -> list[Item]:
    """``n_items`` items spread over :data:`GENRES`, with Zipf-like popularity."""
    rng = random.Random(seed)
    genres = list(GENRES)
    items = []
    for i in range(n_items):
        genre = genres[i % len(genres)]
        tags = tuple(rng.sample(GENRES[genre], k=2))
        title = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {i}"
        popularity = round(1000.0 / (1 + rng.random() * n_items / 10), 3)
        items.append(
            Item(
                item_id=f"item-{i:06d}",
                title=title,
                category=genre,
                tags=tags,
                price=round(rng.uniform(5, 60), 2),
                popularity=popularity,
            )
        )
    return items


@dataclass(frozen=True, slots=True)
class SyntheticUser:
    user_id: str
    tastes: tuple[str, ...]


class Traffic:
    """Sessions by users with planted tastes: search a genre, click, view, sometimes buy.

    Each call to :meth:`session` yields one session's events with increasing event times.
    """

    def __init__(self, catalog: list[Item], n_users: int, seed: int = 11) -> None:
        self.rng = random.Random(seed)
        self.by_genre: dict[str, list[Item]] = {}
        for item in catalog:
            if not item.withdrawn:
                self.by_genre.setdefault(item.category, []).append(item)
        genres = sorted(self.by_genre)
        self.users = [
            SyntheticUser(f"user-{u:05d}", tuple(self.rng.sample(genres, k=min(2, len(genres)))))
            for u in range(n_users)
        ]
        self._seq = 0

    def _event(self, user: SyntheticUser, kind: EventType, time_ms: int, **fields: str) -> Event:
        self._seq += 1
        return Event(
            event_id=f"evt-{self._seq:09d}-{self.rng.getrandbits(32):08x}",
            user_id=user.user_id,
            type=kind,
            event_time_ms=time_ms,
            event_time=format_time_ms(time_ms),
            item_id=fields.get("item_id"),
            query=fields.get("query"),
            context={"device": self.rng.choice(["web", "ios", "android"]), "locale": "en-US"},
        )

    def session(self, user: SyntheticUser | None = None, start_ms: int = 0) -> Iterator[Event]:
        rng = self.rng
        user = user or rng.choice(self.users)
        genre = rng.choice(user.tastes)
        pool = self.by_genre[genre]
        t = start_ms
        if rng.random() < 0.7:
            # Query words: the genre's own vocabulary, else a word from a title in the genre.
            words = GENRES.get(genre) or tuple(
                w for w in tokenize(rng.choice(pool).title) if len(w) > 3 and not w.isdigit()
            )
            tag = rng.choice(words or (genre,))
            query = rng.choice([genre, f"{genre} {tag}", tag])
            yield self._event(user, EventType.SEARCH, t, query=query)
        for _ in range(rng.randint(1, 4)):
            t += rng.randint(200, 3000)
            item = pool[min(len(pool) - 1, int(rng.expovariate(1 / 20)))]
            yield self._event(user, EventType.VIEW, t, item_id=item.item_id)
            t += rng.randint(100, 1500)
            yield self._event(user, EventType.CLICK, t, item_id=item.item_id)
            if rng.random() < 0.2:
                t += rng.randint(500, 4000)
                yield self._event(user, EventType.ADD_TO_CART, t, item_id=item.item_id)
                if rng.random() < 0.5:
                    t += rng.randint(1000, 8000)
                    yield self._event(user, EventType.PURCHASE, t, item_id=item.item_id)

    def interleaved(
        self, n: int, *, concurrent: int, start_ms: int, step_ms: int = 10
    ) -> Iterator[Event]:
        """``n`` events from up to ``concurrent`` open sessions at once, interleaved as they
        arrive from a busy site; sessions start ``step_ms`` apart from ``start_ms``."""
        sessions: list[Iterator[Event]] = []
        t = start_ms
        sent = 0
        while sent < n:
            if len(sessions) < concurrent:
                sessions.append(self.session(start_ms=t))
            i = self.rng.randrange(len(sessions))
            event = next(sessions[i], None)
            if event is None:
                sessions.pop(i)
                continue
            t += step_ms
            sent += 1
            yield event
