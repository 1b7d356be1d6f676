"""Several worker processes in one pod: starts them, answers the pod's probes and scrapes for
them, forwards signals, and stops the pod when any of them dies.

With ``PROCESSES`` above 1, ``liverank worker`` runs this instead of a worker. Each child is an
ordinary ``liverank worker`` (``PROCESSES=1``): its own faust app in the same consumer group
(``APP_ID``), its own RocksDB directory ``<DATA_DIR>/p<i>`` and its own HTTP server on loopback
port ``HTTP_PORT + 1 + i``. The supervisor serves ``HTTP_HOST:HTTP_PORT`` itself:

- ``/healthz``: 503 when any child's ``/healthz`` fails (or stops answering once it has);
- ``/readyz``: 200 only when every child is ready; one line per child, with its pid;
- ``/metrics``: every child's metrics, each sample with a ``process`` label.

It restarts nothing: a child that exits on its own makes the supervisor stop the others and
exit with that child's code (7 when the child was killed by a signal), so Kubernetes restarts
the whole pod, as it would a single worker.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from app.core.settings import Settings
from app.ops.health import Health, HttpServer, request_path
from app.ops.metrics import Metrics
from app.streams.shutdown import EXIT_FAILED, EXIT_FORCED

log = logging.getLogger(__name__)

CHILD_HOST = "127.0.0.1"
# How often the children's probes are polled, and how long one may go unanswered (once it has
# answered) before the pod counts as not live: the child's own heartbeat staleness.
POLL_S = 1.0
STALE_AFTER_S = 30.0
_PR_SET_PDEATHSIG = 1
_TEXT = "text/plain; charset=utf-8"


# ---------------------------------------------------------------------- how many, where


def parse_cpu_max(text: str) -> float | None:
    """CPUs granted by a cgroup v2 ``cpu.max`` (``"<quota> <period>"``); None: no limit.

    >>> parse_cpu_max("200000 100000")
    2.0
    >>> parse_cpu_max("max 100000") is None
    True
    """
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    quota, period = int(parts[0]), int(parts[1])
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The container's CPU limit in CPUs (cgroup v2, else v1), or None when it has none or
    it cannot be read."""
    try:
        return parse_cpu_max((root / "cpu.max").read_text())
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def cpus_available(affinity: int, quota: float | None) -> int:
    """Whole CPUs this pod may use: its CPU affinity, capped by the cgroup quota (rounded down:
    a process per fraction of a CPU would only fight for it), at least 1.

    >>> cpus_available(16, 2.5)
    2
    >>> cpus_available(4, None)
    4
    >>> cpus_available(4, 0.5)
    1
    """
    cpus = affinity if quota is None else min(affinity, math.floor(quota))
    return max(1, cpus)


def process_count(
    setting: int,
    affinity: Callable[[], int] = lambda: len(os.sched_getaffinity(0)),
    quota: Callable[[], float | None] = cgroup_cpu_quota,
) -> int:
    """The ``PROCESSES`` setting, with 0 meaning one per CPU available to the pod.

    >>> process_count(3)
    3
    >>> process_count(0, affinity=lambda: 8, quota=lambda: 2.0)
    2
    """
    return setting if setting > 0 else cpus_available(affinity(), quota())


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """Where child ``index`` keeps its state and answers HTTP."""

    index: int
    data_dir: Path
    http_port: int

    @property
    def url(self) -> str:
        return f"http://{CHILD_HOST}:{self.http_port}"


def layout(settings: Settings, processes: int) -> list[ChildSpec]:
    """Child ``i``: RocksDB in ``<DATA_DIR>/p<i>``, HTTP on loopback ``HTTP_PORT + 1 + i``
    (``HTTP_PORT`` is the supervisor's).

    >>> [(c.data_dir.as_posix(), c.http_port) for c in layout(Settings(), 2)]
    [('.liverank-data/p0', 8081), ('.liverank-data/p1', 8082)]
    """
    return [
        ChildSpec(i, settings.data_dir / f"p{i}", settings.http_port + 1 + i)
        for i in range(processes)
    ]


def child_settings(settings: Settings, spec: ChildSpec) -> Settings:
    """A child's settings: one process, its own data dir, its own loopback port."""
    return settings.replace(
        processes=1, data_dir=spec.data_dir, http_host=CHILD_HOST, http_port=spec.http_port
    )


