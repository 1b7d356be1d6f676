"""A micro-batch of input records in, the new user states and the records to emit out; no I/O."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.core import exclusions
from app.core.attribution import (
    Impression,
    Positive,
    next_due,
    on_event,
    on_shown,
    on_sweep,
    replayed,
)
from app.core.catalog import Catalog, CatalogIndex
from app.core.codec import (
    DecodeError,
    dead_letter_key,
    decode_event,
    encode_dead_letter,
    encode_feedback,
    encode_negative,
    encode_positive,
    encode_recommendation,
    encode_shadow,
)
from app.core.cooccurrence import Cooccurrence
from app.core.log_budget import (
    DEAD_LETTER_LOG_LINES,
    DEAD_LETTER_LOG_WINDOW_S,
    LogBudget,
    claimed_event_id,
    truncated,
)
from app.core.ranking import Hints, Ranker, RankingParams
from app.core.records import (
    NEXT_ITEM_TRIGGERS,
    RULE_OUT_OF_ORDER,
    RULE_UNKNOWN_ITEM,
    RULE_WITHDRAWN_ITEM,
    DeadLetterError,
    Event,
    EventType,
    Recommendation,
    Source,
)
from app.core.retrieval import excluded_ids
from app.core.scoring.base import Scorer
from app.core.scoring.package import ModelSpec
from app.core.settings import Settings
from app.core.shadow import ShadowBook, ShadowClosed
from app.core.state import (
    LastRecommendation,
    StateLimits,
    UserState,
    apply_event,
    decode_state,
    encode_state,
)
from app.core.state_cache import DecodedStates

log = logging.getLogger(__name__)

RECOMMENDATIONS = "recommendations"
ATTRIBUTION = "attribution"
# Events handled by a documented rule rather than dead-lettered; counted by rule.
FEEDBACK = "feedback"
DEAD_LETTERS = "dead_letters"
# Co-occurrence: successors kept per item, and candidates taken per event.
RELATED_KEPT = 100
RELATED_CANDIDATES = 50


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def log_ids(source: Source, event: Event | None = None) -> dict[str, Any]:
    """A record's ids for a log line's ``extra``: where it was read and, once decoded, whose
    event it is (never the payload)."""
    ids: dict[str, Any] = {
        "topic": source.topic,
        "partition": source.partition,
        "offset": source.offset,
    }
    if event is not None:
        ids["event_id"] = event.event_id
        ids["user_id"] = event.user_id
    return ids


@dataclass(frozen=True, slots=True)
class Output:
    """A record to produce: ``role`` names the topic (recommendations, feedback, dead_letters)."""

    role: str
    key: bytes | None
    value: bytes | None  # None: a tombstone

    def document(self) -> Any:
        """The record's JSON document (a tombstone has none)."""
        if self.value is None:
            raise ValueError(f"a tombstone on {self.role} has no document")
        return orjson.loads(self.value)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What handling one record decided. ``status``: processed, duplicate, forgotten or
    dead_letter.

    ``state`` is set on the last record of each user in a batch: the one table write for that
    user (a user's earlier records in the batch are folded into it). ``delete`` is set there
    instead when the batch ends with the user forgotten: the table entry is deleted."""

    status: str
    outputs: list[Output] = field(default_factory=list)
    user_id: str | None = None
    state: bytes | None = None
    event: Event | None = None
    recommendation: Recommendation | None = None
    error: DeadLetterError | None = None
    state_reset: bool = False
    delete: bool = False
    rules: tuple[str, ...] = ()
    # Attribution, for the live quality metrics: positives and impressions closed just now
    # (what a replay re-emits is not counted again).
    positives: tuple[Positive, ...] = ()
    closed: tuple[Impression, ...] = ()
    # With ``state``: when the user's first open impression is due (record time), for the
    # sweeper's index; None when none is open.
    next_due: int | None = None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Outcomes in record order, plus what the batch cost: events ranked by the model (one
    call); recommendation records that carry a cheap-path (degraded) ranking and records that
    carry a later event's ranking (coalesced), counted per record a user receives; and the
    ranking time."""

    outcomes: list[Outcome]
    ranked: int = 0
    degraded: int = 0
    coalesced: int = 0
    ranking_s: float = 0.0
    oldest_age_ms: int = 0
    # The shadow model's share of the batch, for :meth:`Processor.shadow_batch` once the
    # serving outputs are on their way (None: no shadow).
    shadow: ShadowWork | None = None


@dataclass(slots=True)
class _Step:
    """A decoded event applied to its user's state, waiting for its recommendation."""

    position: int
    event: Event
    source: Source
    raw: bytes
    state: UserState | None  # None after forget_user
    duplicate: bool
    trigger: bool
    rules: tuple[str, ...] = ()
    recommendation: Recommendation | None = None
    coalesced_into: _Step | None = None
    error: str | None = None
    # Items that followed the user's recent items in the stream so far (at this record, so
    # batching cannot change them): candidates of their own, and the cheap path's answer.
    related: tuple[str, ...] = ()
    # What the user must not be shown after this event (app.core.exclusions), worked out once.
    excluded: frozenset[str] | None = None
    # The shadow model's list for this event (never served; app.core.shadow).
    shadow: Recommendation | None = None


def _applied(step: _Step) -> UserState:
    """The state a triggering step ranks from (only forget_user steps have none; they never
    trigger)."""
    if step.state is None:
        raise ValueError(f"event {step.event.event_id} has no state to rank from")
    return step.state


@dataclass(frozen=True, slots=True)
class Shadow:
    """A shadow model: its ranker and its impressions, replaced together (one reference)."""

    ranker: Ranker
    book: ShadowBook

    @property
    def version(self) -> str:
        return self.ranker.spec.version


@dataclass(frozen=True, slots=True)
class ShadowWork:
    """A batch's steps as the shadow needs them: all, in record order (each can close or credit
    a shadow impression), and the ones it should rank (``late``: none, the worker is behind)."""

    shadow: Shadow
    index: CatalogIndex
    steps: list[_Step]
    to_rank: list[_Step]
    late: bool


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """What the shadow did with a batch (or a sweep): the shadow impressions closed and their
    attribution records; events it ranked, events it could not (its item vectors for this
    catalog not built yet, the worker behind, or its model failed), and the time it took."""

    outputs: list[Output]
    closed: tuple[ShadowClosed, ...]
    ranked: int = 0
    skipped: int = 0
    seconds: float = 0.0


def _shown(rec: Recommendation, step: _Step, due_ms: int) -> Impression:
    """The impression a list opens (served, or a shadow's would-be list: one definition, so the
    two are attributed alike), shown at its event's time, due at ``due_ms`` (record time)."""
    return Impression(
        request_id=rec.event_id,
        kind=rec.kind,
        model_version=rec.model_version,
        items=tuple(i.item_id for i in rec.items),
        shown_ms=step.event.event_time_ms,
        due_ms=due_ms,
        source=(step.source.partition, step.source.offset),
    )


@dataclass(slots=True)
class _User:
    """A user's state while a batch is processed: read once, written once."""

    state: UserState | None
    last: LastRecommendation | None
    reset: bool
    last_position: int = -1
    forgotten: bool = False
    open: tuple[Impression, ...] = ()
    closed: tuple[Impression, ...] = ()


class Processor:
    """Applies events to user state and ranks them, a micro-batch at a time.

    Per record, in order: decode, deduplicate, apply to the user's state. Per batch: rank every
    triggering event in one model call (with ``coalesce_users``, only a user's last search and
    last next-item trigger; their earlier ones share that ranking), or by the cheap path when
    the record waited longer than ``deadline_ms``. Then the records
    to emit, in input order, and one state write per user.
    """

    def __init__(
        self,
        catalog: Catalog,
        scorer: Scorer,
        spec: ModelSpec,
        settings: Settings,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.catalog = catalog
        self.spec = spec
        self.settings = settings
        self.clock = clock
        self.limits = StateLimits(
            history_size=settings.history_size,
            recent_event_ids=settings.recent_event_ids,
            max_query_terms=settings.max_query_terms,
            max_purchased=settings.max_purchased,
            max_seen=settings.seen_size,
            max_affinities=settings.max_affinities,
            affinity_half_life_s=settings.affinity_half_life_s,
        )
        self.params = RankingParams(
            top_k=settings.top_k,
            candidates=settings.candidates,
            affinity_half_life_s=settings.affinity_half_life_s,
            exclusion=exclusions.ExclusionPolicy(settings.exclude),
        )
        self.ranker = Ranker(scorer, spec, self.params, query_cache_size=settings.query_cache_size)
        # Item-to-item transitions of the users this worker serves, learned from the stream
        # (in memory: a restarted worker learns them again).
        self.cooccurrence = Cooccurrence(max_neighbours=RELATED_KEPT)
        # Rankers by model version; the catalog index names the encoder its vectors came from,
        # and a batch ranks with that model (hot reload switches when the index does).
        self._rankers: dict[str, Ranker] = {spec.version: self.ranker}
        self._dead_letter_logs = LogBudget(DEAD_LETTER_LOG_LINES, DEAD_LETTER_LOG_WINDOW_S)
        self._shadow_logs = LogBudget(DEAD_LETTER_LOG_LINES, DEAD_LETTER_LOG_WINDOW_S)
        # Decoded states of the users met lately, reused while the table holds the same bytes.
        self.states = DecodedStates(settings.state_cache_users)
        # A candidate model scored beside the serving one and measured live (set_shadow).
        self.shadow: Shadow | None = None

    def set_shadow(self, spec: ModelSpec, scorer: Scorer) -> None:
        """Score every micro-batch with this model too, from the first batch whose catalog
        index carries its item vectors (``index.shadow``, Catalog.set_shadow); its lists are
        never served, only attributed (app.core.shadow). Replaces any earlier shadow, whose
        open impressions are dropped uncounted. Thread-safe (one reference swap)."""
        settings = self.settings
        book = ShadowBook(
            window_ms=int(settings.attribution_window_s * 1000),
            open_limit=settings.attribution_open,
            max_users=settings.shadow_max_users,
        )
        ranker = Ranker(scorer, spec, self.params, query_cache_size=settings.query_cache_size)
        self.shadow = Shadow(ranker, book)

    def clear_shadow(self) -> None:
        """Stop scoring with the shadow (retired, or promoted to serving)."""
        self.shadow = None

    def add_model(self, spec: ModelSpec, scorer: Scorer) -> None:
        """Make another model ready to rank; it is used from the first batch whose catalog
        index carries its encoder's item vectors (Catalog.set_vectorizer). Thread-safe: the
        table of rankers is replaced, never changed in place."""
        ranker = Ranker(scorer, spec, self.params, query_cache_size=self.settings.query_cache_size)
        self._rankers = {**self._rankers, spec.version: ranker}

    def _ranker_for(self, index: CatalogIndex) -> Ranker:
        ranker = self._rankers.get(index.encoder_tag)
        if ranker is None or ranker is self.ranker:
            return self.ranker  # (an untagged index: hashed vectors, in tests)
        log.info(
            "ranking with model %s from now on (was %s)",
            ranker.spec.version,
            self.spec.version,
            extra={"model_version": ranker.spec.version},
        )
        rankers = dict(self._rankers)
        rankers.pop(self.spec.version, None)
        self._rankers = rankers
        self.ranker, self.spec = ranker, ranker.spec
        return ranker

    def decode(self, value: bytes | None, source: Source) -> Event | Outcome:
        """The event, or a dead-letter outcome saying why the record is unusable."""
        raw = value if value is not None else b""
        event: Event | None = None  # for the log line, when only a later check fails
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
            self._check_time(event, source)
        except DecodeError as exc:
            return self.dead_letter(exc.error, exc.reason, source, raw, event)
        except Exception as exc:
            # A decoder bug must cost one record, not the worker.
            log.exception(
                "decoding a record at offset %d failed", source.offset, extra=log_ids(source)
            )
            return self.dead_letter(
                DeadLetterError.PROCESSING_ERROR, f"{type(exc).__name__}: {exc}", source, raw
            )
        return event

    def _check_time(self, event: Event, source: Source) -> None:
        """Event times far from when the record was written are dead-lettered: a year-old or
        next-year event would pollute the user's history and freeze or skip affinity decay.

        The reference is the record's Kafka timestamp, not the clock, so a replay decides the
        same way however late it runs."""
        settings = self.settings
        reference = source.timestamp_ms if source.timestamp_ms else self.clock()
        ahead_s = (event.event_time_ms - reference) / 1000.0
        if settings.max_event_future_s and ahead_s > settings.max_event_future_s:
            raise DecodeError(
                DeadLetterError.TIME_OUT_OF_RANGE,
                f"event_time {event.event_time} is {ahead_s:.0f} s ahead of the record's "
                f"timestamp (limit {settings.max_event_future_s:.0f} s)",
            )
        if settings.max_event_age_s and -ahead_s > settings.max_event_age_s:
            raise DecodeError(
                DeadLetterError.TIME_OUT_OF_RANGE,
                f"event_time {event.event_time} is {-ahead_s:.0f} s older than the record's "
                f"timestamp (limit {settings.max_event_age_s:.0f} s)",
            )

    def dead_letter(
        self,
        error: DeadLetterError,
        reason: str,
        source: Source,
        raw: bytes,
        event: Event | None = None,
    ) -> Outcome:
        self._log_dead_letter(error, reason, source, raw, event)
        value = encode_dead_letter(
            error,
            reason,
            source,
            raw,
            received_time_ms=self.clock(),
            max_bytes=self.settings.dead_letter_max_bytes,
        )
        return Outcome(
            status="dead_letter",
            outputs=[Output(DEAD_LETTERS, dead_letter_key(source.key), value)],
            error=error,
        )

    def _log_dead_letter(
        self,
        error: DeadLetterError,
        reason: str,
        source: Source,
        raw: bytes,
        event: Event | None,
    ) -> None:
        """One warning per dead letter, up to a budget per error kind (the metrics count them
        all): where the record was, its event id (or the one an undecodable payload claims),
        and the reason cut short (it can quote the payload)."""
        held = self._dead_letter_logs.take(error.value)
        if held is None:
            return
        extra = log_ids(source, event)
        if event is None:
            event_id = claimed_event_id(raw, self.settings.max_event_bytes)
            if event_id is not None:
                extra["event_id"] = event_id
        extra.update(error=error.value, reason=truncated(reason))
        if held:
            extra["held_back"] = held
        log.warning(
            "dead letter (%s) from %s[%d]@%d: %s%s",
            error.value,
            source.topic,
            source.partition,
            source.offset,
            extra["reason"],
            f" ({held} more {error.value} dead letters not logged)" if held else "",
            extra=extra,
        )

    def handle(
        self, value: bytes | None, source: Source, lookup: Callable[[bytes], bytes | None]
    ) -> Outcome:
        """One record: :meth:`handle_batch` of one."""
        return self.handle_batch([(value, source)], lookup).outcomes[0]

    def handle_batch(
        self,
        records: Sequence[tuple[bytes | None, Source]],
        lookup: Callable[[bytes], bytes | None],
    ) -> BatchResult:
        """Decode, update state, rank; any failure becomes a dead letter, never an exception.

        ``lookup`` reads a user's stored state by key (the UTF-8 user id); it is called at most
        once per user per batch.
        """
        index = self.catalog.index
        self._ranker_for(index)
        users: dict[str, _User] = {}
        steps: list[_Step | Outcome] = []
        for position, (value, source) in enumerate(records):
            decoded = self.decode(value, source)
            if isinstance(decoded, Outcome):
                steps.append(decoded)
                continue
            try:
                steps.append(self._apply(position, decoded, source, value or b"", users, lookup))
            except Exception as exc:
                log.exception(
                    "applying event %s failed", decoded.event_id, extra=log_ids(source, decoded)
                )
                steps.append(
                    self.dead_letter(
                        DeadLetterError.PROCESSING_ERROR,
                        f"{type(exc).__name__}: {exc}",
                        source,
                        value or b"",
                        decoded,
                    )
                )
        triggers = [s for s in steps if isinstance(s, _Step) and s.trigger]
        result = self._rank(index, triggers)
        shadow = self.shadow
        work = None
        if shadow is not None:
            # What the serving model ranked itself (not the cheap path's lists, nor a copy
            # of a later event's ranking), for the shadow to rank the same events.
            model_ranked = [
                s
                for s in triggers
                if s.recommendation is not None
                and not s.recommendation.degraded
                and s.recommendation.coalesced_into is None
                and not s.duplicate
            ]
            work = ShadowWork(
                shadow,
                index,
                [s for s in steps if isinstance(s, _Step)],
                model_ranked,
                late=result.degraded > 0,
            )
        return dataclasses.replace(result, outcomes=self._outcomes(steps, users), shadow=work)

    def _apply(
        self,
        position: int,
        event: Event,
        source: Source,
        raw: bytes,
        users: dict[str, _User],
        lookup: Callable[[bytes], bytes | None],
    ) -> _Step:
        user = users.get(event.user_id)
        if user is None:
            user = users[event.user_id] = self._load(event.user_id, lookup, source, event)
        user.last_position = position
        if event.type is EventType.FORGET_USER:
            # Idempotent: a replayed forget_user deletes again. The dedupe window goes with the
            # state, so later events (a new session) start a new state.
            user.state, user.forgotten = None, True
            return _Step(position, event, source, raw, None, duplicate=False, trigger=False)
        previous = user.state
        at = (source.partition, source.offset)
        duplicate = previous is not None and previous.has_applied(event.event_id, at)
        item = self.catalog.index.item(event.item_id) if event.item_id is not None else None
        state = apply_event(previous, event, item, self.limits, at)
        user.state = state
        trigger = event.type is EventType.SEARCH or event.type in NEXT_ITEM_TRIGGERS
        history = state.history
        if not duplicate and event.item_id is not None and len(history) > 1:
            if history[-1].item_id == event.item_id:  # searches add nothing to the history
                self.cooccurrence.add(history[-2].item_id, event.item_id)
        related: tuple[str, ...] = ()
        skip: frozenset[str] | None = None
        if trigger:
            recent = [i.item_id for i in history[-3:]]
            skip = excluded_ids(state, event, self.params.exclusion)
            related = tuple(self.cooccurrence.top(recent, RELATED_CANDIDATES, exclude=skip))
        rules: tuple[str, ...] = ()
        if not duplicate:
            if event.item_id is not None and item is None:
                rules += (RULE_UNKNOWN_ITEM,)
            elif item is not None and item.withdrawn:
                rules += (RULE_WITHDRAWN_ITEM,)
            if previous is not None and event.event_time_ms < previous.updated_ms:
                rules += (RULE_OUT_OF_ORDER,)
        return _Step(
            position,
            event,
            source,
            raw,
            state,
            duplicate,
            trigger,
            rules,
            related=related,
            excluded=skip,
        )

    def _load(
        self,
        user_id: str,
        lookup: Callable[[bytes], bytes | None],
        source: Source | None = None,
        event: Event | None = None,
    ) -> _User:
        """``source`` and ``event``: the record that reads the state, for a reset's log line."""
        raw = lookup(user_id.encode("utf-8"))
        if raw is None:
            return _User(None, None, reset=False)
        try:
            state = self.states.get(user_id, raw)
            if state is None:
                state = decode_state(raw)
                self.states.put(user_id, raw, state)
        except (ValueError, KeyError, TypeError) as exc:
            # A state we cannot read would block this user forever; start them afresh.
            error = truncated(f"{type(exc).__name__}: {exc}")
            log.warning(
                "unreadable state for user %s; starting afresh (%s)",
                user_id,
                error,
                extra={
                    **(log_ids(source, event) if source is not None else {}),
                    "user_id": user_id,
                    "error": error,
                },
            )
            return _User(None, None, reset=True)
        return _User(
            state,
            state.last_recommendation,
            reset=False,
            open=state.impressions,
            closed=state.closed_impressions,
        )

    def _rank(self, index: CatalogIndex, triggers: list[_Step]) -> BatchResult:
        """Recommendations for the batch's triggering events, set on their steps."""
        if not triggers:
            return BatchResult(outcomes=[])
        ranked = triggers
        if self.settings.coalesce_users:
            # A user's searches fold into their latest search in the batch, and next-item
            # triggers into their latest next-item trigger: a search always gets results for
            # a query, and every page gets the freshest ranking of its kind.
            def slot(s: _Step) -> tuple[str, bool]:
                return s.event.user_id, s.event.type is EventType.SEARCH

            latest = {slot(s): s for s in triggers}
            ranked = [s for s in triggers if latest[slot(s)] is s]
            for s in triggers:
                if latest[slot(s)] is not s:
                    s.coalesced_into = latest[slot(s)]
        now = self.clock()
        deadline = self.settings.deadline_ms
        ages = [now - (s.source.timestamp_ms or now) for s in ranked]
        late = [s for s, age in zip(ranked, ages, strict=True) if deadline and age > deadline]
        on_time = [
            s for s, age in zip(ranked, ages, strict=True) if not (deadline and age > deadline)
        ]
        started = time.perf_counter()
        self._rank_with(index, on_time, self.ranker.rank)
        self._rank_with(index, late, self.ranker.rank_cheap)
        ranking_s = time.perf_counter() - started
        for s in triggers:
            target = s.coalesced_into
            if target is not None:
                if target.recommendation is None:
                    s.error = target.error
                else:
                    s.recommendation = dataclasses.replace(
                        target.recommendation,
                        event_id=s.event.event_id,
                        event_time=s.event.event_time,
                        event_time_ms=s.event.event_time_ms,
                        coalesced_into=target.event.event_id,
                    )
        # Counted per record a user receives: a coalesced copy of a degraded ranking is a
        # degraded answer too.
        answered = [s.recommendation for s in triggers if s.recommendation is not None]
        degraded = sum(1 for r in answered if r.degraded)
        coalesced = sum(1 for r in answered if r.coalesced_into is not None)
        return BatchResult(
            outcomes=[],
            ranked=len(on_time),
            degraded=degraded,
            coalesced=coalesced,
            ranking_s=ranking_s,
            oldest_age_ms=max(ages, default=0),
        )

    def shadow_batch(self, work: ShadowWork | None) -> ShadowResult:
        """The shadow's part of a batch, run once its serving outputs are handed over (so the
        shadow never delays what users receive): it ranks the events the serving model ranked
        (not the cheap path's: nor while any record of the batch is late, serving first), then
        attributes the batch's events, in record order, to its open impressions and opens one
        per list. It changes nothing the serving model outputs or stores."""
        if work is None:
            return ShadowResult([], ())
        ranked, skipped, seconds = self._rank_shadow(work)
        outputs: list[Output] = []
        closed: tuple[ShadowClosed, ...] = ()
        now = self.clock()
        for step in work.steps:
            closed += self._attribute_shadow(work.shadow, step, now, outputs)
        return ShadowResult(outputs, closed, ranked, skipped, seconds)

    def _rank_shadow(self, work: ShadowWork) -> tuple[int, int, float]:
        """The shadow's lists, set on the steps; returns (ranked, skipped, seconds)."""
        shadow, ranked = work.shadow, work.to_rank
        if not ranked:
            return 0, 0, 0.0
        view = work.index.shadow
        if work.late or view is None or view.encoder_tag != shadow.version:
            return 0, len(ranked), 0.0  # behind, or its item vectors are being built
        started = time.perf_counter()
        try:
            recs = shadow.ranker.rank(
                view,
                [(_applied(s), s.event) for s in ranked],
                [(s.related, s.excluded) for s in ranked],
            )
        except Exception:
            held = self._shadow_logs.take(shadow.version)
            if held is not None:
                log.exception(
                    "shadow model %s failed on a batch of %d; its lists are skipped "
                    "(%d such lines held back)",
                    shadow.version,
                    len(ranked),
                    held,
                    extra={"model_version": shadow.version},
                )
            return 0, len(ranked), time.perf_counter() - started
        for step, rec in zip(ranked, recs, strict=True):
            step.shadow = rec
        return len(ranked), 0, time.perf_counter() - started

    def _rank_with(
        self,
        index: CatalogIndex,
        steps: list[_Step],
        ranker: Callable[
            [CatalogIndex, Sequence[tuple[UserState, Event]], Sequence[Hints]],
            list[Recommendation],
        ],
    ) -> None:
        if not steps:
            return
        try:
            recs = ranker(
                index,
                [(_applied(s), s.event) for s in steps],
                [(s.related, s.excluded) for s in steps],
            )
        except Exception as exc:
            if len(steps) == 1:
                step = steps[0]
                log.exception(
                    "ranking event %s failed",
                    step.event.event_id,
                    extra={**log_ids(step.source, step.event), "model_version": self.spec.version},
                )
                step.error = f"{type(exc).__name__}: {exc}"
                return
            # One bad request must not sink the batch: rank one at a time to find it.
            log.warning("ranking a batch of %d failed; ranking one at a time", len(steps))
            for s in steps:
                self._rank_with(index, [s], ranker)
            return
        for s, rec in zip(steps, recs, strict=True):
            s.recommendation = rec

    def _outcomes(self, steps: list[_Step | Outcome], users: dict[str, _User]) -> list[Outcome]:
        """Records to emit in input order; each user's final state on their last record."""
        now = self.clock()
        reported_reset: set[str] = set()
        outcomes: list[Outcome] = []
        debug = log.isEnabledFor(logging.DEBUG)  # once per batch, not per recommendation
        for step in steps:
            if isinstance(step, Outcome):
                outcomes.append(step)
                continue
            event = step.event
            user = users[event.user_id]
            key = event.user_id.encode("utf-8")
            if step.state is None:
                outcomes.append(self._forgotten(step, user, key, now))
                continue
            outputs: list[Output] = []
            attributed = user.last
            rec = step.recommendation
            attribution: list[Output] = []
            positives, closed = self._attribute(step, user, key, now, attribution)
            if step.error is not None:
                # The state change stands (a replay is deduplicated); only its ranking failed.
                outputs += self.dead_letter(
                    DeadLetterError.PROCESSING_ERROR,
                    f"ranking failed: {step.error}",
                    step.source,
                    step.raw,
                    event,
                ).outputs
            if rec is not None:
                if debug:
                    self._log_recommendation(step, rec)
                outputs.append(
                    Output(RECOMMENDATIONS, key, encode_recommendation(rec, emit_time_ms=now))
                )
                if rec.coalesced_into is None:
                    user.last = LastRecommendation(
                        event_id=rec.event_id,
                        model_version=rec.model_version,
                        item_ids=tuple(i.item_id for i in rec.items),
                    )
            outputs.append(
                Output(
                    FEEDBACK,
                    key,
                    encode_feedback(
                        event,
                        emit_time_ms=now,
                        duplicate=step.duplicate,
                        last_recommendation=None
                        if attributed is None
                        else (attributed.event_id, attributed.model_version, attributed.item_ids),
                    ),
                )
            )
            outputs += attribution
            state: bytes | None = None
            due: int | None = None
            if user.last_position == step.position and user.state is not None:
                final = user.state
                last = final.last_recommendation
                if user.last is not None and user.last != last:
                    last = user.last
                final = final.with_attribution(last, user.open, user.closed)
                state = encode_state(final)
                self.states.put(event.user_id, state, final)
                due = next_due(user.open)
            reset = user.reset and event.user_id not in reported_reset
            reported_reset.add(event.user_id)
            outcomes.append(
                Outcome(
                    status="duplicate" if step.duplicate else "processed",
                    outputs=outputs,
                    user_id=event.user_id,
                    state=state,
                    event=event,
                    recommendation=rec,
                    error=None if step.error is None else DeadLetterError.PROCESSING_ERROR,
                    state_reset=reset,
                    rules=step.rules,
                    positives=positives,
                    closed=closed,
                    next_due=due,
                )
            )
        return outcomes

    def _attribute_shadow(
        self, shadow: Shadow, step: _Step, now: int, outputs: list[Output]
    ) -> tuple[ShadowClosed, ...]:
        """The serving attribution's twin for the shadow's lists: the event closes or credits
        the user's open shadow impressions, then the shadow's own list for it (if any) opens
        one. A replayed record changes nothing here (the book is in memory, and a restart
        forgets it). A forgotten user's open shadow impressions are dropped, as their state is.
        Returns the shadow impressions closed."""
        if step.state is None:
            shadow.book.forget(step.event.user_id)
            return ()
        if step.duplicate:
            return ()
        event, source = step.event, step.source
        record_ms = source.timestamp_ms or event.event_time_ms
        closed = shadow.book.on_event(event, record_ms)
        rec = step.shadow
        if rec is not None:
            impression = _shown(rec, step, record_ms + shadow.book.window_ms)
            closed += shadow.book.on_shown(event.user_id, impression, source.partition)
        self._emit_shadow(closed, now, outputs)
        return closed

    def _emit_shadow(self, closed: Sequence[ShadowClosed], now: int, outputs: list[Output]) -> None:
        settings = self.settings
        for user_id, imp in closed:
            value = encode_shadow(
                imp,
                user_id,
                events_topic=settings.topic_events,
                window_s=settings.attribution_window_s,
                emit_time_ms=now,
            )
            outputs.append(Output(ATTRIBUTION, user_id.encode("utf-8"), value))

    def sweep_shadow(self, partition: int, up_to_ms: int) -> ShadowResult:
        """The sweeper's step for the shadow: its impressions on ``partition`` due by
        ``up_to_ms`` (the partition's watermark) close."""
        shadow = self.shadow
        if shadow is None:
            return ShadowResult([], ())
        closed = shadow.book.sweep(partition, up_to_ms)
        outputs: list[Output] = []
        self._emit_shadow(closed, self.clock(), outputs)
        return ShadowResult(outputs, closed)

    def drop_shadow_partition(self, partition: int) -> None:
        """A partition moved away: its users' open shadow impressions are forgotten."""
        shadow = self.shadow
        if shadow is not None:
            shadow.book.drop_partition(partition)

    def _log_recommendation(self, step: _Step, rec: Recommendation) -> None:
        """Debug: which request (the recommendation's event_id) answered which event."""
        extra = log_ids(step.source, step.event)
        extra.update(
            request_id=rec.event_id,
            model_version=rec.model_version,
            kind=rec.kind,
            degraded=rec.degraded,
        )
        if rec.coalesced_into is not None:
            extra["coalesced_into"] = rec.coalesced_into
        log.debug(
            "recommendation for event %s: %d items (%s, model %s%s%s)",
            rec.event_id,
            len(rec.items),
            rec.kind,
            rec.model_version,
            ", degraded" if rec.degraded else "",
            f", coalesced into {rec.coalesced_into}" if rec.coalesced_into else "",
            extra=extra,
        )

    def _attribute(
        self, step: _Step, user: _User, key: bytes, now: int, outputs: list[Output]
    ) -> tuple[tuple[Positive, ...], tuple[Impression, ...]]:
        """Attribution for one applied step, in record order: impressions past their window
        close, an action on a shown item is a positive, a ranked recommendation opens an
        impression (and its timer). A replayed record re-emits what it emitted the first time.
        Returns the new positives and closures (for the live metrics)."""
        event, source, rec = step.event, step.source, step.recommendation
        settings = self.settings
        if step.duplicate:
            positives, closures = replayed(user.open, user.closed, event.event_id)
            self._emit_attribution(key, positives, closures, now, outputs)
            return (), ()
        record_ms = source.timestamp_ms or event.event_time_ms
        window_ms = int(settings.attribution_window_s * 1000)
        after = on_event(
            user.open,
            user.closed,
            event,
            record_ms,
            window_ms=window_ms,
            closed_limit=settings.attribution_closed_kept,
        )
        positives, closed = after.positives, after.newly_closed
        user.open, user.closed = after.open, after.closed
        if rec is not None and rec.coalesced_into is None:
            shown = _shown(rec, step, record_ms + window_ms)
            opened = on_shown(
                user.open,
                user.closed,
                shown,
                open_limit=settings.attribution_open,
                closed_limit=settings.attribution_closed_kept,
            )
            user.open, user.closed = opened.open, opened.closed
            closed += opened.newly_closed
        self._emit_attribution(key, positives, closed, now, outputs)
        return positives, closed

    def _emit_attribution(
        self,
        key: bytes,
        positives: Sequence[Positive],
        closed: Sequence[Impression],
        now: int,
        outputs: list[Output],
    ) -> None:
        user_id = key.decode("utf-8")
        topic, window_s = self.settings.topic_events, self.settings.attribution_window_s
        for positive in positives:
            value = encode_positive(
                positive, user_id, events_topic=topic, window_s=window_s, emit_time_ms=now
            )
            outputs.append(Output(ATTRIBUTION, key, value))
        for imp in closed:
            value = encode_negative(
                imp, user_id, events_topic=topic, window_s=window_s, emit_time_ms=now
            )
            outputs.append(Output(ATTRIBUTION, key, value))

    def close_due(self, user_id: str, raw: bytes | None, up_to_ms: int) -> Outcome:
        """The sweeper's step for one user: impressions due by ``up_to_ms`` close, and their
        negatives are the outputs. ``state`` is set only when something closed; the caller
        stores it once the outputs are on the broker."""
        user = self._load(user_id, lambda _key: raw)
        if user.state is None:  # forgotten, or unreadable
            return Outcome(status="swept", user_id=user_id)
        after = on_sweep(
            user.open, user.closed, up_to_ms, closed_limit=self.settings.attribution_closed_kept
        )
        if not after.newly_closed:
            return Outcome(status="swept", user_id=user_id, next_due=next_due(user.open))
        outputs: list[Output] = []
        self._emit_attribution(
            user_id.encode("utf-8"), (), after.newly_closed, self.clock(), outputs
        )
        final = user.state.with_attribution(
            user.state.last_recommendation, after.open, after.closed
        )
        encoded = encode_state(final)
        self.states.put(user_id, encoded, final)
        return Outcome(
            status="swept",
            outputs=outputs,
            user_id=user_id,
            state=encoded,
            closed=after.newly_closed,
            next_due=next_due(after.open),
        )

    def _forgotten(self, step: _Step, user: _User, key: bytes, now: int) -> Outcome:
        """forget_user: a tombstone for whatever downstream caches of the user's
        recommendations, a forget_user record for the training data, and (when nothing of
        theirs follows in the batch) the state deleted."""
        feedback = encode_feedback(
            step.event, emit_time_ms=now, duplicate=False, last_recommendation=None
        )
        if user.last_position == step.position and user.forgotten:
            self.states.discard(step.event.user_id)
        return Outcome(
            status="forgotten",
            outputs=[Output(RECOMMENDATIONS, key, None), Output(FEEDBACK, key, feedback)],
            user_id=step.event.user_id,
            event=step.event,
            delete=user.last_position == step.position and user.forgotten,
        )
