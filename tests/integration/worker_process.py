"""Runs a real ``liverank worker`` as a subprocess, configured only through LIVERANK_* variables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rocksdict import AccessType, Options, Rdict

from app.core.codec import encode_item
from app.core.records import Item
from app.core.settings import Settings
from app.dev.localkafka import pick_free_ports
from app.kafka.topics import create_topics
from tests.integration.kafka_io import KafkaIO

ROOT = Path(__file__).resolve().parents[2]


def isolated_settings(bootstrap: str, tmp: Path, **changes: object) -> Settings:
    """Settings with topic names, app id (group, changelog) and data dir of their own.

    The overload deadline is off: on a busy machine records wait in Kafka longer than any
    deadline, and the cheap path would answer them (``cheap-path``), so what a test
    sees would depend on the machine's speed. A test about the deadline turns it on itself."""
    tag = uuid.uuid4().hex[:8]
    base = Settings(bootstrap_servers=bootstrap).namespaced(
        f"it-{tag}",
        partitions=2,
        data_dir=tmp / "data",
        model_path=ROOT / "models" / "seqrank-1",
        http_port=pick_free_ports(1)[0],
        catalog_refresh_s=0.1,
        deadline_ms=0.0,
    )
    return base.replace(**changes)


class WorkerProcess:
    """A worker subprocess; its stderr (and stdout, unless ``stdout_path`` keeps it apart) goes
    to ``log_path``."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        loglevel: str = "info",
        stdout_path: Path | None = None,
        module: str = "app",
        env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.loglevel = loglevel
        self.stdout_path = stdout_path
        # ``python -m <module> worker``: tests.integration.faulty_worker injects faults.
        self.module = module
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def start(self, ready_timeout_s: float = 120.0) -> None:
        env = self.settings.child_environ(os.environ)
        env.update(self.env)
        with self.log_path.open("ab") as log:
            out = self.stdout_path.open("ab") if self.stdout_path is not None else None
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "worker", "--loglevel", self.loglevel],
                cwd=ROOT,
                env=env,
                stdout=out if out is not None else log,
                stderr=log if out is not None else subprocess.STDOUT,
            )
            if out is not None:
                out.close()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.3)
        raise AssertionError(f"worker not ready after {ready_timeout_s}s:\n{self.log_tail()}")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as resp:  # noqa: S310 - loopback
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, ""

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"worker did not stop within {timeout_s}s:\n{self.log_tail()}"
            ) from None

    def wait_exit(self, timeout_s: float = 120.0) -> int:
        """Wait for the worker to end by itself; its exit code."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker still running after {timeout_s}s:\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final commit, no flush; as when a node dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def metric(self, name: str) -> float:
        """The sum of a metric's samples (0 when the worker does not answer)."""
        status, text = self.get("/metrics")
        if status != 200:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith((name + "{", name + " "))
        )

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def run_command(
    argv: list[str], bootstrap: str, tmp: Path, timeout_s: float = 900.0
) -> subprocess.CompletedProcess[str]:
    """One of the project's commands (``scripts/demo``, ``python -m app.dev.drift``, ...) run to
    its end against the test broker: ``KAFKA_BOOTSTRAP_SERVERS`` set, so it starts none, and
    the isolated settings of :func:`isolated_settings` in its environment."""
    env = isolated_settings(bootstrap, tmp).child_environ(os.environ)
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    return subprocess.run(  # noqa: S603 - the project's own commands
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


@contextmanager
def _state_dbs(settings: Settings) -> Iterator[list[tuple[int, Rdict]]]:
    """A stopped worker's RocksDB files of the state table, read-only, with their partitions."""
    paths = sorted((settings.data_dir / "v1" / "tables").glob("user-state-*.db"))
    # Faust opens its stores in raw mode (plain bytes keys and values).
    opened = [
        (
            int(path.stem.rsplit("-", 1)[1]),
            Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only()),
        )
        for path in paths
    ]
    try:
        yield opened
    finally:
        for _, db in opened:
            db.close()


def read_states(settings: Settings) -> dict[bytes, bytes]:
    """Every user's stored state, read from a stopped worker's RocksDB files."""
    found: dict[bytes, bytes] = {}
    with _state_dbs(settings) as dbs:
        for _, db in dbs:
            for key, value in db.items():
                assert isinstance(key, bytes) and isinstance(value, bytes)
                if not key.startswith(b"__faust"):  # faust keeps its offsets here too
                    found[key] = value
    return found


def read_changelog_offsets(settings: Settings) -> dict[int, int]:
    """The newest changelog offset each RocksDB partition of a stopped worker says it holds
    (what faust's restore reads the changelog from), by partition."""
    with _state_dbs(settings) as dbs:
        offsets = {partition: db.get(b"__faust\0offset__") for partition, db in dbs}
    return {partition: int(value) for partition, value in offsets.items() if value is not None}


@contextmanager
def running_worker(
    settings: Settings, kafka: KafkaIO, catalog: Iterable[Item], log_path: Path
) -> Iterator[WorkerProcess]:
    """Topics created, ``catalog`` published, a worker started (and stopped afterwards)."""
    create_topics(settings)
    for item in catalog:
        kafka.produce(settings.topic_catalog, item.item_id.encode(), encode_item(item))
    proc = WorkerProcess(settings, log_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
