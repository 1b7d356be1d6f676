"""Liveness and readiness, and the small HTTP server for them and for ``/metrics``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.metrics import Metrics

log = logging.getLogger(__name__)


class Health:
    """Readiness conditions and an event-loop heartbeat, safe to read from any thread.

    Ready means: the model is loaded and warm, the catalog is preloaded, and Faust has finished
    table recovery (and is not rebalancing). Live means the event loop's heartbeat is recent.
    """

    def __init__(
        self, stale_after_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._stale_after_s = stale_after_s
        self._conditions: dict[str, bool] = {"model": False, "catalog": False, "recovered": False}
        self._heartbeat: float | None = None
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

    def is_ready(self) -> bool:
        return all(self.conditions().values()) and self.is_live()

    def is_live(self) -> bool:
        # Before the loop's first beat we are starting up: alive (a startupProbe bounds this).
        beat = self._heartbeat
        return beat is None or self._clock() - beat < self._stale_after_s


class _Handler(BaseHTTPRequestHandler):
    health: Health
    metrics: Metrics

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches on
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self.metrics.ready.set(1 if self.health.is_ready() else 0)
            self._send(200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/livez"):
            ok = self.health.is_live()
            self._send(200 if ok else 503, b"ok\n" if ok else b"event loop stalled\n")
        elif path == "/readyz":
            conditions = self.health.conditions()
            ok = self.health.is_ready()
            body = "".join(f"{k}: {'ok' if v else 'waiting'}\n" for k, v in conditions.items())
            self._send(200 if ok else 503, body.encode())
        else:
            self._send(404, b"not found\n")

    def _send(
        self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        # Probes hit these endpoints every few seconds; keep them out of the worker log.
        return


def serve(health: Health, metrics: Metrics, host: str, port: int) -> ThreadingHTTPServer:
    """Start the HTTP server in a daemon thread and return it (``shutdown()`` stops it)."""
    handler = type("Handler", (_Handler,), {"health": health, "metrics": metrics})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="liverank-http", daemon=True)
    thread.start()
    log.info("serving /metrics, /healthz, /readyz on http://%s:%d", host, server.server_port)
    return server
