"""Online quality of a replay: each event judged against the list emitted for the user's previous
one, for the live worker and for two streaming baselines computed without look-ahead.

Pure: the published events and what the worker answered come in, scores come out. The replay's
I/O (``app.dev.replay.run``) collects them; the unit tests feed hand-made streams.

How an event is judged: a user's events e_0, e_1, ... (in the order they were published, which
is their time order); e_i (i >= 1) is a hit when its item is in the top ``k`` of the list a
system emitted in answer to e_{i-1}, at 0-based rank r, with NDCG@k = 1 / log2(r + 2) (one
relevant item, so the ideal DCG is 1). No list for e_{i-1} (no record, or the event was
dead-lettered) counts as a miss, and as ``missing``. Scores are reported over every judged
event, each user's last event and each user's second-to-last event.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from app.core.cooccurrence import Cooccurrence
from app.core.exclusions import ExclusionPolicy, excluded
from app.core.state import StateLimits

K = 10

LIVE = "live worker"
COOCCURRENCE = "streaming co-occurrence"
POPULARITY = "running popularity"

# The distinct items a state remembers as seen (SEEN_SIZE), by default.
DEFAULT_SEEN = StateLimits().max_seen


@dataclass(frozen=True, slots=True)
class Interaction:
    """One published event: a click of ``user`` on ``item`` at ``time_ms`` (event time)."""

    event_id: str
    user: str
    item: str
    time_ms: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    """The worker's recommendation record for one event, reduced to what scoring needs."""

    items: tuple[str, ...]
    model_version: str = ""
    degraded: bool = False
    coalesced_into: str | None = None


@dataclass(frozen=True, slots=True)
class Judged:
    """Event ``event`` judged against the list for ``previous`` (the same user's event before)."""

    previous: str
    event: Interaction
    last: bool  # the user's last event
    second_last: bool  # the user's second-to-last event


def judged_events(events: Iterable[Interaction]) -> list[Judged]:
    """Every event that has a predecessor of the same user, in publication order.

    >>> evs = [Interaction("a", "u", "x"), Interaction("b", "v", "y"), Interaction("c", "u", "z")]
    >>> [(j.previous, j.event.event_id, j.last, j.second_last) for j in judged_events(evs)]
    [('a', 'c', True, False)]
    """
    by_user: dict[str, list[Interaction]] = {}
    order: list[tuple[str, int]] = []
    for event in events:
        mine = by_user.setdefault(event.user, [])
        mine.append(event)
        order.append((event.user, len(mine) - 1))
    out = []
    for user, i in order:
        if i == 0:
            continue
        mine = by_user[user]
        n = len(mine)
        out.append(Judged(mine[i - 1].event_id, mine[i], i == n - 1, i == n - 2))
    return out


def gain(rank: int) -> float:
    """NDCG@k of a hit at 0-based ``rank`` (one relevant item).

    >>> gain(0), round(gain(1), 4)
    (1.0, 0.6309)
    """
    return 1.0 / math.log2(rank + 2)


@dataclass(slots=True)
class SliceScore:
    """Hits and summed NDCG over some judged events."""

    events: int = 0
    hits: int = 0
    ndcg_sum: float = 0.0

    def add(self, rank: int | None) -> None:
        self.events += 1
        if rank is not None:
            self.hits += 1
            self.ndcg_sum += gain(rank)

    @property
    def hr(self) -> float:
        return self.hits / self.events if self.events else math.nan

    @property
    def ndcg(self) -> float:
        return self.ndcg_sum / self.events if self.events else math.nan

    def as_dict(self) -> dict[str, float | int]:
        return {"events": self.events, "hits": self.hits, "hr": self.hr, "ndcg": self.ndcg}


@dataclass(slots=True)
class SystemScore:
    """One system's scores: every judged event, users' last and second-to-last events."""

    name: str
    all: SliceScore = field(default_factory=SliceScore)
    last: SliceScore = field(default_factory=SliceScore)
    second_last: SliceScore = field(default_factory=SliceScore)
    missing: int = 0  # judged events with no list for the previous event (counted as misses)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "all": self.all.as_dict(),
            "last": self.last.as_dict(),
            "second_last": self.second_last.as_dict(),
            "missing": self.missing,
        }


