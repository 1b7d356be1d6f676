"""Two worker processes in one pod (``PROCESSES=2``) against the real broker: both join the
group and take partitions, every triggering event is answered, SIGTERM stops everything with
exit 0, and a worker that dies takes the supervisor down with a non-zero exit."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import uuid
from pathlib import Path

import orjson
import pytest

from app.core.codec import encode_item, format_time_ms
from app.core.records import Item
from app.core.settings import Settings
from app.kafka.topics import create_topics
from app.streams.shutdown import EXIT_FAILED
from app.streams.supervisor import layout
from tests.integration.kafka_io import KafkaIO, Record
from tests.integration.worker_process import WorkerProcess, isolated_settings

pytestmark = pytest.mark.integration

CATALOG = [
    Item(f"{cat}-{i}", f"{cat.title()} {i}", cat, tags=(cat,), popularity=float(i + 1))
    for i in range(20)
    for cat in ("jazz", "rock")
]
# Generous: two workers start on a busy 2-core machine; nothing here depends on speed.
READY_S = 300.0


def free_port_run(count: int) -> int:
    """A port ``p`` with ``p`` .. ``p + count - 1`` all free now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no run of free ports")


def pids(worker: WorkerProcess) -> dict[int, int]:
    """Process index -> pid, from the supervisor's /readyz."""
    _, body = worker.get("/readyz")
    return {int(i): int(p) for i, p in re.findall(r"process (\d+) \(pid (\d+)\)", body)}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(condition: object, timeout_s: float, what: str, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{worker.log_tail()}")


def lag_partitions_by_process(worker: WorkerProcess, topic: str) -> dict[str, set[str]]:
    """Events partitions each process reports holding (its consumer lag samples)."""
    status, text = worker.get("/metrics")
    held: dict[str, set[str]] = {}
    if status != 200:
        return held
    for line in text.splitlines():
        if line.startswith("liverank_consumer_lag_records{") and f'topic="{topic}"' in line:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            held.setdefault(labels["process"], set()).add(labels["partition"])
    return held


@pytest.fixture(scope="module")
def settings(bootstrap: str, module_tmp: Path, kafka: KafkaIO) -> Settings:
    s = isolated_settings(bootstrap, module_tmp, processes=2, http_port=free_port_run(3))
    create_topics(s)
    for item in CATALOG:
        kafka.produce(s.topic_catalog, item.item_id.encode(), encode_item(item))
    return s


def send_clicks(kafka: KafkaIO, settings: Settings, users: int) -> list[str]:
    ids = []
    for u in range(users):
        user = f"user-{u}"
        doc: dict[str, str | dict[str, str]] = {
            "event_id": f"{user}-{uuid.uuid4().hex[:10]}",
            "user_id": user,
            "type": "click",
            "item_id": f"jazz-{u % 20}",
            "event_time": format_time_ms(time.time_ns() // 1_000_000),
            "context": {"device": "web"},
        }
        kafka.produce(settings.topic_events, user.encode(), orjson.dumps(doc))
        ids.append(str(doc["event_id"]))
    return ids


def test_two_processes_share_the_partitions_and_answer_every_event(
    settings: Settings, kafka: KafkaIO, module_tmp: Path
) -> None:
    worker = WorkerProcess(settings, module_tmp / "supervisor.log")
    worker.start(ready_timeout_s=READY_S)
    try:
        children = pids(worker)
        assert sorted(children) == [0, 1]
        ids = send_clicks(kafka, settings, users=40)
        wanted = set(ids)

        def answered(records: list[Record]) -> bool:
            return wanted <= {orjson.loads(r.value or b"{}")["event_id"] for r in records}

        records = kafka.read_until(settings.topic_recommendations, answered, timeout_s=READY_S)
        assert wanted <= {orjson.loads(r.value or b"{}")["event_id"] for r in records}
        # Both processes are group members holding one events partition each (2 partitions).
        wait_for(
            lambda: set(lag_partitions_by_process(worker, settings.topic_events)) == {"0", "1"},
            READY_S,
            "both processes to report an events partition",
            worker,
        )
        held = lag_partitions_by_process(worker, settings.topic_events)
        assert held["0"].isdisjoint(held["1"]) and held["0"] | held["1"] == {"0", "1"}
        # Each kept its state in its own directory.
        for spec in layout(settings, 2):
            assert (spec.data_dir / "v1" / "tables").is_dir()
        assert worker.stop(timeout_s=120) == 0
        assert not any(alive(pid) for pid in children.values())
    finally:
        worker.kill()


def test_a_dead_process_stops_the_supervisor_with_an_error(
    settings: Settings, module_tmp: Path
) -> None:
    worker = WorkerProcess(settings, module_tmp / "supervisor-kill.log")
    worker.start(ready_timeout_s=READY_S)
    try:
        children = pids(worker)
        os.kill(children[1], signal.SIGKILL)
        assert worker.wait_exit(timeout_s=120) == EXIT_FAILED
        assert not alive(children[0])
    finally:
        worker.kill()
