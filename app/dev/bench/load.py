"""The load generator: pre-encoded synthetic sessions, sent open-loop at a fixed rate.

Everything costly (session generation, JSON encoding) happens before a run; sending an event
only splices a fresh event id and its scheduled time into pre-encoded bytes and hands them to
librdkafka, so the generator stays a small share of a machine the broker and the system under
test also run on.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from confluent_kafka import Producer

from app.core.codec import encode_event, format_time_ms
from app.core.records import NEXT_ITEM_TRIGGERS, Event, EventType, Item
from app.dev.bench.stats import due_count, scheduled_offset_ms
from app.dev.synthetic import Traffic
from app.kafka.kafka_config import produce_waiting

_ID_MARK = "bench-event-id-mark"
_TIME_MARK = "1999-12-31T23:59:59.999Z"


@dataclass(frozen=True, slots=True)
class Template:
    """One encoded event cut around its event id and time: ``head + id + mid + time + tail``."""

    key: bytes
    head: bytes
    mid: bytes
    tail: bytes
    trigger: bool  # the worker answers it with a recommendation

    def render(self, event_id: bytes, event_time: bytes) -> bytes:
        return self.head + event_id + self.mid + event_time + self.tail


def template_of(event: Event) -> Template:
    """Encode ``event`` (with app.core.codec, as any producer would) and cut out its id and time."""
    raw = encode_event(replace(event, event_id=_ID_MARK, event_time=_TIME_MARK))
    id_mark, time_mark = _ID_MARK.encode(), _TIME_MARK.encode()
    head, sep, rest = raw.partition(b'"event_id":"' + id_mark)
    if not sep:
        raise ValueError("event_id not found in the encoded event")
    mid, sep, tail = rest.partition(time_mark)
    if not sep:
        raise ValueError("event_time not found in the encoded event")
    return Template(
        key=event.user_id.encode(),
        head=head + b'"event_id":"',
        mid=mid,
        tail=tail,
        trigger=event.type is EventType.SEARCH or event.type in NEXT_ITEM_TRIGGERS,
    )


def make_templates(
    catalog: list[Item], *, events: int, users: int, open_sessions: int = 2000, seed: int = 11
) -> list[Template]:
    """``events`` events from synthetic sessions of ``users`` users, many sessions interleaved as
    on a real site (each user's own events stay in order)."""
    traffic = Traffic(catalog, n_users=users, seed=seed)
    rng = random.Random(seed + 1)  # noqa: S311 - a seeded, reproducible interleaving
    sessions = [traffic.session() for _ in range(open_sessions)]
    out: list[Template] = []
    while len(out) < events:
        i = rng.randrange(len(sessions))
        event = next(sessions[i], None)
        if event is None:
            sessions[i] = traffic.session()
            continue
        out.append(template_of(event))
    return out


class TimeText:
    """RFC 3339 bytes of a millisecond time, formatted once per second, then by the millis."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def __call__(self, ms: int) -> bytes:
        second = ms // 1000
        if second != self._second:
            self._second = second
            self._prefix = format_time_ms(second * 1000)[:-4].encode()
        return self._prefix + b"%03dZ" % (ms % 1000)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Open-loop send times: event ``i`` is due ``i / rate`` seconds after the start and is
    stamped with that time whenever it is actually sent. ``window`` (seconds from the start)
    is the measured part of the run.

    >>> s = Schedule(rate=1000.0, duration_s=2.0, window=(0.5, 1.5))
    >>> s.total, s.due(0.0105), s.stamp_ms(1_000_000.0, 11), s.in_window(499), s.in_window(500)
    (2000, 11, 1000011, False, True)
    """

    rate: float
    duration_s: float
    window: tuple[float, float] = (0.0, float("inf"))

    @property
    def total(self) -> int:
        return int(self.rate * self.duration_s)

    def due(self, elapsed_s: float) -> int:
        """How many events should have been sent ``elapsed_s`` after the start."""
        return min(self.total, due_count(elapsed_s, self.rate))

    def stamp_ms(self, start_wall_ms: float, index: int) -> int:
        return int(start_wall_ms + scheduled_offset_ms(index, self.rate))

    def in_window(self, index: int) -> bool:
        offset = scheduled_offset_ms(index, self.rate)
        return self.window[0] * 1000.0 <= offset < self.window[1] * 1000.0


@dataclass(frozen=True, slots=True)
class RunStats:
    """What one open-loop run sent. ``start_wall_ms`` is the due time of its first event;
    the events due in the measured window have sequence numbers ``window_seq[0]`` up to
    (excluding) ``window_seq[1]``."""

    rate: float
    start_mono: float
    start_wall_ms: float
    sent: int
    triggers_in_window: int
    sent_in_window: int
    window_seq: tuple[int, int]
    max_behind_ms: float


def event_id(prefix: str, seq: int) -> str:
    """The id of the ``seq``-th event a generator sends.

    >>> event_id("run1", 42)
    'run1-0000000042'
    >>> sequence_of("run1", event_id("run1", 42))
    42
    """
    return f"{prefix}-{seq:010d}"


def sequence_of(prefix: str, event_id: str) -> int | None:
    """The sequence number in an id :func:`event_id` made, or None for another id."""
    if not event_id.startswith(prefix + "-"):
        return None
    tail = event_id[len(prefix) + 1 :]
    return int(tail) if tail.isdigit() else None


class LoadGenerator:
    """Sends events to one topic; ``sent`` counts every event handed to the producer."""

    def __init__(
        self,
        config: dict[str, str | int | float | bool],
        topic: str,
        templates: Sequence[Template],
        run_tag: str,
    ) -> None:
        self.topic = topic
        self.templates = templates
        self.sent = 0
        self._next = 0
        self.prefix = run_tag
        self._prefix = run_tag.encode()
        self._time = TimeText()
        self._producer = Producer(
            {
                "linger.ms": 2,
                "acks": 1,
                "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 1_048_576,
                **config,
            }
        )

    def _send(self, event_time_ms: int) -> bool:
        template = self.templates[self._next % len(self.templates)]
        value = template.render(b"%s-%010d" % (self._prefix, self._next), self._time(event_time_ms))
        produce_waiting(self._producer, self.topic, 0.005, value=value, key=template.key)
        self._next += 1
        self.sent += 1
        return template.trigger

    def open_loop(
        self,
        rate: float,
        duration_s: float,
        *,
        window: tuple[float, float] = (0.0, float("inf")),
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], float] = lambda: time.time_ns() / 1e6,
    ) -> RunStats:
        """Send ``rate`` events/s for ``duration_s``; each is stamped with its scheduled time.

        ``window`` (seconds from the start) is the measured part: the events due in it, and
        those of them that ask for a recommendation, are counted.
        """
        schedule = Schedule(rate, duration_s, window)
        start, wall0 = clock(), wall_ms()
        sent = triggers = in_window = 0
        seq_lo = seq_hi = self._next
        max_behind = 0.0
        while sent < schedule.total:
            if stop is not None and stop.is_set():
                break
            now = clock()
            due = schedule.due(now - start)
            if due <= sent:
                # Sleep to the next due time, at most 2 ms, so bursts stay short.
                time.sleep(min(0.002, max(0.0, start + sent / rate - now)))
                continue
            max_behind = max(max_behind, (now - start) * 1000.0 - scheduled_offset_ms(sent, rate))
            while sent < due:
                stamp = schedule.stamp_ms(wall0, sent)
                if schedule.in_window(sent):
                    if not in_window:
                        seq_lo = self._next
                    seq_hi = self._next + 1
                    in_window += 1
                    triggers += self._send(stamp)
                else:
                    self._send(stamp)
                sent += 1
            self._producer.poll(0)
        return RunStats(rate, start, wall0, sent, triggers, in_window, (seq_lo, seq_hi), max_behind)

    def paced(
        self,
        duration_s: float,
        control: Callable[[float], float],
        *,
        tick_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> int:
        """Send for ``duration_s`` at a rate ``control(now)`` sets every ``tick_s``, spread
        evenly as an open-loop run would; events are stamped with the time they are sent."""
        start = last = clock()
        rate = control(start)
        next_tick = start + tick_s
        credit = 0.0
        sent = 0
        while (now := clock()) < start + duration_s:
            if now >= next_tick:
                rate = control(now)
                next_tick = now + tick_s
            # A stalled loop catches up by at most 20 ms of events: no giant bursts.
            credit = min(credit + (now - last) * rate, max(1.0, rate * 0.02))
            last = now
            n = int(credit)
            if n == 0:
                time.sleep(0.001)
                continue
            credit -= n
            stamp = time.time_ns() // 1_000_000
            for _ in range(n):
                self._send(stamp)
            sent += n
            self._producer.poll(0)
        return sent

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for delivery; returns how many events are still undelivered."""
        remaining: int = self._producer.flush(timeout_s)
        return remaining
