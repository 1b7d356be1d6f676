"""The systems under test as child processes: the liverank worker, the like-for-like naive loop,
the Quix Streams application, the plain naive baseline and the pipe."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from app.core.settings import ENV_PREFIX, Settings
from app.dev.bench.kafka_io import group_assigned

ROOT = Path(__file__).resolve().parents[3]

WORKER = "liverank"
# The same worker with PROCESSES=2 (app/streams/supervisor.py): the scaling from one process
# to two, opt-in (--two-processes).
WORKER_2P = "liverank-2p"
# The same worker scoring every batch with a shadow model too (app/core/shadow.py): what shadow
# scoring costs, opt-in (--shadow).
WORKER_SHADOW = "liverank-shadow"
NAIVE_FULL = "naive-full"  # a per-event loop doing the worker's own work (app.dev.bench.naive_full)
QUIX = "quix"  # the worker's own work in a Quix Streams application (app.dev.bench.quix_app)
NAIVE = "naive"  # the plain per-event loop (app.dev.bench.naive): less work than the worker's
PIPE = "pipe"
SYSTEMS = (WORKER, WORKER_2P, WORKER_SHADOW, NAIVE_FULL, QUIX, NAIVE, PIPE)
WORKERS = (WORKER, WORKER_2P, WORKER_SHADOW)
LABELS = {
    WORKER_2P: "liverank (2 processes)",
    WORKER_SHADOW: "liverank (with a shadow)",
    NAIVE_FULL: "naive-full (like-for-like)",
    NAIVE: "naive (plain)",
}
QUIX_PYTHON = ROOT / ".venv-quix" / "bin" / "python"


def label_of(system: str) -> str:
    """How the report names a system.

    >>> label_of("naive"), label_of("liverank")
    ('naive (plain)', 'liverank')
    """
    return LABELS.get(system, system)


class StartError(RuntimeError):
    """A system under test exited or did not become ready."""


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as its ``LIVERANK_*`` variable, so the worker sees exactly ``settings``."""
    return settings.to_env()


