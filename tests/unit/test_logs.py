"""Worker logs: JSON lines with ids and extras, or text; rate-limited dead-letter lines."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from app.core import log_budget
from app.core.catalog import Catalog
from app.core.codec import encode_event
from app.core.log_budget import LogBudget
from app.core.processor import Processor
from app.core.records import DeadLetterError, Event, Source
from app.core.scoring.gate import ModelSlot
from app.core.scoring.package import LoadedModel
from app.core.settings import Settings, SettingsError
from app.ops import logs
from app.ops.logs import JsonFormatter
from tests.conftest import T0

NO_STATE: dict[bytes, bytes] = {}

RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    """configure() replaces the root logger's handlers and level; put them back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    logging.captureWarnings(False)
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def emit() -> Callable[..., dict[str, object]]:
    """Format one record with the JSON formatter; return the parsed line."""
    formatter = JsonFormatter({"worker": "host-1", "pid": 7, "app_id": "liverank"})

    def make(
        msg: str, *args: object, level: int = logging.INFO, exc: bool = False, **extra: object
    ) -> dict[str, object]:
        logger = logging.getLogger("app.test")
        exc_info = None
        if exc:
            try:
                raise ValueError("boom")
            except ValueError:
                exc_info = sys.exc_info()
        record = logger.makeRecord(
            logger.name, level, "f.py", 1, msg, args, exc_info, extra=extra or None
        )
        line = formatter.format(record)
        assert "\n" not in line
        parsed: dict[str, object] = json.loads(line)
        return parsed

    return make


def test_a_json_line_has_the_fields(emit: Callable[..., dict[str, object]]) -> None:
    line = emit("connected to %d broker(s)", 3)
    assert list(line)[:4] == ["ts", "level", "logger", "msg"]
    assert RFC3339_MS_UTC.match(str(line["ts"])), line["ts"]
    assert line["level"] == "INFO" and line["logger"] == "app.test"
    assert line["msg"] == "connected to 3 broker(s)"
    assert (line["worker"], line["pid"], line["app_id"]) == ("host-1", 7, "liverank")
    assert "exc" not in line and "args" not in line and "levelno" not in line


def test_extras_come_out_under_their_own_names(emit: Callable[..., dict[str, object]]) -> None:
    line = emit(
        "dead letter",
        level=logging.WARNING,
        event_id="e-1",
        request_id="e-1",
        user_id="u1",
        topic="events",
        partition=2,
        offset=41,
        error="malformed_json",
        model_version="1.1.0",
    )
    assert line["level"] == "WARNING"
    assert {
        k: line[k] for k in ("event_id", "request_id", "user_id", "error", "model_version")
    } == {
        "event_id": "e-1",
        "request_id": "e-1",
        "user_id": "u1",
        "error": "malformed_json",
        "model_version": "1.1.0",
    }
    assert (line["topic"], line["partition"], line["offset"]) == ("events", 2, 41)


def test_exceptions_are_one_field(emit: Callable[..., dict[str, object]]) -> None:
    line = emit("it failed", level=logging.ERROR, exc=True)
    assert line["msg"] == "it failed"
    exc = str(line["exc"])
    assert exc.startswith("Traceback") and exc.endswith("ValueError: boom")


def test_values_json_cannot_encode_are_written_as_text(
    emit: Callable[..., dict[str, object]],
) -> None:
    line = emit("odd", error=DeadLetterError.OVERSIZE, key=b"u1", thing=object())
    assert line["error"] == "oversize"
    assert line["key"] == "dTE="  # bytes: base64
    assert str(line["thing"]).startswith("<object object")


def test_long_fields_are_cut(emit: Callable[..., dict[str, object]]) -> None:
    line = emit("x" * 100_000, reason="y" * 100_000)
    assert len(str(line["msg"])) < logs.MAX_FIELD_CHARS + 50
    assert str(line["reason"]).endswith("(97952 more chars)")


