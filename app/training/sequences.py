"""Interaction sequences, the leave-one-out split, and a synthetic generator with planted tastes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from app.dev.synthetic import GENRES

Stage = Literal["valid", "test"]

# Interaction types as the model numbers them; the same numbers as app.core.ranking.TYPE_IDS (a unit
# test keeps the two in step) without importing the serving stack into offline code.
VIEW, CLICK, ADD_TO_CART, PURCHASE = 1, 2, 3, 4


# eq=False: the fields hold numpy arrays, whose == is elementwise, so dataclass equality would
# raise; identity is the useful equality for a data set anyway.
@dataclass(frozen=True, eq=False)
class SequenceData:
    """Per-user interaction sequences over items ``1..n_items`` (0 pads), each in time order.

    Item ``i`` is ``item_tokens[i]`` in the source data (index 0 is the padding item, ``""``);
    user ``u`` is ``user_tokens[u]``. ``times`` gives each interaction's time (epoch ms;
    ``None``: unknown), ``types`` each interaction's kind (1 view, 2 click, 3 add_to_cart,
    4 purchase; ``None``: every interaction is a click) and ``queries`` the search
    text active at each interaction (``None`` entries outside search sessions; ``None`` overall
    when the data set has no queries). The constructor checks that all of this lines up.
    """

    n_items: int
    item_tokens: tuple[str, ...]
    item_titles: tuple[str, ...]
    item_genres: tuple[tuple[str, ...], ...]
    user_tokens: tuple[str, ...]
    sequences: tuple[NDArray[np.int64], ...]
    types: tuple[NDArray[np.int64], ...] | None = None
    queries: tuple[tuple[str | None, ...], ...] | None = None
    # When each interaction happened, epoch milliseconds (None: unknown; see interaction_times).
    times: tuple[NDArray[np.int64], ...] | None = None

    def __post_init__(self) -> None:
        n = self.n_items + 1
        for name, table in (
            ("item_tokens", self.item_tokens),
            ("item_titles", self.item_titles),
            ("item_genres", self.item_genres),
        ):
            if len(table) != n:
                raise ValueError(f"{name} has {len(table)} entries, expected n_items + 1 = {n}")
        if len(self.user_tokens) != len(self.sequences):
            raise ValueError(
                f"{len(self.user_tokens)} user tokens for {len(self.sequences)} sequences"
            )
        if any(seq.dtype != np.int64 or seq.ndim != 1 for seq in self.sequences):
            raise ValueError("sequences must be one-dimensional int64 arrays")
        lengths = [len(seq) for seq in self.sequences]
        if lengths and sum(lengths):
            flat = np.concatenate(self.sequences)
            if int(flat.min()) < 1 or int(flat.max()) > self.n_items:
                raise ValueError(f"item indices must lie in 1..{self.n_items}")
        for name, per_user in (
            ("types", self.types),
            ("queries", self.queries),
            ("times", self.times),
        ):
            if per_user is None:
                continue
            if [len(row) for row in per_user] != lengths:
                raise ValueError(f"{name} must have one entry per interaction of every user")

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_interactions(self) -> int:
        return sum(len(seq) for seq in self.sequences)


@dataclass(frozen=True, eq=False)
class Split:
    """Leave-one-out: per user, the last item is the test target, the one before it validation.

    Row ``r`` of every field is user ``users[r]`` of the data (all users, in data order, so today
    ``users[r] == r``). ``train[r]`` is the user's sequence without its last two items. Users with
    fewer than three interactions have no targets (``valid_target``/``test_target`` 0,
    ``evaluated`` False): their whole sequence stays in ``train``, as training signal only,
    because holding two items out would leave nothing to predict from.
    """

    n_items: int
    users: tuple[int, ...]
    train: list[NDArray[np.int64]]
    valid_target: NDArray[np.int64]
    test_target: NDArray[np.int64]
    evaluated: NDArray[np.bool_]

    def history(self, row: int, stage: str) -> NDArray[np.int64]:
        """The model's input for ``stage``: the training part, plus the validation item for test."""
        return history_for(self, row, stage)

    def target(self, row: int, stage: str) -> int:
        """The item to predict for ``stage`` (0 for a user who is not evaluated)."""
        return int(self.targets(stage)[row])

    def targets(self, stage: str) -> NDArray[np.int64]:
        """Every row's target for ``stage``."""
        if stage == "valid":
            return self.valid_target
        if stage == "test":
            return self.test_target
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")


