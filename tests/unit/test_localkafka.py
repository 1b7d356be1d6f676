"""Unit tests for the pure parts of app/dev/localkafka.py (no JVM, no Maven, no broker)."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import pytest

from app.dev import localkafka
from app.dev.localkafka import (
    DEFAULT_VERSION,
    LocalKafka,
    LocalKafkaError,
    classpath_cache_key,
    fetch_classpath,
    generate_cluster_id,
    maven_artifacts,
    pick_free_ports,
    port_is_free,
    render_log4j_properties,
    render_pom,
    render_server_properties,
)


def _props(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert key not in out, f"duplicate key {key}"
            out[key] = value
    return out


def test_server_properties_kraft_combined_on_loopback(tmp_path: Path) -> None:
    props = _props(
        render_server_properties(port=19092, controller_port=19093, log_dir=tmp_path / "logs")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert set(props["listener.security.protocol.map"].split(",")) == {
        "CONTROLLER:PLAINTEXT",
        "PLAINTEXT:PLAINTEXT",
    }
    assert props["log.dirs"] == str(tmp_path / "logs")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "num.partitions",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    # Faust creates its changelog/repartition topics itself but relies on auto-creation too.
    assert props["auto.create.topics.enable"] == "true"
    assert "zookeeper.connect" not in props


def test_log4j_properties_log_to_console_with_quiet_request_logger() -> None:
    text = render_log4j_properties()
    assert "log4j.rootLogger=INFO, stdout" in text
    assert "org.apache.log4j.ConsoleAppender" in text
    assert "log4j.logger.kafka.request.logger=WARN" in text
    assert render_log4j_properties("WARN").count("log4j.rootLogger=WARN") == 1


def test_pom_lists_kafka_and_slf4j_binding() -> None:
    pom = render_pom("3.9.1")
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert "<version>3.9.1</version>" in pom
    assert "<artifactId>slf4j-reload4j</artifactId>" in pom
    assert "<version>1.7.36</version>" in pom
    assert maven_artifacts("3.9.1")[0] == "org.apache.kafka:kafka_2.13:3.9.1"


def test_classpath_cache_key_is_stable_and_version_specific() -> None:
    key = classpath_cache_key(DEFAULT_VERSION)
    assert key == classpath_cache_key(DEFAULT_VERSION)
    assert len(key) == 16 and int(key, 16) >= 0
    assert key != classpath_cache_key("3.9.0")


def _write_cache(cache_dir: Path, version: str, key: str, jars: list[Path]) -> Path:
    cp_file = cache_dir / version / "classpath.txt"
    cp_file.parent.mkdir(parents=True)
    cp_file.write_text(
        f"# liverank localkafka classpath key={key}\n{':'.join(map(str, jars))}\n",
        encoding="utf-8",
    )
    return cp_file


def test_fetch_uses_cache_without_maven(tmp_path: Path) -> None:
    jars = [tmp_path / "kafka_2.13-3.9.1.jar", tmp_path / "kafka-clients-3.9.1.jar"]
    for jar in jars:
        jar.write_bytes(b"PK")
    _write_cache(tmp_path / "cache", "3.9.1", classpath_cache_key("3.9.1"), jars)
    got = fetch_classpath("3.9.1", tmp_path / "cache", mvn="definitely-not-maven")
    assert got == jars


@pytest.mark.parametrize("problem", ["missing-jar", "stale-key"])
def test_fetch_ignores_invalid_cache(tmp_path: Path, problem: str) -> None:
    jar = tmp_path / "kafka_2.13-3.9.1.jar"
    key = classpath_cache_key("3.9.1")
    if problem == "missing-jar":
        jars = [jar]  # never created
    else:
        jar.write_bytes(b"PK")
        jars = [jar]
        key = "0" * 16
    _write_cache(tmp_path / "cache", "3.9.1", key, jars)
    # With the cache rejected it must go to Maven, which is absent here.
    with pytest.raises(LocalKafkaError, match="Maven"):
        fetch_classpath("3.9.1", tmp_path / "cache", mvn="definitely-not-maven")


def test_pick_free_ports_distinct_and_bindable() -> None:
    ports = pick_free_ports(3)
    assert len(set(ports)) == 3
    assert all(port_is_free(p) for p in ports)
    excluded = pick_free_ports(1, exclude=ports)
    assert excluded[0] not in ports


def test_port_is_free_detects_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])


def test_cluster_id_is_kafka_uuid() -> None:
    for _ in range(200):
        cid = generate_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_ports_are_reused_from_previous_config(tmp_path: Path) -> None:
    port, cport = pick_free_ports(2)
    data = tmp_path / "kafka"
    data.mkdir()
    (data / "server.properties").write_text(
        render_server_properties(port=port, controller_port=cport, log_dir=data / "logs"),
        encoding="utf-8",
    )
    kafka = LocalKafka(data)
    kafka._choose_ports()
    assert kafka.bootstrap == f"127.0.0.1:{port}"
    assert kafka._controller_port == cport


def test_requested_port_in_use_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        kafka = LocalKafka(tmp_path / "kafka", port=sock.getsockname()[1])
        with pytest.raises(LocalKafkaError, match="in use"):
            kafka._choose_ports()


def test_not_running_state_is_idempotent(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path / "kafka")
    assert not kafka.is_running()
    assert kafka.pid is None
    with pytest.raises(LocalKafkaError):
        _ = kafka.bootstrap
    kafka.stop()
    kafka.stop()


def test_stale_pid_file_is_ignored(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    data.mkdir()
    # PID 1 exists but is not a broker for this data dir.
    (data / "kafka.pid").write_text("1\n", encoding="ascii")
    kafka = LocalKafka(data)
    assert kafka.pid is None
    kafka.stop()
    assert not (data / "kafka.pid").exists()


def test_wipe_refuses_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(LocalKafkaError, match="refusing"):
        LocalKafka(tmp_path).wipe()
    assert (tmp_path / "precious.txt").exists()


def test_cli_parses_commands() -> None:
    parser = localkafka._build_parser()
    args = parser.parse_args(["start", "--data-dir", "some/dir", "--port", "9092", "--fresh"])
    assert args.command == "start" and args.port == 9092 and args.fresh
    assert args.data_dir == Path("some/dir")
    assert parser.parse_args(["stop"]).data_dir == Path(".kafka")