def test_configure_json_covers_every_logger(restore_root_logger: None) -> None:
    out = io.StringIO()
    logs.configure(Settings(app_id="shop"), "debug", stream=out)
    logging.getLogger("faust.worker").info("[^Worker]: Ready")
    logging.getLogger("aiokafka").debug("fetching %s", "x")
    logging.getLogger("app.core.processor").warning("dead letter", extra={"event_id": "e-9"})
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)  # as configure() left it (pytest's own capture undoes it)
        warnings.warn("careful", UserWarning, stacklevel=1)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["logger"] for line in lines] == [
        "faust.worker",
        "aiokafka",
        "app.core.processor",
        "py.warnings",
    ]
    assert all(line["app_id"] == "shop" for line in lines)
    assert lines[2]["event_id"] == "e-9"


def test_configure_level(restore_root_logger: None) -> None:
    out = io.StringIO()
    logs.configure(Settings(log_level="warning"), stream=out)
    logging.getLogger("app").info("not shown")
    logging.getLogger("app").warning("shown")
    assert [json.loads(line)["msg"] for line in out.getvalue().splitlines()] == ["shown"]


def test_text_format_is_text(restore_root_logger: None) -> None:
    out = io.StringIO()
    logs.configure(Settings(log_format="text"), stream=out)
    logging.getLogger("app.streams.worker").info("worker ready", extra={"event_id": "e-1"})
    line = out.getvalue().strip()
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.match(stamp + r" INFO app\.streams\.worker: worker ready$", line)


def test_faust_gets_the_same_configuration(restore_root_logger: None) -> None:
    """Faust's worker applies app.conf.logging_config with dictConfig when it starts, as mode's
    setup_logging does: the root logger must still write JSON afterwards."""
    from mode.utils.logging import setup_logging

    out = io.StringIO()
    settings = Settings()
    logs.configure(settings, stream=out)
    setup_logging(loglevel="info", logging_config=logs.logging_config(settings, stream=out))
    logging.getLogger("faust.worker").info("[^Worker]: Starting...")
    assert json.loads(out.getvalue())["msg"] == "[^Worker]: Starting..."


@pytest.mark.parametrize("value", ["json", "text", "JSON"])
def test_log_format_setting(value: str) -> None:
    assert Settings.from_env({"LIVERANK_LOG_FORMAT": value}).log_format == value


def test_default_log_format_is_json() -> None:
    assert Settings().log_format == "json"


def test_unknown_log_format_is_refused() -> None:
    with pytest.raises(SettingsError, match="log_format must be one of json, text"):
        Settings.from_env({"LIVERANK_LOG_FORMAT": "logfmt"})


def test_log_budget_is_per_key_and_counts_what_it_held_back() -> None:
    now = [0.0]
    budget = LogBudget(lines=2, window_s=10.0, clock=lambda: now[0])
    assert [budget.take("oversize") for _ in range(5)] == [0, 0, None, None, None]
    assert budget.take("malformed_json") == 0  # another kind has its own budget
    now[0] = 9.9
    assert budget.take("oversize") is None
    now[0] = 10.0
    assert [budget.take("oversize") for _ in range(3)] == [4, 0, None]


# What the processor logs: ids on dead letters, state resets, recommendations; never payloads.


@pytest.fixture
def processor(music_catalog: Catalog, model: LoadedModel, settings: Settings) -> Processor:
    return Processor(music_catalog, model.ranker, model.spec, settings, clock=lambda: T0 + 500)


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "app.core.processor" and r.levelno == level]