def leave_one_out(data: SequenceData) -> Split:
    """Hold out each user's last item for test and the one before it for validation.

    >>> seqs = (np.array([5, 6, 7, 8]), np.array([9, 5]))
    >>> d = SequenceData(9, ("",) * 10, ("",) * 10, ((),) * 10, ("a", "b"), seqs)
    >>> s = leave_one_out(d)
    >>> s.train[0].tolist(), int(s.valid_target[0]), int(s.test_target[0]), s.evaluated.tolist()
    ([5, 6], 7, 8, [True, False])
    """
    n_users = data.n_users
    train: list[NDArray[np.int64]] = []
    valid = np.zeros(n_users, dtype=np.int64)
    test = np.zeros(n_users, dtype=np.int64)
    for user, seq in enumerate(data.sequences):
        if len(seq) >= 3:
            train.append(seq[:-2])
            valid[user], test[user] = seq[-2], seq[-1]
        else:
            train.append(seq)
    return Split(
        n_items=data.n_items,
        users=tuple(range(n_users)),
        train=train,
        valid_target=valid,
        test_target=test,
        evaluated=test > 0,
    )


def history_for(split: Split, user: int, stage: str) -> NDArray[np.int64]:
    """Input history of ``split``'s row ``user`` for ``stage``: training part (+ validation item).

    For ``"valid"`` it is the training part; for ``"test"`` the training part followed by the
    validation target, which the model did not train on but which precedes the test item.
    """
    if not split.evaluated[user]:
        raise ValueError(f"user row {user} has fewer than three interactions: no {stage} target")
    if stage == "valid":
        return split.train[user]
    if stage == "test":
        return np.append(split.train[user], split.valid_target[user]).astype(np.int64)
    raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")


def _genre_vocab(genres: int) -> list[tuple[str, tuple[str, ...]]]:
    """Genre names and title words: app.dev.synthetic's eight, then made-up ones if more are
    asked."""
    vocab = list(GENRES.items())[:genres]
    for g in range(len(vocab), genres):
        vocab.append((f"genre{g}", tuple(f"g{g}word{j}" for j in range(6))))
    return vocab


_ADJECTIVES = (
    *("Blue", "Midnight", "Golden", "Electric", "Quiet", "Wild", "Velvet", "Northern"),
    *("Lost", "Silver", "Crimson", "Endless", "Smoky", "Bright", "Hollow", "Paper"),
)
_NOUNS = (
    *("Train", "Sessions", "River", "Hours", "Letters", "Garden", "Skyline", "Echoes"),
    *("Roads", "Dreams", "Harbor", "Motel", "Machine", "Lanterns", "Mirrors", "Tides"),
)