def rank_of(item: str, ranked: Sequence[str], k: int = K) -> int | None:
    """0-based position of ``item`` in the first ``k`` of ``ranked``, or None.

    >>> rank_of("b", ["a", "b", "c"]), rank_of("c", ["a", "b", "c"], k=2)
    (1, None)
    """
    for position, candidate in enumerate(ranked[:k]):
        if candidate == item:
            return position
    return None


def score_lists(
    name: str,
    judged: Iterable[Judged],
    lists: Mapping[str, Sequence[str]],
    k: int = K,
) -> SystemScore:
    """Score a system whose list in answer to event id ``e`` is ``lists[e]`` (absent: none)."""
    score = SystemScore(name)
    for j in judged:
        ranked = lists.get(j.previous)
        if ranked is None:
            score.missing += 1
        rank = rank_of(j.event.item, ranked, k) if ranked is not None else None
        score.all.add(rank)
        if j.last:
            score.last.add(rank)
        if j.second_last:
            score.second_last.add(rank)
    return score


class RunningPopularity:
    """Interaction counts so far, ranked most first; among equal counts, the item that reached
    the count first ranks first. Adding is O(log distinct counts); ranking walks only as far
    as the list needs.

    >>> pop = RunningPopularity()
    >>> for item in "abcbcc":
    ...     pop.add(item)
    >>> pop.top(3, exclude=set()), pop.top(3, exclude={"c"})
    (['c', 'b', 'a'], ['b', 'a'])
    """

    __slots__ = ("_buckets", "_counts", "_levels")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        # count -> the items with that count, in the order they reached it (dicts keep order)
        self._buckets: dict[int, dict[str, None]] = {}
        self._levels: list[int] = []  # the counts that have items, ascending

    def count(self, item: str) -> int:
        return self._counts.get(item, 0)

    def add(self, item: str) -> None:
        old = self._counts.get(item, 0)
        if old:
            left = self._buckets[old]
            del left[item]
            if not left:
                del self._buckets[old]
                del self._levels[bisect.bisect_left(self._levels, old)]
        new = old + 1
        self._counts[item] = new
        joined = self._buckets.get(new)
        if joined is None:
            joined = self._buckets[new] = {}
            bisect.insort(self._levels, new)
        joined[item] = None

    def top(self, k: int, exclude: Collection[str]) -> list[str]:
        """Up to ``k`` items, most counted first, none of ``exclude``."""
        out: list[str] = []
        if k <= 0:
            return out
        for level in reversed(self._levels):
            for item in self._buckets[level]:
                if item not in exclude:
                    out.append(item)
                    if len(out) == k:
                        return out
        return out


@dataclass(frozen=True, slots=True)
class BaselineLists:
    """Each baseline's list in answer to every event, by event id."""

    cooccurrence: dict[str, tuple[str, ...]]
    popularity: dict[str, tuple[str, ...]]


def streaming_baselines(
    events: Iterable[Interaction],
    *,
    history_size: int,
    seen_size: int = DEFAULT_SEEN,
    k: int = K,
    policy: ExclusionPolicy = ExclusionPolicy.SEEN,
) -> BaselineLists:
    """The baselines' answers, computed as a stream: events in publication order, each applied
    (counts, transitions, the user's kept history) and then answered, so a list depends only on
    what was published up to its event, never on what follows.

    - running popularity: the ``k`` most counted items so far (:class:`RunningPopularity`);
    - streaming co-occurrence: :class:`app.core.cooccurrence.Cooccurrence` over each user's
      consecutive items, scored from the user's last three (weights 1, 0.5, 0.25), topped up
      to ``k`` from running popularity.

    Both leave out what the worker leaves out (``app.core.exclusions.excluded`` with the user's
    seen items, their last ``seen_size`` distinct ones as the state remembers them, and the
    event's own item; every event is a click, so nothing is purchased): the comparison is like
    for like.
    """
    co = Cooccurrence()
    popular = RunningPopularity()
    histories: dict[str, deque[str]] = {}
    seens: dict[str, dict[str, None]] = {}
    co_lists: dict[str, tuple[str, ...]] = {}
    pop_lists: dict[str, tuple[str, ...]] = {}
    for event in events:
        history = histories.get(event.user)
        if history is None:
            history = histories[event.user] = deque(maxlen=history_size)
        elif history:
            co.add(history[-1], event.item)
        history.append(event.item)
        seen = seens.setdefault(event.user, {})
        if event.item not in seen:  # app.core.state.apply_event's rule
            seen[event.item] = None
            if len(seen) > seen_size:
                del seen[next(iter(seen))]
        popular.add(event.item)
        skip = excluded(seen, (), event.item, search=False, policy=policy)
        by_count = popular.top(k, skip)
        pop_lists[event.event_id] = tuple(by_count)
        recent = list(history)[-3:]
        chosen = co.top(recent, k, skip)
        if len(chosen) < k:
            taken = set(chosen)
            for item in popular.top(k + len(chosen), skip):
                if item not in taken:
                    chosen.append(item)
                    if len(chosen) == k:
                        break
        co_lists[event.event_id] = tuple(chosen)
    return BaselineLists(co_lists, pop_lists)


