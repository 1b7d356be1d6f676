"""Pick the Kafka broker for the integration tests: env, then Docker, then a local JVM broker."""

from __future__ import annotations

import gc
import os
import pathlib
import sys
import warnings
from collections.abc import Callable

from app.dev.localkafka import LocalKafka

KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.1"
ENV_BOOTSTRAP = "KAFKA_BOOTSTRAP_SERVERS"


def _noop() -> None:
    return None


def _log(message: str) -> None:
    print(f"[broker] {message}", file=sys.stderr, flush=True)


def docker_available() -> bool:
    """True if a Docker engine answers a ping right now (fails fast when there is none)."""
    # A failed connect leaves docker-py's socket unclosed; its ResourceWarning would become
    # an error under pytest's filterwarnings=error, so collect it here with warnings off.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            client = docker.from_env(timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # any failure just means "no usable Docker"
            return False
        finally:
            gc.collect()


def _start_container() -> tuple[str, Callable[[], None]]:
    """testcontainers' ``KafkaContainer`` in KRaft mode.

    ``KafkaContainer`` drives the Confluent images (its start script calls
    /etc/confluent/docker/*); Confluent Platform 7.9 ships Apache Kafka 3.9.
    """
    from testcontainers.community.kafka import KafkaContainer

    container = KafkaContainer(KAFKA_IMAGE).with_kraft()
    _log(f"starting {KAFKA_IMAGE} (Apache Kafka 3.9) with testcontainers")
    try:
        container.start()
    except BaseException:
        container.stop()
        raise
    return container.get_bootstrap_server(), container.stop


def resolve_bootstrap(tmp_root: pathlib.Path) -> tuple[str, Callable[[], None]]:
    """Bootstrap servers for the test session and a callable that releases the broker.

    1. ``KAFKA_BOOTSTRAP_SERVERS`` if set (an external broker; stopping is a no-op).
    2. testcontainers' ``KafkaContainer`` (Kafka 3.9) if a Docker engine answers.
    3. A local JVM broker from app/dev/localkafka.py with its data under ``tmp_root``.
    """
    external = os.environ.get(ENV_BOOTSTRAP, "").strip()
    if external:
        _log(f"using {ENV_BOOTSTRAP}={external}")
        return external, _noop
    if docker_available():
        try:
            return _start_container()
        except Exception as exc:  # e.g. the image cannot be pulled; the JVM broker still works
            _log(f"Docker broker failed ({exc!r}); falling back to a local Kafka broker")
    else:
        _log("no Docker engine; starting a local Kafka broker (JVM)")
    kafka = LocalKafka(tmp_root / "kafka", startup_timeout=120.0)
    bootstrap = kafka.start()
    return bootstrap, kafka.stop
