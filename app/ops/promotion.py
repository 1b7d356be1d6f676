"""Promotion on live evidence: the shadow model serves only when its would-be lists did at least
as well as the served ones, on enough impressions, in the same window of live traffic.

:func:`decide` is pure (two :class:`~app.ops.quality.Quality` counts in, a verdict out);
:func:`announced` reads what the model-updates topic says serves and shadows; the ``model
promote`` command puts them together with the quality report (app.ops.quality_report) and, when
the evidence holds, announces the shadow's package as serving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from app.core.codec import SHADOW, DecodeError, ModelUpdate, decode_model_update, model_update_key
from app.core.settings import Settings
from app.kafka.topic_reader import read_topic
from app.ops.quality import Quality

# The two-sided 95% normal interval of a difference of two proportions.
Z_95 = 1.959964


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether to promote, why, and the evidence: each side's counts and the difference of
    their hit rates (shadow minus serving) with its 95% interval."""

    promote: bool
    reason: str
    serving: Quality
    shadow: Quality
    difference: float
    low: float
    high: float


def decide(serving: Quality, shadow: Quality, *, min_impressions: int, min_gain: float) -> Verdict:
    """Promote when both sides closed at least ``min_impressions`` impressions and the lower end
    of the 95% interval of (shadow hit rate - serving hit rate) is at least ``min_gain``
    (0: "better, beyond chance"; a negative value: "not worse by more than that").

    >>> served, better = Quality(4000, 800, 0, 0), Quality(4000, 960, 0, 0)
    >>> v = decide(served, better, min_impressions=1000, min_gain=0.0)
    >>> v.promote, round(v.difference, 3), round(v.low, 3)
    (True, 0.04, 0.022)
    >>> decide(served, Quality(4000, 820, 0, 0), min_impressions=1000, min_gain=0.0).promote
    False
    >>> decide(Quality(50, 10, 0, 0), better, min_impressions=1000, min_gain=0.0).reason
    'too little evidence: serving closed 50 impressions, shadow 4000 (need 1000 each)'
    """
    nan = math.nan
    if min(serving.impressions, shadow.impressions) < min_impressions:
        return Verdict(
            False,
            f"too little evidence: serving closed {serving.impressions} impressions, shadow "
            f"{shadow.impressions} (need {min_impressions} each)",
            serving,
            shadow,
            nan,
            nan,
            nan,
        )
    p1, p2 = serving.hit_rate, shadow.hit_rate
    difference = p2 - p1
    se = math.sqrt(p1 * (1 - p1) / serving.impressions + p2 * (1 - p2) / shadow.impressions)
    low, high = difference - Z_95 * se, difference + Z_95 * se
    evidence = (
        f"hit rate shadow {p2:.4f} vs serving {p1:.4f}: {difference:+.4f} "
        f"(95% interval {low:+.4f} to {high:+.4f}; {shadow.impressions} and "
        f"{serving.impressions} impressions)"
    )
    if low >= min_gain:
        return Verdict(True, evidence, serving, shadow, difference, low, high)
    return Verdict(
        False,
        f"{evidence}: its lower end is below the required gain {min_gain:+.4f}",
        serving,
        shadow,
        difference,
        low,
        high,
    )


@dataclass(frozen=True, slots=True)
class Announced:
    """The newest announcements of a model on the model-updates topic (None: none, or
    retired)."""

    serving: ModelUpdate | None
    shadow: ModelUpdate | None


def announced(settings: Settings, name: str, timeout_s: float = 30.0) -> Announced:
    """Read the compacted model-updates topic: the newest serving and shadow announcement of
    ``name`` (a tombstone on the shadow key: no shadow)."""
    serving_key, shadow_key = model_update_key(name), model_update_key(name, SHADOW)
    latest: dict[bytes, ModelUpdate | None] = {}
    for msg in read_topic(settings, settings.topic_model_updates, timeout_s=timeout_s):
        key = msg.key() or b""
        if key not in (serving_key, shadow_key):
            continue
        value = msg.value()
        if value is None:
            latest[key] = None
            continue
        try:
            latest[key] = decode_model_update(value)
        except DecodeError:
            continue  # the workers dead-letter it; it announces nothing
    return Announced(latest.get(serving_key), latest.get(shadow_key))
