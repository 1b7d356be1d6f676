"""The replay's scoring and streaming baselines on hand-made streams with known answers."""

from __future__ import annotations

import math
import random

import pytest

from app.core.exclusions import ExclusionPolicy
from app.dev.replay.scoring import (
    COOCCURRENCE,
    POPULARITY,
    Answer,
    Interaction,
    RunningPopularity,
    gain,
    judged_events,
    live_counts,
    score_lists,
    score_replay,
    streaming_baselines,
)

G1 = 1.0 / math.log2(3)  # NDCG of a hit at rank 1


def stream(*pairs: str) -> list[Interaction]:
    """``"user:item"`` pairs in publication order; event ids e0, e1, ..."""
    out = []
    for n, pair in enumerate(pairs):
        user, item = pair.split(":")
        out.append(Interaction(f"e{n}", user, item, 1000 * n))
    return out


# r is popular; p -> q is a habit of x, y and v. Judged: e4 (x: q after p), e6 (y), e8 (v).
HABIT = stream("a:r", "b:r", "c:r", "x:p", "x:q", "y:p", "y:q", "v:p", "v:q")


def test_judged_events_pair_each_event_with_the_users_previous_one() -> None:
    events = stream("u:a", "w:z", "u:b", "v:x", "u:c", "v:y", "u:d")
    judged = [(j.previous, j.event.event_id, j.last, j.second_last) for j in judged_events(events)]
    assert judged == [
        ("e0", "e2", False, False),  # u's 2nd of 4
        ("e2", "e4", False, True),  # u's 3rd of 4: second-to-last
        ("e3", "e5", True, False),  # v's 2nd of 2: its last (its first is never judged)
        ("e4", "e6", True, False),  # u's last
    ]


def test_gain_is_ndcg_of_one_relevant_item() -> None:
    assert gain(0) == 1.0
    assert gain(1) == pytest.approx(G1)
    assert gain(9) == pytest.approx(1 / math.log2(11))


def test_score_lists_hits_ranks_cut_at_k_and_missing_lists() -> None:
    events = stream("u:a", "u:b", "u:c", "u:d", "u:e")
    lists = {
        "e0": ["b", "x"],  # e1 hit at rank 0
        "e1": ["x", "c"],  # e2 hit at rank 1
        # e2: no list -> e3 a miss, counted missing
        "e3": ["x", "y", "e"],  # e4 at rank 2, but k=2 cuts it
    }
    score = score_lists("s", judged_events(events), lists, k=2)
    assert (score.all.events, score.all.hits, score.missing) == (4, 2, 1)
    assert score.all.hr == 0.5
    assert score.all.ndcg == pytest.approx((1 + G1) / 4)
    assert (score.last.events, score.last.hits) == (1, 0)
    assert (score.second_last.events, score.second_last.hits) == (1, 0)
    # with k=3 the last event is a hit at rank 2
    assert score_lists("s", judged_events(events), lists, k=3).last.ndcg == pytest.approx(0.5)


def test_empty_slices_are_nan_not_zero() -> None:
    score = score_lists("s", judged_events(stream("u:a", "u:b")), {"e0": ["b"]})
    assert score.last.hr == 1.0
    assert score.second_last.events == 0 and math.isnan(score.second_last.hr)


def test_running_popularity_ranks_by_count_then_by_who_got_there_first() -> None:
    pop = RunningPopularity()
    for item in ["a", "b", "c", "c", "b", "d"]:
        pop.add(item)
    # b and c both have 2: c reached 2 first; a and d have 1: a first
    assert pop.top(10, exclude=set()) == ["c", "b", "a", "d"]
    assert pop.top(2, exclude={"c"}) == ["b", "a"]
    assert pop.top(0, exclude=set()) == []
    assert pop.count("c") == 2 and pop.count("zz") == 0


def test_running_popularity_matches_a_brute_force_ranking() -> None:
    rng = random.Random(3)
    pop = RunningPopularity()
    counts: dict[str, int] = {}
    reached: dict[str, int] = {}
    for t in range(2000):
        item = f"i{min(int(rng.paretovariate(1.2)), 40)}"
        pop.add(item)
        counts[item] = counts.get(item, 0) + 1
        reached[item] = t
        exclude = {f"i{rng.randrange(40)}" for _ in range(5)}
        expected = sorted(
            (i for i in counts if i not in exclude), key=lambda i: (-counts[i], reached[i])
        )[:10]
        assert pop.top(10, exclude) == expected


