"""A local broker with a SASL_SSL listener: PLAIN and SCRAM logins over TLS, from both clients."""

from __future__ import annotations

import logging
import ssl
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer  # ships no py.typed
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # NewTopic: no explicit re-export
    AdminClient,
    NewTopic,
)

from app.dev.localkafka import BrokerSecurity, LocalKafka, LocalKafkaError, render_server_properties

pytestmark = pytest.mark.integration

# Quotes, backslashes, commas, brackets, '=' and non-ASCII: each one breaks a naive rendering
# of the JAAS config, the properties file or StorageTool's --add-scram argument.
PLAIN_USER, PLAIN_PASSWORD = "alice", 'pl"ain\\ pass é'
SCRAM_USER, SCRAM_PASSWORD = "bob.s-1", 'sc,ram=]"\\ é'
SECURITY = BrokerSecurity(
    plain_users={PLAIN_USER: PLAIN_PASSWORD},
    scram_users={SCRAM_USER: SCRAM_PASSWORD},
)
LOGINS = [
    ("PLAIN", PLAIN_USER, PLAIN_PASSWORD),
    ("SCRAM-SHA-256", SCRAM_USER, SCRAM_PASSWORD),
    ("SCRAM-SHA-512", SCRAM_USER, SCRAM_PASSWORD),
]

# librdkafka logs every failed login attempt to stderr; the tests look at error_cb instead.
_QUIET = logging.getLogger(f"{__name__}.librdkafka")
_QUIET.propagate = False
_QUIET.addHandler(logging.NullHandler())


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    kafka = LocalKafka(
        tmp_path_factory.mktemp("secure") / "kafka", security=SECURITY, startup_timeout=120.0
    )
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


def _client_config(kafka: LocalKafka, mechanism: str, user: str, password: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": kafka.sasl_ssl_bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": str(kafka.ca_path),
        "logger": _QUIET,
    }


def _create_topic(kafka: LocalKafka) -> str:
    topic = f"secure-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap}, logger=_QUIET)
    for future in admin.create_topics([NewTopic(topic, num_partitions=1)]).values():
        future.result(timeout=30)
    return topic


def _produce_one(config: dict[str, Any], topic: str, value: bytes) -> None:
    errors: list[KafkaError | None] = []
    producer = Producer({**config, "message.timeout.ms": 20000})
    producer.produce(topic, value=value, on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(30) == 0
    assert errors == [None]


def _consume_first(config: dict[str, Any], topic: str) -> bytes | None:
    consumer = Consumer({**config, "group.id": f"g-{topic}", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])  # no group rebalance to wait for
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                return message.value()
        return None
    finally:
        consumer.close()


@pytest.mark.parametrize(("mechanism", "user", "password"), LOGINS, ids=[m for m, _, _ in LOGINS])
def test_confluent_clients_over_sasl_ssl(
    secure_kafka: LocalKafka, mechanism: str, user: str, password: str
) -> None:
    config = _client_config(secure_kafka, mechanism, user, password)
    metadata = AdminClient(config).list_topics(timeout=20)
    advertised = [f"{b.host}:{b.port}" for b in metadata.brokers.values()]
    assert advertised == [secure_kafka.sasl_ssl_bootstrap]

    topic = _create_topic(secure_kafka)
    _produce_one(config, topic, mechanism.encode())
    assert _consume_first(config, topic) == mechanism.encode()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_wrong_password_is_an_authentication_error(
    secure_kafka: LocalKafka, mechanism: str
) -> None:
    user = PLAIN_USER if mechanism == "PLAIN" else SCRAM_USER
    errors: list[KafkaError] = []
    config = _client_config(secure_kafka, mechanism, user, "not-the-password")
    producer = Producer({**config, "error_cb": errors.append})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _auth_failed(errors):
        producer.poll(0.2)
    assert _auth_failed(errors), errors


def _auth_failed(errors: list[KafkaError]) -> bool:
    return any(e.code() == KafkaError._AUTHENTICATION for e in errors)


async def test_aiokafka_scram_sha_512_over_tls(secure_kafka: LocalKafka) -> None:
    topic = _create_topic(secure_kafka)
    producer = AIOKafkaProducer(
        bootstrap_servers=secure_kafka.sasl_ssl_bootstrap,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=SCRAM_USER,
        sasl_plain_password=SCRAM_PASSWORD,
        ssl_context=ssl.create_default_context(cafile=str(secure_kafka.ca_path)),
        request_timeout_ms=20000,
    )
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, b"from aiokafka")
    finally:
        await producer.stop()
    assert (metadata.topic, metadata.offset) == (topic, 0)


def test_passwords_stay_out_of_logs_and_world_readable_files(secure_kafka: LocalKafka) -> None:
    log = secure_kafka.log_path.read_text(encoding="utf-8", errors="replace")
    for password in (PLAIN_PASSWORD, SCRAM_PASSWORD):
        assert password not in log
        assert password not in repr(SECURITY)
    for path in (secure_kafka.properties_path, secure_kafka.keystore_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_restart_keeps_both_ports_certificates_and_users(secure_kafka: LocalKafka) -> None:
    # Runs last in this module: it restarts the shared broker (and leaves it running).
    before = (secure_kafka.bootstrap, secure_kafka.sasl_ssl_bootstrap)
    ca_before = secure_kafka.ca_path.read_bytes()
    topic = _create_topic(secure_kafka)
    config = _client_config(secure_kafka, "SCRAM-SHA-256", SCRAM_USER, SCRAM_PASSWORD)
    _produce_one(config, topic, b"before restart")

    secure_kafka.stop()
    secure_kafka.start()
    assert (secure_kafka.bootstrap, secure_kafka.sasl_ssl_bootstrap) == before
    assert secure_kafka.ca_path.read_bytes() == ca_before
    # A second handle on the data dir attaches to the running broker and finds both ports.
    attached = LocalKafka(secure_kafka.data_dir, security=SECURITY)
    attached.start()
    assert (attached.bootstrap, attached.sasl_ssl_bootstrap) == before
    assert _consume_first(config, topic) == b"before restart"


def test_scram_users_are_fixed_at_format_time(secure_kafka: LocalKafka) -> None:
    # start() makes this check before launching a stopped broker from a formatted data dir.
    secure_kafka._check_scram_users(SECURITY)
    with pytest.raises(LocalKafkaError, match="SCRAM users"):
        secure_kafka._check_scram_users(BrokerSecurity(scram_users={SCRAM_USER: "changed"}))


def test_security_config_rendering(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="user name"):
        BrokerSecurity(plain_users={"a b": "x"})
    with pytest.raises(ValueError, match="together"):
        render_server_properties(port=1, controller_port=2, log_dir=tmp_path, sasl_ssl_port=3)
    text = render_server_properties(
        port=1,
        controller_port=2,
        log_dir=tmp_path,
        sasl_ssl_port=3,
        security=BrokerSecurity(plain_users={"u": 'a"b\\c'}),
        keystore_path=tmp_path / "k.pem",
    )
    props = dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("#"))
    assert props["listeners"].endswith(",SASL_SSL://127.0.0.1:3")
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:1,SASL_SSL://127.0.0.1:3"
    # Two layers of escaping: JAAS quoting, then java.util.Properties.
    assert props["listener.name.sasl_ssl.plain.sasl.jaas.config"].endswith(
        'required user_u="a\\\\"b\\\\\\\\c";'
    )