@dataclass(frozen=True, slots=True)
class LiveCounts:
    """What came back from the worker for the published events."""

    events: int
    answered: int  # events with a recommendation record
    dead_letters: int  # events that were dead-lettered instead
    missing: int  # events with neither
    degraded: int  # records from the cheap path
    coalesced: int  # records carrying a later event's ranking
    model_versions: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return {
            "events": self.events,
            "answered": self.answered,
            "dead_letters": self.dead_letters,
            "missing": self.missing,
            "degraded": self.degraded,
            "coalesced": self.coalesced,
            "model_versions": dict(self.model_versions),
        }


def live_counts(
    events: Sequence[Interaction], answers: Mapping[str, Answer], dead: Collection[str]
) -> LiveCounts:
    """Counts over the published events (records for other event ids are ignored)."""
    answered = degraded = coalesced = dead_letters = missing = 0
    versions: Counter[str] = Counter()
    for event in events:
        answer = answers.get(event.event_id)
        if answer is None:
            if event.event_id in dead:
                dead_letters += 1
            else:
                missing += 1
            continue
        answered += 1
        degraded += answer.degraded
        coalesced += answer.coalesced_into is not None
        versions[answer.model_version] += 1
    return LiveCounts(
        events=len(events),
        answered=answered,
        dead_letters=dead_letters,
        missing=missing,
        degraded=degraded,
        coalesced=coalesced,
        model_versions=dict(versions.most_common()),
    )


def live_label(versions: Mapping[str, int]) -> str:
    """The live row's name, with the model version(s) that answered.

    >>> live_label({"1.0.0": 5}), live_label({"1.1.0": 3, "1.0.0": 1}), live_label({})
    ('live worker (model 1.0.0)', 'live worker (models 1.1.0, 1.0.0)', 'live worker')
    """
    if not versions:
        return LIVE
    names = [v for v, _n in sorted(versions.items(), key=lambda vn: -vn[1])]
    return f"{LIVE} (model{'s' if len(names) > 1 else ''} {', '.join(names)})"


@dataclass(frozen=True, slots=True)
class ReplayScores:
    """Every system's scores and the live counts; ``systems`` is live, co-occurrence, popularity."""

    systems: tuple[SystemScore, ...]
    counts: LiveCounts
    k: int

    def as_dict(self) -> dict[str, object]:
        return {
            "k": self.k,
            "systems": [s.as_dict() for s in self.systems],
            "counts": self.counts.as_dict(),
        }


def score_replay(
    events: Sequence[Interaction],
    answers: Mapping[str, Answer],
    dead: Collection[str] = (),
    *,
    history_size: int,
    seen_size: int = DEFAULT_SEEN,
    k: int = K,
    policy: ExclusionPolicy = ExclusionPolicy.SEEN,
) -> ReplayScores:
    """The live worker's answers and the two streaming baselines, scored on the same events."""
    judged = judged_events(events)
    counts = live_counts(events, answers, dead)
    # The row is named after the models that ranked; degraded records name the cheap path.
    ranked = Counter(
        answers[e.event_id].model_version
        for e in events
        if e.event_id in answers and not answers[e.event_id].degraded
    )
    live = score_lists(
        live_label(ranked),
        judged,
        {event_id: answer.items for event_id, answer in answers.items()},
        k,
    )
    baselines = streaming_baselines(
        events, history_size=history_size, seen_size=seen_size, k=k, policy=policy
    )
    return ReplayScores(
        systems=(
            live,
            score_lists(COOCCURRENCE, judged, baselines.cooccurrence, k),
            score_lists(POPULARITY, judged, baselines.popularity, k),
        ),
        counts=counts,
        k=k,
    )