def child_env(settings: Settings, spec: ChildSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without its ``LIVERANK_*`` variables, plus the child's settings."""
    return child_settings(settings, spec).child_environ(environ)


def exit_code_for(returncode: int) -> int:
    """The supervisor's exit code for a child that ended on its own: the child's code, or 7
    (the worker failed) when it was killed by a signal or exited 0 without being asked to.

    >>> exit_code_for(3), exit_code_for(-9), exit_code_for(0)
    (3, 7, 7)
    """
    return returncode if returncode > 0 else EXIT_FAILED


# ---------------------------------------------------------------------- metrics


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def merge_metrics(texts: Mapping[str, str], label: str = "process") -> bytes:
    """Prometheus text expositions of several processes as one: each sample gains
    ``label="<key>"``, and each metric family is declared once.

    >>> one = "# HELP up Whether it is up.\\n# TYPE up gauge\\nup {}\\n"
    >>> print(merge_metrics({"0": one.format(1), "1": one.format(0)}).decode().strip())
    # HELP up Whether it is up.
    # TYPE up gauge
    up{process="0"} 1.0
    up{process="1"} 0.0
    """
    merged: dict[str, Metric] = {}
    for key, text in texts.items():
        for family in text_string_to_metric_families(text):
            target = merged.get(family.name)
            if target is None:
                target = Metric(family.name, family.documentation, family.type, family.unit)
                merged[family.name] = target
            target.samples += [s._replace(labels={**s.labels, label: key}) for s in family.samples]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(merged.values())))
    return generate_latest(registry)


# ---------------------------------------------------------------------- probes


