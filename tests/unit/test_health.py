"""Health verdicts (liveness from progress, readiness after an assignment) and the HTTP server:
bounded threads, slow clients closed, probes answered under a flood of slow connections."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from app.ops.health import Health, HttpServer
from app.ops.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ready_health(clock: Clock, stall_after_s: float = 60.0) -> Health:
    health = Health(stall_after_s=stall_after_s, clock=clock, wall=clock)
    for condition in ("model", "catalog", "recovered"):
        health.set(condition, True)
    return health


def test_records_waiting_without_progress_is_not_live() -> None:
    clock = Clock()
    health = ready_health(clock)
    health.assigned([0, 1])
    assert not health.is_ready()  # no batch yet since the assignment
    health.processed({0: 10})
    assert health.is_ready() and health.is_live()
    health.waiting(True)
    clock.now += 59
    assert health.is_live()
    clock.now += 2
    assert not health.is_live() and not health.is_ready()
    assert "no progress for 61 s" in health.liveness()[1]
    health.processed({1: 3})  # progress again
    assert health.is_live()


def test_an_idle_worker_is_live_and_ready() -> None:
    clock = Clock()
    health = ready_health(clock)
    health.assigned([0])
    health.waiting(False)  # nothing waits: as good as a batch
    clock.now += 3600
    health.waiting(False)
    assert health.is_ready() and health.is_live()
    assert health.last_progress == clock.now


def test_rebalances_and_recovery_pause_the_stall_clock() -> None:
    clock = Clock()
    health = ready_health(clock, stall_after_s=10)
    health.waiting(True)
    for _ in range(5):
        clock.now += 5
        health.pause_stall_clock()
    assert health.is_live()


def test_the_stall_check_can_be_off() -> None:
    clock = Clock()
    health = ready_health(clock, stall_after_s=0)
    health.waiting(True)
    clock.now += 10_000
    assert health.is_live()


# ---------------------------------------------------------------- HTTP


@pytest.fixture
def server() -> Iterator[HttpServer]:
    health = Health()
    for condition in ("model", "catalog", "recovered", "processing"):
        health.set(condition, True)
    http = HttpServer(health, Metrics(), "127.0.0.1", 0, timeout_s=1.0, max_connections=256)
    http.start()
    try:
        yield http
    finally:
        http.shutdown()


def get(server: HttpServer, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{server.server_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - loopback
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_endpoints(server: HttpServer) -> None:
    assert get(server, "/healthz") == (200, "ok\n")
    assert get(server, "/readyz")[0] == 200
    status, body = get(server, "/metrics")
    assert status == 200 and "liverank_ready 1.0" in body
    assert "liverank_last_progress_timestamp_seconds" in body
    assert get(server, "/nothing")[0] == 404


def test_a_thousand_slow_connections_leave_the_probes_answering(server: HttpServer) -> None:
    threads_before = threading.active_count()
    slow = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=30)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes the request
            slow.append(sock)
        for _ in range(20):
            assert get(server, "/healthz") == (200, "ok\n")
        # One thread serves every connection: the flood added none.
        assert threading.active_count() == threads_before
    finally:
        for sock in slow:
            sock.close()


def test_a_slow_client_is_closed_after_the_timeout(server: HttpServer) -> None:
    sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=30)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        # Closed by the server without an answer (a client that waited 30 s would time out).
        assert sock.recv(1024) == b""
    finally:
        sock.close()


def test_a_port_in_use_fails_at_once(server: HttpServer) -> None:
    with pytest.raises(OSError):
        HttpServer(Health(), Metrics(), "127.0.0.1", server.server_port)