def parse_env_pairs(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings to a dict; keys without the ``LIVERANK_`` prefix get it.

    >>> parse_env_pairs(["batch_max_events=64", "LIVERANK_BATCH_WAIT_MS=2"])
    {'LIVERANK_BATCH_MAX_EVENTS': '64', 'LIVERANK_BATCH_WAIT_MS': '2'}
    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE, got {pair!r}")
        key = key.strip().upper()
        out[key if key.startswith(ENV_PREFIX) else ENV_PREFIX + key] = value
    return out


def apply_env(settings: Settings, overrides: Mapping[str, str]) -> Settings:
    """``settings`` with ``LIVERANK_*`` overrides, checked as the worker would check them."""
    merged = {**settings_env(settings), **overrides}
    return Settings.from_env(merged)


class SystemProcess(Protocol):
    """A process under test, started by the benchmark or running already."""

    name: str
    log_path: Path

    @property
    def pid(self) -> int: ...

    def start(self, timeout_s: float, progress: Callable[[str], None] | None = None) -> float: ...

    def alive(self) -> bool: ...

    def stop(self, timeout_s: float = 60.0) -> int | None: ...

    def log_tail(self, lines: int = 40) -> str: ...


@dataclass
class AttachedProcess:
    """A worker someone else started (``--attach-pid``): measured, never started or stopped."""

    name: str
    attached_pid: int
    ready: Callable[[], bool]
    log_path: Path = Path("/dev/null")

    @property
    def pid(self) -> int:
        return self.attached_pid

    def start(self, timeout_s: float, progress: Callable[[str], None] | None = None) -> float:
        """Wait until it says it is ready (it was started elsewhere, so no start-up time)."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if not self.alive():
                raise StartError(f"no process with pid {self.attached_pid}")
            if time.monotonic() > deadline:
                raise StartError(f"{self.name} (pid {self.attached_pid}) is not ready")
            time.sleep(0.25)
        return 0.0

    def alive(self) -> bool:
        return Path(f"/proc/{self.attached_pid}").exists()

    def stop(self, timeout_s: float = 60.0) -> int | None:
        return None

    def log_tail(self, lines: int = 40) -> str:
        return f"(pid {self.attached_pid} was attached; its log is wherever it was started)"


@dataclass
class ChildProcess:
    """A system under test running as a child process, with its log in a file."""

    name: str
    argv: list[str]
    log_path: Path
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    proc: subprocess.Popen[bytes] | None = None
    _started: float = 0.0

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise StartError(f"{self.name} is not started")
        return self.proc.pid

    def start(self, timeout_s: float, progress: Callable[[str], None] | None = None) -> float:
        """Start and wait until ready; returns the seconds that took."""
        self.launch()
        return self.wait_ready(timeout_s, progress)

    def launch(self) -> None:
        """Start the process without waiting (systems start side by side)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout_s: float, progress: Callable[[str], None] | None = None) -> float:
        """Wait until the launched process is ready; returns the seconds since its launch."""
        if self.proc is None:
            raise StartError(f"{self.name} is not started")
        started = self._started
        next_note = time.monotonic() + 15.0
        while True:
            if self.proc.poll() is not None:
                raise StartError(
                    f"{self.name} exited with {self.proc.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if self.ready():
                return time.monotonic() - started
            now = time.monotonic()
            if now - started > timeout_s:
                self.stop()
                raise StartError(
                    f"{self.name} not ready after {timeout_s:g} s; last lines of "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            if progress is not None and now > next_note:
                progress(f"  {self.name} still starting ({now - started:.0f} s)")
                next_note = now + 15.0
            time.sleep(0.25)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback probe
            return bool(resp.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


# The baseline is a single-threaded loop: BLAS's own threads would spin between its small
# per-event products and take CPU from the broker and the load generator on a small machine.
SINGLE_THREADED_BLAS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(extra)
    return env


def readyz(settings: Settings) -> Callable[[], bool]:
    """Whether the worker of ``settings`` answers 200 on /readyz."""
    url = f"http://{settings.http_host}:{settings.http_port}/readyz"
    return lambda: _http_ok(url)


def worker_process(
    settings: Settings, log_path: Path, proc_env: Mapping[str, str] | None = None
) -> ChildProcess:
    """``python -m app worker`` configured only through ``LIVERANK_*`` variables (plus
    ``proc_env``, e.g. thread-count variables, verbatim)."""
    env = _env(proc_env or {})
    env.update(settings_env(settings))
    return ChildProcess(
        name=WORKER,
        argv=[sys.executable, "-m", "app", "worker"],
        log_path=log_path,
        ready=readyz(settings),
        env=env,
    )


def _ready_file(path: Path) -> Callable[[], bool]:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return path.exists


def naive_process(
    settings: Settings, variant: str, workdir: Path, proc_env: Mapping[str, str] | None = None
) -> ChildProcess:
    ready = workdir / "ready"
    return ChildProcess(
        name=NAIVE,
        argv=[
            sys.executable,
            "-m",
            "app.dev.bench.naive",
            "--bootstrap",
            settings.bootstrap_servers,
            "--group",
            settings.app_id,
            "--events",
            settings.topic_events,
            "--catalog",
            settings.topic_catalog,
            "--recommendations",
            settings.topic_recommendations,
            "--feedback",
            settings.topic_feedback,
            "--model",
            str(settings.model_path),
            "--variant",
            variant,
            "--threads",
            str(settings.onnx_threads),
            "--data-dir",
            str(workdir / "data"),
            "--ready-file",
            str(ready),
        ],
        log_path=workdir / "naive.log",
        ready=_ready_file(ready),
        env=_env({**SINGLE_THREADED_BLAS, **(proc_env or {})}),
    )


def naive_full_process(
    settings: Settings, workdir: Path, proc_env: Mapping[str, str] | None = None
) -> ChildProcess:
    """The like-for-like per-event loop, configured exactly as the worker (``LIVERANK_*``)."""
    ready = workdir / "ready"
    env = _env(proc_env or {})
    env.update(settings_env(settings))
    return ChildProcess(
        name=NAIVE_FULL,
        argv=[sys.executable, "-m", "app.dev.bench.naive_full", "--ready-file", str(ready)],
        log_path=workdir / "naive-full.log",
        ready=_ready_file(ready),
        env=env,
    )


def quix_process(
    settings: Settings,
    workdir: Path,
    python: Path = QUIX_PYTHON,
    proc_env: Mapping[str, str] | None = None,
) -> ChildProcess:
    """The Quix Streams application in its own virtualenv, configured as the worker. Ready once
    it has loaded and its consumer group holds the events topic's partitions."""
    ready = workdir / "ready"
    loaded = _ready_file(ready)
    bootstrap, group, topic = settings.bootstrap_servers, settings.app_id, settings.topic_events
    env = _env(proc_env or {})
    env.update(settings_env(settings))
    return ChildProcess(
        name=QUIX,
        argv=[str(python), "-m", "app.dev.bench.quix_app", "--ready-file", str(ready)],
        log_path=workdir / "quix.log",
        ready=lambda: loaded() and group_assigned(bootstrap, group, topic),
        env=env,
    )


def pipe_process(settings: Settings, workdir: Path) -> ChildProcess:
    """Copies the events topic into the recommendations topic (LogAppendTime: latency reads)."""
    ready = workdir / "ready"
    return ChildProcess(
        name=PIPE,
        argv=[
            sys.executable,
            "-m",
            "app.dev.bench.pipe",
            "--bootstrap",
            settings.bootstrap_servers,
            "--group",
            settings.app_id,
            "--source",
            settings.topic_events,
            "--sink",
            settings.topic_recommendations,
            "--ready-file",
            str(ready),
        ],
        log_path=workdir / "pipe.log",
        ready=_ready_file(ready),
        env=_env({}),
    )


_VARIANT_LINE = re.compile(r"model \S+ \S+ \((\w+)\) loaded")


def worker_variant(log_text: str) -> str | None:
    """The ranker variant a worker says it loaded, from its log.

    >>> worker_variant("... INFO app.streams.worker: model seqrank 1.0.0 (int8) loaded from m")
    'int8'
    """
    found = _VARIANT_LINE.search(log_text)
    return found.group(1) if found else None
