"""A real worker with LOG_FORMAT=json: every line its Python logging writes, faust's included, is
one JSON object, and a dead letter's line carries the record's ids."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.codec import format_time_ms
from app.records import Item
from tests.integration.kafka_io import KafkaIO
from tests.integration.worker_process import isolated_settings, running_worker

pytestmark = pytest.mark.integration

CATALOG = [Item(f"jazz-{i}", f"Jazz album {i}", "jazz", tags=("jazz",)) for i in range(20)]


def _is_librdkafka(line: str) -> bool:
    # librdkafka writes its own log lines to stderr from C ("%4|1700000000.123|FAIL|..."): not
    # Python logging's.
    return line.startswith("%") and line[1:2].isdigit() and "|" in line


def test_a_json_worker_writes_only_json_lines(
    kafka: KafkaIO, bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(bootstrap, tmp_path, log_format="json")
    log_path = tmp_path / "worker.log"  # stdout and stderr together
    now = format_time_ms(time.time_ns() // 1_000_000)
    click = {
        "event_id": "e-click-1",
        "user_id": "u1",
        "type": "click",
        "item_id": "jazz-1",
        "event_time": now,
    }
    with running_worker(settings, kafka, CATALOG, log_path):
        kafka.produce(settings.topic_events, b"u1", b"{not json")
        bad = kafka.produce(
            settings.topic_events, b"u1", orjson.dumps({"event_id": "e-odd", "type": "teleport"})
        )
        kafka.produce(settings.topic_events, b"u1", orjson.dumps(click))
        kafka.read_until(settings.topic_recommendations, lambda recs: len(recs) >= 1)
        kafka.read_until(settings.topic_dead_letters, lambda recs: len(recs) >= 2)
    lines = log_path.read_text(encoding="utf-8").splitlines()
    ours = [line for line in lines if line.strip() and not _is_librdkafka(line)]
    parsed: list[dict[str, Any]] = []
    for line in ours:
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line in the worker's log: {line!r}")
        assert isinstance(doc, dict) and {"ts", "level", "logger", "msg"} <= set(doc), line
        assert doc["app_id"] == settings.app_id and doc["worker"] and doc["pid"], line
        parsed.append(doc)
    loggers = {doc["logger"] for doc in parsed}
    assert "app.worker" in loggers and "faust.worker" in loggers, loggers
    assert any(doc["msg"] == "[^Worker]: Ready" for doc in parsed)
    assert any(doc["msg"] == "[^Worker]: Closing event loop" for doc in parsed)  # a clean stop
    dead = [doc for doc in parsed if doc.get("error") == "unknown_type"]
    assert len(dead) == 1, dead
    assert dead[0]["level"] == "WARNING" and dead[0]["event_id"] == "e-odd"
    assert (dead[0]["topic"], dead[0]["partition"], dead[0]["offset"]) == (
        settings.topic_events,
        bad.partition,
        bad.offset,
    )
    assert any(doc.get("error") == "malformed_json" for doc in parsed)
