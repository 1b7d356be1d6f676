"""Integration fixtures: one real Kafka broker per session, a real worker per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.broker import resolve_bootstrap
from tests.integration.kafka_io import KafkaIO


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    servers, stop = resolve_bootstrap(tmp_path_factory.mktemp("broker"))
    try:
        yield servers
    finally:
        stop()


@pytest.fixture(scope="session")
def kafka(bootstrap: str) -> KafkaIO:
    return KafkaIO(bootstrap)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