def test_baselines_on_a_known_stream() -> None:
    lists = streaming_baselines(HABIT, history_size=50)
    # x's p (e3): only r and p counted, p is x's own -> r; no transition out of p yet
    assert lists.popularity["e3"] == ("r",)
    assert lists.cooccurrence["e3"] == ("r",)
    # y's p (e5): r 3, p 2, q 1 -> r, q; p -> q once: q first, then filled with r
    assert lists.popularity["e5"] == ("r", "q")
    assert lists.cooccurrence["e5"] == ("q", "r")
    # v's q (e8): p and q are v's own, so r alone
    assert lists.popularity["e8"] == ("r",)


def test_score_replay_on_a_known_stream() -> None:
    answers = {
        "e3": Answer(("q", "r"), "1.0.0"),  # e4 hit at 0
        "e5": Answer(("r", "q"), "1.0.0", degraded=True),  # e6 hit at 1
        # e7 unanswered: e8 a miss
    }
    answers["e0"] = Answer(("x",), "cheap-path", degraded=True)
    scores = score_replay(HABIT, answers, history_size=50)
    live, co, pop = scores.systems
    assert live.name == "live worker (model 1.0.0)"  # degraded records: not the model's
    assert scores.counts.model_versions == {"1.0.0": 2, "cheap-path": 1}
    assert (live.all.events, live.all.hits, live.missing) == (3, 2, 1)
    assert live.all.ndcg == pytest.approx((1 + G1) / 3)
    assert co.name == COOCCURRENCE and pop.name == POPULARITY
    # e4: both miss (r only); e6 and e8: co-occurrence has q first, popularity second
    assert co.all.hits == 2 and co.all.ndcg == pytest.approx(2 / 3)
    assert pop.all.hits == 2 and pop.all.ndcg == pytest.approx(2 * G1 / 3)
    assert co.last.events == 3 and co.second_last.events == 0
    assert scores.counts.degraded == 2 and scores.counts.missing == 6


def test_baselines_never_look_ahead() -> None:
    """A list answering event n is the same whether the stream ends at n or goes on."""
    rng = random.Random(7)
    events = [
        Interaction(f"e{n}", f"u{rng.randrange(6)}", f"i{rng.randrange(12)}") for n in range(80)
    ]
    full = streaming_baselines(events, history_size=5)
    for end in range(1, len(events), 7):
        prefix = streaming_baselines(events[:end], history_size=5)
        for event in events[:end]:
            assert prefix.cooccurrence[event.event_id] == full.cooccurrence[event.event_id]
            assert prefix.popularity[event.event_id] == full.popularity[event.event_id]


def test_baselines_exclude_the_remembered_seen_items_only() -> None:
    # u saw a, then b, c; a is the most popular. With 2 seen items kept, a is no longer seen;
    # the kept history's length does not matter (the state remembers seen items beyond it).
    events = stream("w:a", "z:a", "u:a", "u:b", "u:c")
    short = streaming_baselines(events, history_size=50, seen_size=2)
    long = streaming_baselines(events, history_size=2)
    assert short.popularity["e4"] == ("a",)
    assert long.popularity["e4"] == ()
    assert "a" in short.cooccurrence["e4"] and "a" not in long.cooccurrence["e4"]
    # purchased-only policy: only the event's own item is left out
    purchased = streaming_baselines(events, history_size=50, policy=ExclusionPolicy.PURCHASED)
    assert purchased.popularity["e4"] == ("a", "b")


def test_cooccurrence_weighs_the_last_three_items() -> None:
    # transitions: a->x (w), b->y twice (w, z); u then clicks b, a: a is newest (1), b (0.5)
    events = stream("w:a", "w:x", "w:b", "w:y", "z:b", "z:y", "u:b", "u:a")
    lists = streaming_baselines(events, history_size=50)
    # x: 1 * 1 (after a); y: 0.5 * 2 (after b) = 1: a tie, broken by id
    assert lists.cooccurrence["e7"][:2] == ("x", "y")


def test_live_counts() -> None:
    events = stream("u:a", "u:b", "u:c", "u:d")
    answers = {
        "e0": Answer(("x",), "1.0.0"),
        "e1": Answer(("x",), "1.0.0", degraded=True),
        "e2": Answer(("x",), "1.1.0", coalesced_into="e3"),
        "other": Answer(("x",), "9.9.9"),  # not a published event: ignored
    }
    counts = live_counts(events, answers, dead={"e3", "e0"})
    assert (counts.answered, counts.dead_letters, counts.missing) == (3, 1, 0)
    assert (counts.degraded, counts.coalesced) == (1, 1)
    assert counts.model_versions == {"1.0.0": 2, "1.1.0": 1}
    counts = live_counts(events, {}, dead={"e3"})
    assert (counts.answered, counts.dead_letters, counts.missing) == (0, 1, 3)
