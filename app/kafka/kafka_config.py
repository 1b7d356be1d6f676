"""Kafka client configuration derived from settings: librdkafka's, and faust's credentials."""

from __future__ import annotations

import logging
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import faust
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from faust.types.auth import CredentialsT

from app.core.partitioning import Partitioner
from app.core.settings import Settings, SettingsError

ConfigValue = str | int | float | bool | logging.Logger

# librdkafka's own log lines (connection errors, retries) go through Python logging, so that a
# pod's log stays one JSON object per line; confluent-kafka hands them over on poll().
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


def sasl_password(settings: Settings) -> str:
    """The SASL password, from ``sasl_password`` or read from ``sasl_password_file``."""
    if not settings.sasl_password_file:
        return settings.sasl_password.get()
    path = Path(settings.sasl_password_file)
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        # The error names the file, never its content.
        raise SettingsError(f"sasl_password_file {path}: {exc.strerror}") from None


# librdkafka's send queue, per producer: when it is full, produce() raises BufferError and the
# caller waits for the broker (back-pressure), instead of buffering up to its default 1 GiB.
PRODUCER_QUEUE: dict[str, ConfigValue] = {
    "queue.buffering.max.messages": 100_000,
    "queue.buffering.max.kbytes": 64 * 1024,
}


def reader_config(
    settings: Settings, purpose: str, extra: Mapping[str, ConfigValue] | None = None
) -> dict[str, ConfigValue]:
    """A consumer that reads a topic by itself, from the start, outside any group's offsets:
    a throwaway group id (``<app id>-<purpose>-<random>``), nothing ever committed."""
    return client_config(
        settings,
        {
            "group.id": f"{settings.app_id}-{purpose}-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **(extra or {}),
        },
    )


# Errors that refuse one record for its size (librdkafka's message.max.bytes, or the topic's
# max.message.bytes at the broker): a smaller record in its place can still go.
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})


def too_large(error: KafkaError) -> bool:
    """Whether ``error`` refused a record for its size."""
    return error.code() in _TOO_LARGE


class RecordRefused(RuntimeError):
    """librdkafka refused to queue a record (:func:`too_large` says whether for its size)."""

    def __init__(self, topic: str, error: KafkaError) -> None:
        super().__init__(f"{topic}: {error.str()}")
        self.topic = topic
        self.error = error


def produce_waiting(producer: Producer, topic: str, wait_s: float = 0.05, **record: Any) -> None:
    """``producer.produce(topic, **record)``; while librdkafka's bounded queue is full, let it
    deliver (serving callbacks) for ``wait_s`` and retry: back-pressure, not an error. Any other
    refusal raises :class:`RecordRefused`."""
    while True:
        try:
            producer.produce(topic, **record)
            return
        except BufferError:
            producer.poll(wait_s)
        except KafkaException as exc:
            raise RecordRefused(topic, exc.args[0]) from None


def keyed_by_user(settings: Settings) -> dict[str, str]:
    """Producer settings that place user-keyed records where the events contract says
    (``PARTITIONER``), so that a user's events land on the partition that holds their state."""
    return {"partitioner": Partitioner(settings.partitioner).librdkafka}


def admin_client(settings: Settings) -> AdminClient:
    """An AdminClient with the connection settings (its logger passed as the keyword that
    confluent-kafka's type hints expect)."""
    config = client_config(settings)
    plain = {k: v for k, v in config.items() if not isinstance(v, logging.Logger)}
    return AdminClient(plain, logger=config["logger"])


class KafkaUnavailable(RuntimeError):
    """The brokers refused us (credentials, TLS) or did not answer; the message says which."""


# Errors no retry will fix: wrong credentials, a certificate we do not trust.
_FATAL = {KafkaError._AUTHENTICATION: "authentication failed", KafkaError._SSL: "TLS failed"}


def check_connection(settings: Settings, timeout_s: float = 60.0) -> int:
    """Log in and read the cluster's metadata once; returns the number of brokers.

    Bad credentials or an untrusted certificate raise :class:`KafkaUnavailable` at once, with
    librdkafka's reason: every client would otherwise retry them forever while the pod looks
    merely slow to start.
    """
    fatal: list[str] = []
    lock = threading.Lock()

    def on_error(error: KafkaError) -> None:
        if error.code() in _FATAL:
            with lock:
                fatal.append(f"{_FATAL[error.code()]}: {error.str()}")

    config: dict[str, Any] = {**client_config(settings), "error_cb": on_error}
    admin = AdminClient(config)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            brokers = len(admin.list_topics(timeout=1.0).brokers)
            if brokers:
                return brokers
        except KafkaException as exc:
            last = exc
        admin.poll(0)  # error_cb runs only from poll()
        with lock:
            if fatal:
                raise KafkaUnavailable(f"{_who(settings)}: {fatal[0]}")
    raise KafkaUnavailable(
        f"no broker at {settings.bootstrap_servers} answered within {timeout_s:.0f} s ({last})"
    )


def _who(settings: Settings) -> str:
    """Where and as whom we connect (never with what password)."""
    how = settings.security_protocol
    if settings.uses_sasl:
        how += f", {settings.sasl_mechanism} as {settings.sasl_username!r}"
    return f"{settings.bootstrap_servers} ({how})"


def client_config(
    settings: Settings, extra: Mapping[str, ConfigValue] | None = None
) -> dict[str, ConfigValue]:
    """Connection settings for librdkafka plus the client-specific ``extra`` keys."""
    config: dict[str, ConfigValue] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol.lower(),
        "logger": LIBRDKAFKA_LOG,
    }
    if settings.uses_sasl:
        config["sasl.mechanisms"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username
        config["sasl.password"] = sasl_password(settings)
    if settings.uses_ssl:
        if settings.ssl_ca_file:
            config["ssl.ca.location"] = settings.ssl_ca_file
        if settings.ssl_cert_file:
            config["ssl.certificate.location"] = settings.ssl_cert_file
            config["ssl.key.location"] = settings.ssl_key_file
            if settings.ssl_key_password:
                config["ssl.key.password"] = settings.ssl_key_password.get()
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if settings.ssl_check_hostname else "none"
        )
    config.update(extra or {})
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context faust's (aiokafka's) connections use, from the same settings."""
    context = ssl.create_default_context(cafile=settings.ssl_ca_file or None)
    if settings.ssl_cert_file:
        context.load_cert_chain(
            settings.ssl_cert_file,
            settings.ssl_key_file,
            password=settings.ssl_key_password.get() or None,
        )
    if not settings.ssl_check_hostname:
        context.check_hostname = False
    return context


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """faust's ``broker_credentials`` for the configured security protocol (None: plaintext)."""
    if settings.uses_sasl:
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=sasl_password(settings),
            ssl_context=ssl_context(settings) if settings.uses_ssl else None,
            mechanism=settings.sasl_mechanism,
        )
    if settings.uses_ssl:
        return faust.SSLCredentials(ssl_context(settings))
    return None
