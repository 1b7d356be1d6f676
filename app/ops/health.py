"""Liveness and readiness, and the small HTTP server for them and for ``/metrics``."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.ops.metrics import Metrics

log = logging.getLogger(__name__)


class Health:
    """Readiness conditions, an event-loop heartbeat and the events agent's progress, safe to
    read from any thread.

    Ready means: the model is loaded and warm, the catalog is preloaded, Faust has finished
    table recovery (and is not rebalancing), and since the latest assignment the agent has
    processed a batch or has found nothing waiting. Live means the event loop's heartbeat is
    recent and the agent is not stalled: no record processed for ``stall_after_s`` while an
    assigned partition has records waiting (0 turns that check off).
    """

    def __init__(
        self,
        stale_after_s: float = 30.0,
        stall_after_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._stale_after_s = stale_after_s
        self._stall_after_s = stall_after_s
        self._conditions: dict[str, bool] = {
            "model": False,
            "catalog": False,
            "recovered": False,
            "processing": False,
        }
        self._heartbeat: float | None = None
        self._progress = clock()
        self._progress_wall = wall()
        self._waiting = False
        self._processed: dict[int, int] = {}
        self._lock = threading.Lock()

    def set(self, condition: str, value: bool) -> None:
        with self._lock:
            if condition not in self._conditions:
                raise KeyError(condition)
            self._conditions[condition] = value

    def beat(self) -> None:
        self._heartbeat = self._clock()

    def conditions(self) -> dict[str, bool]:
        with self._lock:
            return dict(self._conditions)

    # ------------------------------------------------------------------ progress

    def assigned(self, partitions: Iterable[int]) -> None:
        """A new assignment: not ready until its first batch (or until nothing waits), and the
        stall clock starts now. Offsets of partitions no longer held are forgotten."""
        keep = set(partitions)
        with self._lock:
            self._conditions["processing"] = False
            self._processed = {p: o for p, o in self._processed.items() if p in keep}
            self._touch()

    def processed(self, offsets: Mapping[int, int]) -> None:
        """The agent has processed records up to these offsets (partition -> last offset)."""
        with self._lock:
            for partition, offset in offsets.items():
                if offset > self._processed.get(partition, -1):
                    self._processed[partition] = offset
            self._conditions["processing"] = True
            self._touch()

    def processed_offsets(self) -> dict[int, int]:
        with self._lock:
            return dict(self._processed)

    def waiting(self, waiting: bool) -> None:
        """Whether records wait on an assigned partition (the heartbeat's verdict). Nothing
        waiting is as good as progress: an idle worker is neither stalled nor unready."""
        with self._lock:
            self._waiting = waiting
            if not waiting:
                self._conditions["processing"] = True
                self._touch()

    def pause_stall_clock(self) -> None:
        """Rebalancing or recovering tables: the agent is not expected to process now."""
        with self._lock:
            self._touch()

    def _touch(self) -> None:
        self._progress = self._clock()
        self._progress_wall = self._wall()

    @property
    def last_progress(self) -> float:
        """Unix time of the last progress (or of the last moment nothing was waiting)."""
        return self._progress_wall

    def stalled(self) -> bool:
        with self._lock:
            return (
                self._stall_after_s > 0
                and self._waiting
                and self._clock() - self._progress > self._stall_after_s
            )

    # ------------------------------------------------------------------ verdicts

    def is_ready(self) -> bool:
        return all(self.conditions().values()) and self.is_live()

    def heartbeat_fresh(self) -> bool:
        # Before the loop's first beat we are starting up: alive (a startupProbe bounds this).
        beat = self._heartbeat
        return beat is None or self._clock() - beat < self._stale_after_s

    def is_live(self) -> bool:
        return self.heartbeat_fresh() and not self.stalled()

    def liveness(self) -> tuple[bool, str]:
        """(live, what /healthz says)."""
        if not self.heartbeat_fresh():
            return False, "event loop stalled\n"
        if self.stalled():
            idle = self._clock() - self._progress
            return False, f"no progress for {idle:.0f} s while records wait\n"
        return True, "ok\n"


def pending(highwater: int | None, committed: int | None, processed: int | None) -> bool:
    """Whether a partition has records the agent has not processed: its end is past both the
    group's committed offset and the last offset processed here.

    >>> pending(highwater=10, committed=10, processed=None)
    False
    >>> pending(highwater=12, committed=10, processed=11)
    False
    >>> pending(highwater=12, committed=10, processed=None)
    True
    >>> pending(highwater=None, committed=0, processed=None)
    False
    """
    if highwater is None or highwater < 0:
        return False  # no fetch response yet: nothing known to wait
    done = processed + 1 if processed is not None else 0
    position = max(committed if committed is not None else 0, done)
    return highwater > position


# ---------------------------------------------------------------------- HTTP

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_TEXT = "text/plain; charset=utf-8"


def request_path(request_line: bytes) -> bytes | tuple[int, bytes, str]:
    """The path of ``GET <path> HTTP/1.x`` (query string dropped), or the error response.

    >>> request_path(b"GET /metrics?x=1 HTTP/1.1"), request_path(b"POST / HTTP/1.1")[0]
    (b'/metrics', 405)
    """
    parts = request_line.split()
    if len(parts) != 3:
        return 400, b"bad request\n", _TEXT
    if parts[0] != b"GET":
        return 405, b"only GET\n", _TEXT
    return parts[1].split(b"?", 1)[0]


class HttpServer:
    """``/metrics``, ``/healthz`` (``/livez``) and ``/readyz`` from one thread running an
    asyncio server: slow or idle connections cost a socket, never a thread. A connection that
    has not sent its request within ``timeout_s`` is closed, and beyond ``max_connections``
    the oldest connection still waiting for its request is dropped, so a flood of slow
    clients leaves the probes answering. One request per connection (``Connection: close``).
    """

    def __init__(
        self,
        health: Health,
        metrics: Metrics,
        host: str,
        port: int,
        timeout_s: float = 5.0,
        max_connections: int = 256,
    ) -> None:
        self.health = health
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        # Bound here, in the caller's thread, so that a port in use fails the start-up.
        self._socket = socket.create_server((host, port), backlog=1024)
        self.server_port: int = self._socket.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._waiting: dict[asyncio.StreamWriter, float] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liverank-http", daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            asyncio.start_server(self._serve, sock=self._socket, limit=16 * 1024)
        )
        try:
            loop.run_until_complete(self._until_stopped())
        finally:
            server.close()
            for writer in list(self._waiting):
                writer.transport.abort()
            loop.run_until_complete(server.wait_closed())
            loop.close()

    async def _until_stopped(self) -> None:
        while not self._stopped.is_set():
            await asyncio.sleep(0.1)

    def shutdown(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._waiting) >= self.max_connections:
            oldest = min(self._waiting, key=self._waiting.__getitem__)
            self._waiting.pop(oldest, None)
            oldest.transport.abort()
        self._waiting[writer] = time.monotonic()
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout_s)
            self._waiting.pop(writer, None)
            status, body, content_type = self.respond(head.split(b"\r\n", 1)[0])
            writer.write(
                (
                    f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                ).encode("ascii")
                + body
            )
            await asyncio.wait_for(writer.drain(), self.timeout_s)
            writer.close()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.transport.abort()
        except Exception:
            # A bug in a handler must cost one request, never the server.
            log.exception("HTTP request failed")
            writer.transport.abort()
        finally:
            self._waiting.pop(writer, None)

    def respond(self, request_line: bytes) -> tuple[int, bytes, str]:
        """(status, body, content type) for ``GET <path> HTTP/1.x``."""
        path = request_path(request_line)
        if isinstance(path, tuple):
            return path
        if path == b"/metrics":
            self.metrics.ready.set(1 if self.health.is_ready() else 0)
            self.metrics.last_progress.set(self.health.last_progress)
            return 200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST
        if path in (b"/healthz", b"/livez"):
            ok, text = self.health.liveness()
            return (200 if ok else 503), text.encode(), _TEXT
        if path == b"/readyz":
            conditions = self.health.conditions()
            ok = self.health.is_ready()
            body = "".join(f"{k}: {'ok' if v else 'waiting'}\n" for k, v in conditions.items())
            if not self.health.is_live():
                body += f"live: {self.health.liveness()[1]}"
            return (200 if ok else 503), body.encode(), _TEXT
        return 404, b"not found\n", _TEXT


def serve(
    health: Health, metrics: Metrics, host: str, port: int, timeout_s: float = 5.0
) -> HttpServer:
    """Start the HTTP server in its thread and return it (``shutdown()`` stops it)."""
    server = HttpServer(health, metrics, host, port, timeout_s).start()
    log.info("serving /metrics, /healthz, /readyz on http://%s:%d", host, server.server_port)
    return server
