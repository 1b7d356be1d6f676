"""One input record in, the new user state and the records to emit out; no I/O here."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.catalog import Catalog
from app.codec import (
    DecodeError,
    decode_event,
    encode_dead_letter,
    encode_feedback,
    encode_recommendation,
)
from app.ranking import RankingParams, rank
from app.records import (
    NEXT_ITEM_TRIGGERS,
    DeadLetterError,
    Event,
    EventType,
    Recommendation,
    Source,
)
from app.scoring.base import Scorer
from app.scoring.package import ModelSpec
from app.settings import Settings
from app.state import (
    LastRecommendation,
    StateLimits,
    UserState,
    apply_event,
    decode_state,
    encode_state,
    with_recommendation,
)

log = logging.getLogger(__name__)

RECOMMENDATIONS = "recommendations"
FEEDBACK = "feedback"
DEAD_LETTERS = "dead_letters"


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Output:
    """A record to produce: ``role`` names the topic (recommendations, feedback, dead_letters)."""

    role: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class Outcome:
    """What handling one record decided. ``status``: processed, duplicate or dead_letter."""

    status: str
    outputs: list[Output] = field(default_factory=list)
    user_id: str | None = None
    state: bytes | None = None
    event: Event | None = None
    recommendation: Recommendation | None = None
    error: DeadLetterError | None = None
    state_reset: bool = False
    ranking_s: float = 0.0


class Processor:
    """Applies events to user state and ranks, given the catalog and a scorer."""

    def __init__(
        self,
        catalog: Catalog,
        scorer: Scorer,
        spec: ModelSpec,
        settings: Settings,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.catalog = catalog
        self.scorer = scorer
        self.spec = spec
        self.settings = settings
        self.clock = clock
        self.limits = StateLimits(
            history_size=settings.history_size,
            recent_event_ids=settings.recent_event_ids,
            max_query_terms=settings.max_query_terms,
            max_purchased=settings.max_purchased,
            max_affinities=settings.max_affinities,
            affinity_half_life_s=settings.affinity_half_life_s,
        )
        self.params = RankingParams(
            top_k=settings.top_k,
            candidates=settings.candidates,
            affinity_half_life_s=settings.affinity_half_life_s,
        )

    def decode(self, value: bytes | None, source: Source) -> Event | Outcome:
        """The event, or a dead-letter outcome saying why the record is unusable."""
        raw = value if value is not None else b""
        try:
            if value is None:
                raise DecodeError(DeadLetterError.MALFORMED_JSON, "record has no value (tombstone)")
            event = decode_event(raw, max_bytes=self.settings.max_event_bytes)
            if source.key != event.user_id.encode("utf-8"):
                raise DecodeError(
                    DeadLetterError.KEY_MISMATCH,
                    f"record key {source.key!r} is not the user_id {event.user_id!r}; events must "
                    "be keyed by user_id so that a user's state lives on one partition",
                )
        except DecodeError as exc:
            return self.dead_letter(exc.error, exc.reason, source, raw)
        return event

    def dead_letter(
        self, error: DeadLetterError, reason: str, source: Source, raw: bytes
    ) -> Outcome:
        value = encode_dead_letter(error, reason, source, raw, received_time_ms=self.clock())
        return Outcome(
            status="dead_letter", outputs=[Output(DEAD_LETTERS, source.key, value)], error=error
        )

    def handle(
        self, value: bytes | None, source: Source, lookup: Callable[[bytes], bytes | None]
    ) -> Outcome:
        """Decode, update state, rank; any failure becomes a dead letter, never an exception.

        ``lookup`` reads a user's stored state by key (the UTF-8 user id).
        """
        decoded = self.decode(value, source)
        if isinstance(decoded, Outcome):
            return decoded
        try:
            return self.apply(decoded, lookup(decoded.user_id.encode("utf-8")))
        except Exception as exc:
            log.exception("processing event %s failed", decoded.event_id)
            return self.dead_letter(
                DeadLetterError.PROCESSING_ERROR,
                f"{type(exc).__name__}: {exc}",
                source,
                value or b"",
            )

    def apply(self, event: Event, state_raw: bytes | None) -> Outcome:
        reset = False
        previous: UserState | None = None
        if state_raw is not None:
            try:
                previous = decode_state(state_raw)
            except (ValueError, KeyError, TypeError):
                # A state we cannot read would block this user forever; start them afresh.
                log.warning("unreadable state for user %s; starting afresh", event.user_id)
                reset = True
        duplicate = previous is not None and previous.has_applied(event.event_id)
        index = self.catalog.index
        item = index.item(event.item_id) if event.item_id is not None else None
        state = apply_event(previous, event, item, self.limits)

        key = event.user_id.encode("utf-8")
        outputs: list[Output] = []
        recommendation: Recommendation | None = None
        ranking_s = 0.0
        if event.type is EventType.SEARCH or event.type in NEXT_ITEM_TRIGGERS:
            started = time.perf_counter()
            (recommendation,) = rank(index, self.scorer, self.spec, [(state, event)], self.params)
            ranking_s = time.perf_counter() - started
            state = with_recommendation(
                state,
                LastRecommendation(
                    event_id=recommendation.event_id,
                    model_version=recommendation.model_version,
                    item_ids=tuple(i.item_id for i in recommendation.items),
                ),
            )
        now = self.clock()
        if recommendation is not None:
            outputs.append(
                Output(
                    RECOMMENDATIONS, key, encode_recommendation(recommendation, emit_time_ms=now)
                )
            )
        last = previous.last_recommendation if previous is not None else None
        outputs.append(
            Output(
                FEEDBACK,
                key,
                encode_feedback(
                    event,
                    emit_time_ms=now,
                    duplicate=duplicate,
                    last_recommendation=None
                    if last is None
                    else (last.event_id, last.model_version, last.item_ids),
                ),
            )
        )
        return Outcome(
            status="duplicate" if duplicate else "processed",
            outputs=outputs,
            user_id=event.user_id,
            state=encode_state(state),
            event=event,
            recommendation=recommendation,
            state_reset=reset,
            ranking_s=ranking_s,
        )
