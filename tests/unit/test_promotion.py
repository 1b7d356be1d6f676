"""Promotion on live evidence: the verdict from the two sides' counts."""

from __future__ import annotations

import math

from app.ops.promotion import decide
from app.ops.quality import Quality


def q(impressions: int, hits: int) -> Quality:
    return Quality(impressions, hits, impressions * 10, 0)


def test_a_clearly_better_shadow_is_promoted_with_its_evidence() -> None:
    v = decide(q(5000, 1000), q(5000, 1200), min_impressions=1000, min_gain=0.0)
    assert v.promote and math.isclose(v.difference, 0.04)
    assert v.low > 0 and v.high > v.difference > v.low
    assert "0.2400 vs serving 0.2000" in v.reason


def test_better_by_chance_is_not_enough() -> None:
    # +1 point on 300 impressions each: the interval spans zero.
    v = decide(q(300, 60), q(300, 63), min_impressions=100, min_gain=0.0)
    assert not v.promote and v.low < 0 < v.high
    assert "below the required gain" in v.reason


def test_a_negative_gain_asks_only_for_not_worse_by_more_than_that() -> None:
    same = decide(q(2000, 400), q(2000, 400), min_impressions=1000, min_gain=-0.05)
    assert same.promote and same.difference == 0.0
    worse = decide(q(2000, 400), q(2000, 200), min_impressions=1000, min_gain=-0.05)
    assert not worse.promote


def test_too_few_impressions_on_either_side_decide_nothing() -> None:
    v = decide(q(10_000, 3000), q(999, 500), min_impressions=1000, min_gain=0.0)
    assert not v.promote and "too little evidence" in v.reason and math.isnan(v.low)
