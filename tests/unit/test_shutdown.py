"""The way out: a fatal error logs its reason once, asks for a clean stop and arms a watchdog
that ends the process after the grace period; a second signal ends it at once."""

from __future__ import annotations

import signal
import threading

import pytest

from app.streams.shutdown import EXIT_FAILED, EXIT_FORCED, Shutdown


class Exits:
    def __init__(self) -> None:
        self.codes: list[int] = []
        self.done = threading.Event()

    def __call__(self, code: int) -> None:
        self.codes.append(code)
        self.done.set()


def test_a_failure_stops_cleanly_then_forces_the_exit(caplog: pytest.LogCaptureFixture) -> None:
    exits, stops = Exits(), []
    shutdown = Shutdown(0.05, exit_now=exits, stop=lambda: stops.append(1))
    hooks: list[int] = []
    shutdown.on_fail.append(lambda: hooks.append(1))
    shutdown.fail("the events agent crashed: boom")
    shutdown.fail("a later error")  # only the first reason counts
    assert shutdown.failed and shutdown.reason == "the events agent crashed: boom"
    assert stops == [1] and hooks == [1]
    assert exits.done.wait(30)
    assert exits.codes == [EXIT_FAILED]
    assert "worker failing" in caplog.text and "boom" in caplog.text


def test_a_signal_arms_the_watchdog_and_a_second_one_exits_at_once() -> None:
    exits = Exits()
    shutdown = Shutdown(3600.0, exit_now=exits, stop=lambda: None)
    shutdown.on_signal(signal.SIGTERM, None)
    assert exits.codes == []
    shutdown.on_signal(signal.SIGTERM, None)
    assert exits.codes == [EXIT_FORCED]
