"""Bounded shutdown: after SIGTERM or a fatal error the process ends within a grace period,
whatever its event loop is doing, and a fatal error ends it with a non-zero exit code."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import faust

log = logging.getLogger(__name__)

# Exit codes of `worker` beyond start-up (docs/operating.md: Endpoints, metrics, exit codes).
EXIT_FAILED = 7  # a fatal error while running: an agent crashed, or a record could not be sent
EXIT_FORCED = 8  # SIGTERM, but the clean shutdown did not finish within the grace period


class WorkerFailed(RuntimeError):
    """The worker stopped because of a fatal error (the message says which)."""


class Shutdown:
    """The process's way out, shared by the signal handlers, the agents and the producers.

    ``fail()`` records the first fatal reason, logs it as a critical line, and asks the worker
    to stop as on SIGTERM; both arm a watchdog thread that ends the process (``os._exit``) when
    the clean shutdown has not finished ``grace_s`` later. The watchdog is a thread and the
    handler runs between any two bytecodes of the main thread, so neither needs the event loop:
    a crashed, hung or blocked agent cannot hold the process up.
    """

    def __init__(
        self,
        grace_s: float,
        exit_now: Callable[[int], Any] = os._exit,
        stop: Callable[[], None] | None = None,
    ) -> None:
        self.grace_s = grace_s
        self._exit_now = exit_now
        # How to ask for a clean stop: SIGTERM to ourselves, so that faust's worker stops as it
        # does for a pod's SIGTERM (and the handler below arms the watchdog).
        self._stop = stop or (lambda: os.kill(os.getpid(), signal.SIGTERM))
        self._lock = threading.Lock()
        self._watchdog: threading.Timer | None = None
        self.reason: str | None = None
        self.on_fail: list[Callable[[], None]] = []

    @property
    def failed(self) -> bool:
        return self.reason is not None

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed else EXIT_FORCED

    def fail(self, reason: str, exc: BaseException | None = None) -> None:
        """A fatal error: log it, and stop the process (non-zero exit) within the grace period.
        Safe from any thread; only the first reason counts."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
        log.critical(
            "worker failing, stopping within %.0f s: %s",
            self.grace_s,
            reason,
            exc_info=exc,
            extra={"reason": reason},
        )
        for hook in self.on_fail:
            hook()
        self.arm()
        self._stop()

    def arm(self) -> None:
        """Start the watchdog (once)."""
        with self._lock:
            if self._watchdog is not None:
                return
            self._watchdog = threading.Timer(self.grace_s, self._force)
            self._watchdog.name = "liverank-shutdown-watchdog"
            self._watchdog.daemon = True
            self._watchdog.start()

    def _force(self) -> None:
        code = self.exit_code
        log.critical(
            "shutdown did not finish within %.0f s; exiting now (exit %d)%s",
            self.grace_s,
            code,
            f": {self.reason}" if self.reason else "",
        )
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:  # noqa: S110 - nothing must keep the process from ending
                pass
        sys.stderr.flush()
        self._exit_now(code)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        """The Python-level SIGTERM/SIGINT handler. asyncio's own handling (faust's clean stop)
        still runs: it is driven by the wakeup fd, which the C-level handler writes whatever
        Python handler is installed. A second signal ends the process at once."""
        if self._watchdog is not None and not self.failed:
            log.warning("second signal %d: exiting now", signum)
            self._exit_now(EXIT_FORCED)
            return
        self.arm()

    def install(self) -> None:
        """Install :meth:`on_signal` for SIGTERM and SIGINT (from the main thread)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.on_signal)


def bounded_worker(
    shutdown: Shutdown, on_ready: Callable[[], Awaitable[None]] | None = None
) -> type[faust.Worker]:
    """faust's Worker class, whose signal handling also arms ``shutdown``'s watchdog, and which
    awaits ``on_ready`` once the worker has started (recovery done). The worker replaces the
    app's own ``on_startup_finished`` with its method, so a callback set on the app never runs."""

    # Named as faust's own: its log lines say "[^Worker]: Ready" and the like.
    class Worker(faust.Worker):
        def install_signal_handlers(self) -> None:
            # faust (mode) has the event loop handle SIGTERM and SIGINT: a clean stop that
            # needs a turning loop. On top of that, Python-level handlers bound its time.
            super().install_signal_handlers()
            shutdown.install()

        async def on_startup_finished(self) -> None:
            await super().on_startup_finished()
            if on_ready is not None and not self._shutdown_immediately:
                await on_ready()

    return Worker
