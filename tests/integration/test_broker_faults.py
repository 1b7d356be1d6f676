"""Faults that need a broker of the test's own: a broker restart mid-stream, and workers that
reach the broker only over SASL_SSL (SCRAM and PLAIN) without ever logging the password."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.settings import Secret
from app.dev.localkafka import BrokerSecurity, LocalKafka
from tests.integration.kafka_io import KafkaIO
from tests.integration.test_faults import (
    answered,
    answered_ids,
    check_states,
    interleaved_events,
    prepare_topics,
    produce,
    triggers_of,
    wait_for,
)
from tests.integration.worker_process import WorkerProcess, isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SCRAM_USER, SCRAM_PASSWORD = "liverank-scram", "scram-Pa55word-not-in-any-log"
PLAIN_USER, PLAIN_PASSWORD = "liverank-plain", "plain-Pa55word-not-in-any-log"
DOWN_S = 8.0


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker these tests may stop and start (never the session's shared one)."""
    if shutil.which("java") is None:
        pytest.skip("needs Java to run a broker of its own (restarted, with SASL_SSL)")
    kafka = LocalKafka(
        tmp_path_factory.mktemp("own-broker") / "kafka",
        security=BrokerSecurity(
            plain_users={PLAIN_USER: PLAIN_PASSWORD}, scram_users={SCRAM_USER: SCRAM_PASSWORD}
        ),
        startup_timeout=120.0,
    )
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


def test_a_broker_restart_mid_stream_loses_nothing_and_doubles_nothing(
    own_broker: LocalKafka, tmp_path: Path
) -> None:
    settings = isolated_settings(own_broker.bootstrap, tmp_path, partitions=4)
    kafka = KafkaIO(own_broker.bootstrap)
    prepare_topics(settings, kafka)
    events = interleaved_events(12_000, seed=13)
    first, second = events[:9_000], events[9_000:]
    produce(settings, first)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        wait_for(lambda: worker.metric("liverank_events_total") >= 1_500)
        before = int(worker.metric("liverank_events_total"))
        own_broker.stop()  # a clean broker shutdown, as in a rolling restart
        time.sleep(DOWN_S)
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
        own_broker.start()  # same data, same ports
        produce(settings, second)
        triggers = triggers_of(events)
        recs = answered(kafka, settings, triggers)
        wait_for(lambda: worker.metric("liverank_events_total") >= len(events))
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
        assert worker.stop() == 0
    finally:
        worker.stop()
    mismatched, lost, doubled = check_states(settings, events)
    seen = answered_ids(recs)
    print(
        f"\nbroker restart test: {len(events)} events; the broker went down for {DOWN_S:.0f} s "
        f"after {before} events; state mismatches {mismatched}, lost {lost}, applied twice "
        f"{doubled}, triggers without a recommendation {len(triggers - seen)}, "
        f"recommendations redelivered {len(recs) - len(seen)}"
    )
    assert (mismatched, lost, doubled) == (0, 0, 0)
    assert triggers <= seen


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_a_worker_over_sasl_ssl(own_broker: LocalKafka, tmp_path: Path, mechanism: str) -> None:
    """Everything the worker talks to Kafka with (faust's consumer and producer, the output,
    dead-letter and catalog clients, topic creation) goes through SASL_SSL with the CA."""
    user, password = (
        (SCRAM_USER, SCRAM_PASSWORD) if mechanism != "PLAIN" else (PLAIN_USER, PLAIN_PASSWORD)
    )
    secret_file = tmp_path / "sasl-password"
    secret_file.write_text(password + "\n", encoding="utf-8")
    # SCRAM reads the password from a file (a mounted Secret), PLAIN from the environment.
    password_setting: dict[str, object] = (
        {"sasl_password_file": str(secret_file)}
        if mechanism != "PLAIN"
        else {"sasl_password": Secret(password)}
    )
    settings = isolated_settings(
        own_broker.sasl_ssl_bootstrap,
        tmp_path,
        security_protocol="SASL_SSL",
        sasl_mechanism=mechanism,
        sasl_username=user,
        ssl_ca_file=str(own_broker.ca_path),
        **password_setting,
    )
    plain = KafkaIO(own_broker.bootstrap)  # the test's own reads and writes
    prepare_topics(settings, plain)
    events = interleaved_events(600, seed=17)
    produce(settings.replace(bootstrap_servers=own_broker.bootstrap), events)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        triggers = triggers_of(events)
        recs = answered(plain, settings, triggers)
        wait_for(lambda: worker.metric("liverank_events_total") >= len(events))
        assert worker.stop() == 0
    finally:
        worker.stop()
    mismatched, lost, doubled = check_states(settings, events)
    assert (mismatched, lost, doubled) == (0, 0, 0)
    assert triggers <= answered_ids(recs)
    log_text = (tmp_path / "worker.log").read_text(errors="replace")
    assert password not in log_text
    print(
        f"\nSASL_SSL {mechanism}: {len(events)} events, {len(triggers)} recommendations over "
        f"TLS; password in the worker log: {password in log_text}"
    )


def test_a_wrong_password_stops_the_worker_with_a_clear_error(
    own_broker: LocalKafka, tmp_path: Path
) -> None:
    settings = isolated_settings(
        own_broker.sasl_ssl_bootstrap,
        tmp_path,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=SCRAM_USER,
        sasl_password=Secret("wrong-password-also-never-logged"),
        ssl_ca_file=str(own_broker.ca_path),
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    started = time.monotonic()
    with pytest.raises(AssertionError, match="exited with 4"):
        worker.start(ready_timeout_s=90.0)
    log_text = (tmp_path / "worker.log").read_text(errors="replace")
    assert "wrong-password-also-never-logged" not in log_text
    assert f"cannot connect to Kafka: {own_broker.sasl_ssl_bootstrap} (SASL_SSL" in log_text
    assert "authentication failed" in log_text
    print(f"\nwrong SASL password: worker exited 4 after {time.monotonic() - started:.1f} s")