class ChildProbe:
    """What a child's last answers said, safe to read from any thread.

    A child that has never answered is starting (live, not ready: start-up is bounded by the
    pod's startupProbe/initial delay, and a child that fails start-up exits anyway); one that
    answered and then went silent for ``stale_after_s`` is not live."""

    def __init__(
        self, stale_after_s: float = STALE_AFTER_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._stale_after_s = stale_after_s
        self._lock = threading.Lock()
        self._answered: float | None = None
        self._live_answer = True
        self._ready = False
        self._detail = "starting"

    def record(self, live: int, ready: int, detail: str = "") -> None:
        """HTTP statuses of /healthz and /readyz (0: no answer)."""
        with self._lock:
            if live == 0 or ready == 0:
                self._ready = False
                if self._answered is not None:
                    self._detail = "not answering"
                return
            self._answered = self._clock()
            self._live_answer = live == 200
            self._ready = ready == 200
            self._detail = detail

    def _live(self) -> bool:
        if self._answered is None:
            return True
        return self._live_answer and self._clock() - self._answered < self._stale_after_s

    def live(self) -> bool:
        with self._lock:
            return self._live()

    def ready(self) -> bool:
        with self._lock:
            return self._ready and self._live()

    def detail(self) -> str:
        with self._lock:
            return self._detail


def _get(url: str, timeout_s: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback URL
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return 0, ""


class FrontServer(HttpServer):
    """The pod's HTTP server (``app.ops.health.HttpServer``, its connection handling and limits),
    answering from the children."""

    def __init__(self, supervisor: Supervisor, host: str, port: int, timeout_s: float) -> None:
        # The base class's Health and Metrics are never read: respond() is replaced.
        super().__init__(Health(), Metrics(), host, port, timeout_s)
        self.supervisor = supervisor

    def respond(self, request_line: bytes) -> tuple[int, bytes, str]:
        path = request_path(request_line)
        if isinstance(path, tuple):
            return path
        sup = self.supervisor
        if path == b"/metrics":
            return 200, sup.metrics(), CONTENT_TYPE_LATEST
        if path in (b"/healthz", b"/livez"):
            dead = [str(c.spec.index) for c in sup.children if not c.probe.live()]
            if dead:
                return 503, f"process {', '.join(dead)} not live\n".encode(), _TEXT
            return 200, b"ok\n", _TEXT
        if path == b"/readyz":
            lines = [
                f"process {c.spec.index} (pid {c.pid}): {'ready' if c.probe.ready() else 'waiting'}"
                for c in sup.children
            ]
            ok = all(c.probe.ready() for c in sup.children)
            return (200 if ok else 503), ("\n".join(lines) + "\n").encode(), _TEXT
        return 404, b"not found\n", _TEXT


# ---------------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the supervisor dies, even by SIGKILL (in a pod
    the kernel ends every process when PID 1 exits; outside one this keeps none behind)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """One worker process."""

    def __init__(self, spec: ChildSpec, proc: subprocess.Popen[bytes]) -> None:
        self.spec = spec
        self.proc = proc
        self.pid = proc.pid
        self.probe = ChildProbe()


class Supervisor:
    """Runs ``processes`` workers until a signal stops them or one of them dies."""

    def __init__(
        self,
        settings: Settings,
        processes: int,
        environ: Mapping[str, str],
        command: Sequence[str],
    ) -> None:
        self.settings = settings
        self.specs = layout(settings, processes)
        self.environ = dict(environ)
        self.command = list(command)
        self.children: list[Child] = []
        self._stopping = False
        self._signals = 0
        self._stop_deadline: float | None = None
        self._done = threading.Event()

    # --------------------------------------------------------------- HTTP side

    def metrics(self) -> bytes:
        def fetch(child: Child) -> tuple[str, str]:
            status, text = _get(child.spec.url + "/metrics", 2.0)
            return str(child.spec.index), text if status == 200 else ""

        with ThreadPoolExecutor(max_workers=len(self.children) or 1) as pool:
            texts = dict(pool.map(fetch, self.children))
        return merge_metrics({k: v for k, v in texts.items() if v})

    def _poll(self) -> None:
        while not self._done.wait(POLL_S):
            for child in self.children:
                live, _ = _get(child.spec.url + "/healthz", 2.0)
                ready, body = _get(child.spec.url + "/readyz", 2.0)
                child.probe.record(live, ready, body.strip().replace("\n", "; "))

    # --------------------------------------------------------------- processes

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if not self._stopping:
            log.info("signal %d: stopping %d worker processes", signum, len(self.children))
        self._stop(signal.SIGTERM)

    def _stop(self, sig: int) -> None:
        """Ask every running child to stop; a second request makes them exit at once (their
        own second-signal handling)."""
        if not self._stopping:
            self._stopping = True
            # Each child ends itself within SHUTDOWN_GRACE_S; past that (and a margin) the
            # supervisor kills what is left.
            self._stop_deadline = time.monotonic() + self.settings.shutdown_grace_s + 10.0
        for child in self.children:
            if child.proc.poll() is None:
                try:
                    child.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def start(self) -> None:
        for spec in self.specs:
            spec.data_dir.mkdir(parents=True, exist_ok=True)
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                self.command,
                env=child_env(self.settings, spec, self.environ),
                # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which
                # forwards one SIGTERM (two signals would make a child exit at once).
                process_group=0,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - before any thread is started
            )
            self.children.append(Child(spec, proc))
            log.info(
                "started worker process %d (pid %d): data %s, HTTP %s",
                spec.index,
                proc.pid,
                spec.data_dir,
                spec.url,
            )

    def wait(self) -> int:
        """Until every child has ended; the supervisor's exit code."""
        failure: int | None = None
        codes: dict[int, int] = {}
        while len(codes) < len(self.children):
            for child in self.children:
                if child.spec.index in codes:
                    continue
                rc = child.proc.poll()
                if rc is None:
                    continue
                codes[child.spec.index] = rc
                if not self._stopping:
                    failure = exit_code_for(rc)
                    log.critical(
                        "worker process %d (pid %d) exited with %d; stopping the others, exit %d",
                        child.spec.index,
                        child.pid,
                        rc,
                        failure,
                        extra={"reason": f"worker process exited with {rc}"},
                    )
                    self._stop(signal.SIGTERM)
                else:
                    log.info(
                        "worker process %d (pid %d) exited with %d", child.spec.index, child.pid, rc
                    )
            deadline = self._stop_deadline
            if deadline is not None and time.monotonic() > deadline:
                for child in self.children:
                    if child.proc.poll() is None:
                        log.critical("worker process %d did not stop; killing it", child.spec.index)
                        child.proc.kill()
                        child.proc.wait()
                        codes[child.spec.index] = -signal.SIGKILL
                return failure if failure is not None else EXIT_FORCED
            time.sleep(0.1)
        if failure is not None:
            return failure
        # Stopped by a signal: 0 when every child stopped cleanly, else the first child's code.
        for index in sorted(codes):
            if codes[index] != 0:
                return exit_code_for(codes[index])
        return 0

    def run(self) -> int:
        # Bound before the children start: a port in use fails the start-up, not a probe later.
        server = FrontServer(
            self, self.settings.http_host, self.settings.http_port, self.settings.http_timeout_s
        )
        previous = {
            sig: signal.signal(sig, self._signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.start()
        except BaseException:
            self._stop(signal.SIGKILL)
            raise
        # Threads only after the children: preexec_fn is unsafe once other threads run.
        server.start()
        log.info(
            "serving /metrics, /healthz, /readyz for %d worker processes on http://%s:%d",
            len(self.children),
            self.settings.http_host,
            server.server_port,
        )
        poller = threading.Thread(target=self._poll, name="liverank-supervisor-poll", daemon=True)
        poller.start()
        try:
            return self.wait()
        finally:
            self._done.set()
            server.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def worker_command(loglevel: str | None) -> list[str]:
    """How a child worker is started: this interpreter, ``-m app worker``."""
    return [sys.executable, "-m", "app", "worker", *(["--loglevel", loglevel] if loglevel else [])]


def run_supervisor(
    settings: Settings,
    processes: int,
    environ: Mapping[str, str],
    loglevel: str | None = None,
    command: Sequence[str] | None = None,
) -> int:
    """Run ``processes`` worker processes (docs/operating.md, Scale); the exit code."""
    if processes > settings.partitions:
        log.warning(
            "%d worker processes for %d partitions: %d will hold no events partition",
            processes,
            settings.partitions,
            processes - settings.partitions,
        )
    supervisor = Supervisor(settings, processes, environ, command or worker_command(loglevel))
    return supervisor.run()