class _Catalog:
    """The synthetic items with the lookups the user simulation needs."""

    def __init__(self, rng: np.random.Generator, n_items: int, genres: int) -> None:
        self.vocab = _genre_vocab(genres)
        self.n_items = n_items
        # Every genre gets items (n_items >= genres), then the order is shuffled so that item
        # index says nothing about genre; a genre's own items, in index order, form its chain.
        self.genre = rng.permutation(np.arange(n_items) % genres)
        self.titles = [""]
        used: list[set[str]] = [set() for _ in range(genres)]  # genre words in its titles
        for i in range(n_items):
            words = self.vocab[self.genre[i]][1]
            word = words[rng.integers(len(words))]
            used[self.genre[i]].add(word)
            adjective = _ADJECTIVES[rng.integers(len(_ADJECTIVES))]
            noun = _NOUNS[rng.integers(len(_NOUNS))]
            self.titles.append(f"{adjective} {word.capitalize()} {noun}")
        self.title_words = [tuple(sorted(words)) for words in used]
        self.by_genre = [np.flatnonzero(self.genre == g) + 1 for g in range(genres)]
        with_word: dict[str, list[int]] = {}
        for i, title in enumerate(self.titles[1:], start=1):
            for word in title.lower().split():
                with_word.setdefault(word, []).append(i)
        self.by_word = {w: np.array(v, dtype=np.int64) for w, v in with_word.items()}
        self.position = np.empty(n_items + 1, dtype=np.int64)  # rank within its genre's chain
        for members in self.by_genre:
            self.position[members] = np.arange(len(members))
        # Zipf-like popularity over a random order of the items.
        weight = np.empty(n_items + 1)
        weight[0] = 0.0
        weight[1:] = 1.0 / np.arange(1, n_items + 1)
        weight[1:] = weight[1:][rng.permutation(n_items)]
        self.weight = weight

    def draw(
        self, rng: np.random.Generator, pool: NDArray[np.int64], seen: NDArray[np.bool_]
    ) -> int | None:
        """A popularity-weighted item of ``pool`` the user has not had (None if none is left)."""
        fresh = pool[~seen[pool]]
        if not len(fresh):
            return None
        cumulative = np.cumsum(self.weight[fresh])
        return int(fresh[np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")])

    def next_in_chain(
        self, rng: np.random.Generator, item: int, direction: int, seen: NDArray[np.bool_]
    ) -> int | None:
        """One of the next few unseen items along ``item``'s genre chain in ``direction``.

        Nearer items are likelier (each place further halves the odds) and so are popular ones
        (by the square root of their weight), so chains have both order and popularity in them.
        """
        chain = self.by_genre[self.genre[item - 1]]
        at = int(self.position[item])
        ahead = chain[(at + direction * np.arange(1, len(chain))) % len(chain)]
        ahead = ahead[~seen[ahead]][:4]
        if not len(ahead):
            return None
        odds = 0.5 ** np.arange(len(ahead)) * np.sqrt(self.weight[ahead])
        return int(ahead[np.searchsorted(np.cumsum(odds), rng.random() * odds.sum(), "right")])


def synthetic_sequences(n_users: int, n_items: int, seed: int = 0, genres: int = 8) -> SequenceData:
    """Users with planted tastes browsing a catalog with genre chains and Zipf-like popularity.

    Each item has one genre and a title holding one of the genre's words ("Quiet Saxophone
    River" is jazz). Each user has one or two favourite genres and 20 to 60 interactions
    (never the same item twice), about 85% of them within the favourites:

    - mostly Markov steps: from the last item, one of the next few unseen items (nearer and
      more popular ones likelier; 15% of the time backward) along its genre's chain of items,
      so sequence order carries signal and last-item co-occurrence is informative;
    - sometimes a jump to a popular item of a favourite genre, and 15% noise: a popular item
      of any genre;
    - search sessions: a query naming a genre, one of its title words, or both is followed by
      one to three clicks on matching items; ``queries`` holds the query at those interactions.

    Interaction types are mostly views and clicks with some add-to-carts and purchases. The same
    arguments always give the same data.
    """
    if n_users < 1 or genres < 1 or n_items < genres:
        raise ValueError("need n_users >= 1, genres >= 1 and n_items >= genres")
    rng = np.random.default_rng(seed)
    cat = _Catalog(rng, n_items, genres)
    sequences: list[NDArray[np.int64]] = []
    types: list[NDArray[np.int64]] = []
    queries: list[tuple[str | None, ...]] = []
    for _ in range(n_users):
        items, kinds, asked = _browse(rng, cat)
        sequences.append(items)
        types.append(kinds)
        queries.append(asked)
    return SequenceData(
        n_items=n_items,
        item_tokens=("", *(f"item-{i:06d}" for i in range(1, n_items + 1))),
        item_titles=tuple(cat.titles),
        item_genres=((), *((cat.vocab[g][0],) for g in cat.genre.tolist())),
        user_tokens=tuple(f"user-{u:05d}" for u in range(n_users)),
        sequences=tuple(sequences),
        types=tuple(types),
        queries=tuple(queries),
    )


def _browse(
    rng: np.random.Generator, cat: _Catalog
) -> tuple[NDArray[np.int64], NDArray[np.int64], tuple[str | None, ...]]:
    """One synthetic user's items, interaction types and queries (see synthetic_sequences)."""
    genres = len(cat.by_genre)
    every_item = np.arange(1, cat.n_items + 1, dtype=np.int64)
    favourites = rng.choice(genres, size=int(rng.integers(1, 3)), replace=False).tolist()
    length = min(int(rng.integers(20, 61)), cat.n_items)
    items: list[int] = []
    kinds: list[int] = []
    asked: list[str | None] = []
    seen = np.zeros(cat.n_items + 1, dtype=bool)

    def add(item: int, kind: int, query: str | None) -> None:
        items.append(item)
        kinds.append(kind)
        asked.append(query)
        seen[item] = True

    while len(items) < length:
        roll = rng.random()
        loyal = rng.random() < 0.85
        genre = int(rng.choice(favourites)) if loyal else int(rng.integers(genres))
        if roll < 0.08:  # a search session
            name, words = cat.vocab[genre][0], cat.title_words[genre]
            word = words[rng.integers(len(words))]
            form = rng.integers(3)
            query = name if form == 0 else word if form == 1 else f"{name} {word}"
            # A title word alone matches items of any genre whose title has it.
            pool = cat.by_word[word] if form == 1 else cat.by_genre[genre]
            for _click in range(int(rng.integers(1, 4))):
                found = cat.draw(rng, pool, seen)
                if found is None or len(items) == length:
                    break
                add(found, CLICK, query)
            continue
        item: int | None = None
        last = items[-1] if items else None
        if roll < 0.23:  # noise: a popular item of any genre
            item = cat.draw(rng, every_item, seen)
        elif last is not None and cat.genre[last - 1] in favourites and roll < 0.83:
            item = cat.next_in_chain(rng, last, -1 if rng.random() < 0.15 else 1, seen)
        else:  # (re)enter a (mostly favourite) genre at a popular item
            item = cat.draw(rng, cat.by_genre[genre], seen)
        if item is None:  # the genre is used up: anything not yet seen
            item = cat.draw(rng, every_item, seen)
        if item is None:
            break
        kind = int(rng.choice(4, p=(0.45, 0.38, 0.11, 0.06))) + 1
        add(item, kind, None)
    return np.array(items, dtype=np.int64), np.array(kinds, dtype=np.int64), tuple(asked)


# Data without times: a user's interactions a minute apart from this instant (2020-01-01).
UNTIMED_START_MS = 1_577_836_800_000
UNTIMED_STEP_MS = 60_000


def interaction_times(data: SequenceData) -> tuple[NDArray[np.int64], ...]:
    """Every user's interaction times (epoch ms): the data's own, or, for data without times,
    one minute apart from 2020-01-01 (a session)."""
    if data.times is not None:
        return data.times
    return tuple(
        UNTIMED_START_MS + UNTIMED_STEP_MS * np.arange(len(s), dtype=np.int64)
        for s in data.sequences
    )


def combine(primary: SequenceData, extra: SequenceData) -> SequenceData:
    """``primary`` followed by ``extra``: extra's items and users come after primary's (their
    indices shift by ``primary.n_items`` and ``primary.n_users``)."""
    offset = primary.n_items

    def per_user_types(data: SequenceData) -> tuple[NDArray[np.int64], ...]:
        if data.types is not None:
            return data.types
        return tuple(np.full(len(s), CLICK, dtype=np.int64) for s in data.sequences)

    def per_user_queries(data: SequenceData) -> tuple[tuple[str | None, ...], ...]:
        if data.queries is not None:
            return data.queries
        return tuple((None,) * len(s) for s in data.sequences)

    return SequenceData(
        times=(*interaction_times(primary), *interaction_times(extra)),
        n_items=primary.n_items + extra.n_items,
        item_tokens=(*primary.item_tokens, *extra.item_tokens[1:]),
        item_titles=(*primary.item_titles, *extra.item_titles[1:]),
        item_genres=(*primary.item_genres, *extra.item_genres[1:]),
        user_tokens=(*primary.user_tokens, *(f"extra:{u}" for u in extra.user_tokens)),
        sequences=(*primary.sequences, *(s + offset for s in extra.sequences)),
        types=(*per_user_types(primary), *per_user_types(extra)),
        queries=(*per_user_queries(primary), *per_user_queries(extra)),
    )
