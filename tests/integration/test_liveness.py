"""A stopped worker never looks healthy, and never hangs on: an agent crash ends the process
(non-zero, the reason logged) and the restarted worker processes the partitions again; a hung
agent fails /healthz and /readyz; SIGTERM ends a worker whose agent is hung or whose event loop
is blocked within the grace period (issue 14). Faults come from
``tests.integration.faulty_worker``; no assertion depends on the machine's speed (every wait
polls for a condition, with a generous limit)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from app.core.settings import Settings
from app.streams.shutdown import EXIT_FAILED, EXIT_FORCED
from tests.integration.faulty_worker import FAULT_ONCE_FILE
from tests.integration.kafka_io import KafkaIO
from tests.integration.test_faults import (
    answered,
    interleaved_events,
    prepare_topics,
    produce,
    triggers_of,
)
from tests.integration.worker_process import WorkerProcess, isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]

# Far longer than the grace period: the process must be gone well before it, on any machine.
# Without the watchdog faust's clean stop waits for the dead agent's records for minutes.
EXIT_WITHIN_S = 90.0


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what} after {timeout_s:.0f} s"
        time.sleep(0.2)


def faulty(settings: Settings, tmp_path: Path, name: str) -> WorkerProcess:
    flag = tmp_path / f"{name}.fault"
    flag.touch()
    return WorkerProcess(
        settings,
        tmp_path / f"{name}.log",
        module="tests.integration.faulty_worker",
        env={FAULT_ONCE_FILE: str(flag)},
    )


@pytest.fixture
def settings(bootstrap: str, kafka: KafkaIO, tmp_path: Path) -> Iterator[Settings]:
    settings = isolated_settings(
        bootstrap,
        tmp_path,
        partitions=2,
        commit_interval_s=0.5,
        liveness_stall_s=3.0,
        shutdown_grace_s=5.0,
    )
    prepare_topics(settings, kafka)
    yield settings


def test_an_agent_crash_ends_the_process_and_the_restart_processes_the_partitions(
    settings: Settings, kafka: KafkaIO, tmp_path: Path
) -> None:
    events = interleaved_events(300, seed=51)
    before, after = events[:150], events[150:]
    worker = faulty(settings, tmp_path, "crash")
    worker.start()
    try:
        produce(settings, before)
        answered(kafka, settings, triggers_of(before))
        # The crash, then valid events behind it on every partition.
        produce(settings, after, hostile=[(b"u-fault", b"FAULT:crash")])
        code = worker.wait_exit(EXIT_WITHIN_S)
        log = worker.log_tail(400)
        assert code == EXIT_FAILED, log
        assert "the events agent crashed: RuntimeError: injected crash" in log
        assert '"level":"CRITICAL"' in log
    finally:
        worker.kill()

    # Restarted (the fault fires once): every partition is processed again, from the last
    # commit; the record that crashed the agent is an ordinary malformed one now.
    again = WorkerProcess(settings, tmp_path / "restarted.log")
    again.start()
    try:
        answered(kafka, settings, triggers_of(events))
        letters = kafka.read_until(
            settings.topic_dead_letters,
            lambda rs: any(b"malformed_json" in (r.value or b"") for r in rs),
            timeout_s=120,
        )
        assert any(orjson.loads(r.value or b"{}")["key_b64"] == "dS1mYXVsdA==" for r in letters)
    finally:
        assert again.stop() == 0
    print(
        f"\nagent crash: exit {code} with the reason logged; after a restart all "
        f"{len(triggers_of(events))} triggers answered, the crashing record dead-lettered"
    )


def test_a_hung_agent_is_not_live_nor_ready_and_sigterm_still_ends_it(
    settings: Settings, kafka: KafkaIO, tmp_path: Path
) -> None:
    worker = faulty(settings, tmp_path, "hang")
    worker.start()
    try:
        assert worker.get("/healthz")[0] == 200
        events = interleaved_events(100, seed=53)
        produce(settings, events, hostile=[(b"u-fault", b"FAULT:hang")])
        # Records wait, nothing is processed: after LIVENESS_STALL_S /healthz fails, and so
        # does /readyz (the event loop itself still turns: HTTP answers, metrics move).
        wait_until(lambda: worker.get("/healthz")[0] == 503, "failing /healthz")
        status, body = worker.get("/healthz")
        assert "no progress" in body, body
        assert worker.get("/readyz")[0] == 503
        assert worker.metric("liverank_ready") == 0.0
        progress = worker.metric("liverank_last_progress_timestamp_seconds")
        assert 0 < progress < time.time()
        # SIGTERM: faust's clean stop would wait for the hung agent's records; the watchdog
        # ends the process within the grace period.
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)
        code = worker.wait_exit(EXIT_WITHIN_S)
        assert code in (0, EXIT_FORCED), worker.log_tail()
    finally:
        worker.kill()
    print(f"\nhung agent: /healthz and /readyz 503 after the stall; SIGTERM: exit {code}")


def test_sigterm_ends_a_worker_whose_event_loop_is_blocked(
    settings: Settings, kafka: KafkaIO, tmp_path: Path
) -> None:
    worker = faulty(settings, tmp_path, "block")
    worker.start()
    try:
        produce(settings, interleaved_events(50, seed=57), hostile=[(b"u-fault", b"FAULT:block")])
        # A blocked loop stops the heartbeat; wait until the fault has surely fired (the flag
        # is gone) before the signal.
        flag = tmp_path / "block.fault"
        wait_until(lambda: not flag.exists(), "blocked")
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)
        code = worker.wait_exit(EXIT_WITHIN_S)
        assert code == EXIT_FORCED, worker.log_tail()
        assert "shutdown did not finish within 5 s" in worker.log_tail()
    finally:
        worker.kill()
    print(f"\nblocked event loop: SIGTERM ended the process (exit {code})")
