"""A real worker with LOG_FORMAT=json: every line its Python logging writes, faust's included, is
one JSON object on stderr, nothing else reaches stdout, and a dead letter's line carries the
record's ids."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.core.codec import encode_item, format_time_ms
from app.core.records import Item
from app.kafka.topics import create_topics
from tests.integration.kafka_io import KafkaIO
from tests.integration.worker_process import WorkerProcess, isolated_settings

pytestmark = pytest.mark.integration

CATALOG = [Item(f"jazz-{i}", f"Jazz album {i}", "jazz", tags=("jazz",)) for i in range(20)]


def _is_librdkafka(line: str) -> bool:
    # librdkafka writes its own lines to stderr from C ("%4|1700000000.123|FAIL|..."), not
    # through Python's logging.
    return line.startswith("%") and line[1:2].isdigit() and "|" in line


@pytest.mark.parametrize(
    ("loglevel", "event_loop"), [("info", "uvloop"), ("info", "asyncio"), ("warning", "uvloop")]
)
def test_a_json_worker_writes_only_json_lines(
    kafka: KafkaIO, bootstrap: str, tmp_path: Path, loglevel: str, event_loop: str
) -> None:
    settings = isolated_settings(bootstrap, tmp_path, log_format="json", event_loop=event_loop)
    create_topics(settings)
    for item in CATALOG:
        kafka.produce(settings.topic_catalog, item.item_id.encode(), encode_item(item))
    click = {
        "event_id": "e-click-1",
        "user_id": "u1",
        "type": "click",
        "item_id": "jazz-1",
        "event_time": format_time_ms(time.time_ns() // 1_000_000),
    }
    worker = WorkerProcess(
        settings, tmp_path / "stderr.log", loglevel=loglevel, stdout_path=tmp_path / "stdout.log"
    )
    worker.start()
    try:
        kafka.produce(settings.topic_events, b"u1", b"{not json")
        bad = kafka.produce(
            settings.topic_events, b"u1", orjson.dumps({"event_id": "e-odd", "type": "teleport"})
        )
        kafka.produce(settings.topic_events, b"u1", orjson.dumps(click))
        kafka.read_until(settings.topic_recommendations, lambda recs: len(recs) >= 1)
        kafka.read_until(settings.topic_dead_letters, lambda recs: len(recs) >= 2)
    finally:
        assert worker.stop() == 0
    assert (tmp_path / "stdout.log").read_bytes() == b""  # no banner, no spinner, no prints
    lines = worker.log_path.read_text(encoding="utf-8").splitlines()
    parsed: list[dict[str, Any]] = []
    for line in lines:
        if not line.strip() or _is_librdkafka(line):
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line in the worker's stderr: {line!r}")
        assert isinstance(doc, dict) and {"ts", "level", "logger", "msg"} <= set(doc), line
        assert doc["app_id"] == settings.app_id and doc["worker"] and doc["pid"], line
        parsed.append(doc)
    if loglevel == "info":
        loggers = {doc["logger"] for doc in parsed}
        assert "app.streams.worker" in loggers and "faust.worker" in loggers, loggers
        assert any(doc["msg"] == "[^Worker]: Ready" for doc in parsed)
        assert any(doc["msg"] == "[^Worker]: Closing event loop" for doc in parsed)
        # The loop that ran the worker is the one the setting chose.
        ready = [doc["msg"] for doc in parsed if doc["msg"].startswith("worker ready")]
        assert ready == [
            f"worker ready: recovery done, catalog and model loaded (event loop: {event_loop})"
        ], ready
    else:
        assert {doc["level"] for doc in parsed} <= {"WARNING", "ERROR", "CRITICAL"}, parsed
    dead = [doc for doc in parsed if doc.get("error") == "unknown_type"]
    assert len(dead) == 1, dead
    assert dead[0]["level"] == "WARNING" and dead[0]["event_id"] == "e-odd"
    assert (dead[0]["topic"], dead[0]["partition"], dead[0]["offset"]) == (
        settings.topic_events,
        bad.partition,
        bad.offset,
    )
    assert any(doc.get("error") == "malformed_json" for doc in parsed)