def test_a_dead_letter_is_logged_with_its_ids_and_not_its_payload(
    processor: Processor, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "4111-1111-1111-1111" * 10
    bad = orjson.dumps({"event_id": "e-bad", "type": "teleport", "card": secret})
    records = [(b"not json", Source("events", 3, 17, b"u1")), (bad, Source("events", 3, 18, b"u1"))]
    with caplog.at_level(logging.INFO, logger="app.core.processor"):
        result = processor.handle_batch(records, NO_STATE.get)
    assert [o.status for o in result.outcomes] == ["dead_letter", "dead_letter"]
    first, second = _records(caplog, logging.WARNING)
    line = json.loads(JsonFormatter().format(first))
    assert line["level"] == "WARNING" and line["logger"] == "app.core.processor"
    assert (line["topic"], line["partition"], line["offset"]) == ("events", 3, 17)
    assert line["error"] == "malformed_json" and "event_id" not in line
    assert line["msg"].startswith("dead letter (malformed_json) from events[3]@17: ")
    line = json.loads(JsonFormatter().format(second))
    assert (line["error"], line["event_id"], line["offset"]) == ("unknown_type", "e-bad", 18)
    assert secret not in JsonFormatter().format(second)


def test_a_decoded_event_that_is_dead_lettered_has_its_event_and_user_ids(
    processor: Processor, caplog: pytest.LogCaptureFixture, event_factory: Callable[..., Event]
) -> None:
    event = event_factory("click", user_id="u2", item_id="jazz-0")
    with caplog.at_level(logging.INFO, logger="app.core.processor"):
        processor.handle(encode_event(event), Source("events", 0, 5, b"u1"), NO_STATE.get)
    (record,) = _records(caplog, logging.WARNING)
    line = json.loads(JsonFormatter().format(record))
    assert line["error"] == "key_mismatch"
    assert (line["event_id"], line["user_id"], line["offset"]) == (event.event_id, "u2", 5)


def test_dead_letter_lines_are_rate_limited_per_error_kind(
    processor: Processor, caplog: pytest.LogCaptureFixture
) -> None:
    flood = [
        (b"{", Source("events", 0, i, b"u1")) for i in range(3 * log_budget.DEAD_LETTER_LOG_LINES)
    ]
    other = [(b"[]", Source("events", 0, len(flood), b"u1"))]
    with caplog.at_level(logging.INFO, logger="app.core.processor"):
        result = processor.handle_batch(flood + other, NO_STATE.get)
    assert all(o.status == "dead_letter" for o in result.outcomes)  # every one is dead-lettered
    errors = [getattr(r, "error", None) for r in _records(caplog, logging.WARNING)]
    assert errors == ["malformed_json"] * log_budget.DEAD_LETTER_LOG_LINES + ["not_an_object"]


def test_a_recommendation_is_logged_at_debug_with_its_request_id(
    processor: Processor, caplog: pytest.LogCaptureFixture, event_factory: Callable[..., Event]
) -> None:
    event = event_factory("click", item_id="jazz-0")
    with caplog.at_level(logging.DEBUG, logger="app.core.processor"):
        outcome = processor.handle(encode_event(event), Source("events", 1, 9, b"u1"), NO_STATE.get)
    assert outcome.recommendation is not None
    (record,) = _records(caplog, logging.DEBUG)
    line = json.loads(JsonFormatter().format(record))
    assert line["event_id"] == line["request_id"] == event.event_id
    assert (line["user_id"], line["partition"], line["offset"]) == ("u1", 1, 9)
    assert line["model_version"] == outcome.recommendation.model_version
    assert line["kind"] == "next_items" and line["degraded"] is False


def test_no_recommendation_lines_above_debug(
    processor: Processor, caplog: pytest.LogCaptureFixture, event_factory: Callable[..., Event]
) -> None:
    event = event_factory("click", item_id="jazz-0")
    with caplog.at_level(logging.INFO, logger="app.core.processor"):
        processor.handle(encode_event(event), Source("events", 1, 9, b"u1"), NO_STATE.get)
    assert not [r for r in caplog.records if r.name == "app.core.processor"]


def test_a_state_reset_is_logged_with_the_user_and_the_record(
    processor: Processor, caplog: pytest.LogCaptureFixture, event_factory: Callable[..., Event]
) -> None:
    event = event_factory("view", item_id="jazz-0")
    with caplog.at_level(logging.INFO, logger="app.core.processor"):
        outcome = processor.handle(
            encode_event(event), Source("events", 2, 40, b"u1"), {b"u1": b'{"v": 0}'}.get
        )
    assert outcome.state_reset
    (record,) = _records(caplog, logging.WARNING)
    line = json.loads(JsonFormatter().format(record))
    assert (line["user_id"], line["event_id"], line["partition"], line["offset"]) == (
        "u1",
        event.event_id,
        2,
        40,
    )
    assert line["error"]


def test_a_rejected_model_is_logged_with_its_versions(
    model: LoadedModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.core.scoring"):
        result = ModelSlot(model).offer(tmp_path / "missing")
    assert not result.accepted
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    line = json.loads(JsonFormatter().format(record))
    assert line["serving_version"] == model.spec.version and line["model_version"] is None
    assert line["model_path"] == str(tmp_path / "missing") and line["error"] == result.reason
