"""Settings: defaults, environment parsing, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.settings import Secret, Settings, SettingsError
from app.kafka.kafka_config import LIBRDKAFKA_LOG, client_config, faust_credentials, sasl_password


def test_defaults_are_valid() -> None:
    s = Settings()
    assert s.processing_guarantee == "at_least_once"
    assert s.candidates >= s.top_k


def test_from_env_converts_types() -> None:
    s = Settings.from_env(
        {
            "LIVERANK_PARTITIONS": "12",
            "LIVERANK_AFFINITY_HALF_LIFE_S": "60.5",
            "LIVERANK_DATA_DIR": "/var/lib/liverank",
            "LIVERANK_TOPIC_EVENTS": "shop.events",
            "PATH": "/usr/bin",
        }
    )
    assert s.partitions == 12
    assert s.affinity_half_life_s == 60.5
    assert s.data_dir == Path("/var/lib/liverank")
    assert s.topic_events == "shop.events"


def test_unknown_variable_is_an_error() -> None:
    with pytest.raises(SettingsError, match="LIVERANK_PARTITONS"):
        Settings.from_env({"LIVERANK_PARTITONS": "3"})


def test_bad_number_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="LIVERANK_TOP_K"):
        Settings.from_env({"LIVERANK_TOP_K": "ten"})


@pytest.mark.parametrize(
    "changes",
    [
        {"partitions": 0},
        {"top_k": 50, "candidates": 10},
        {"processing_guarantee": "maybe"},
        {"processing_guarantee": "exactly_once"},
        {"batch_max_events": 0},
        {"batch_wait_ms": -1.0},
        {"deadline_ms": -5.0},
        {"commit_interval_s": 0.0},
        {"model_device": "tpu"},
        {"log_level": "verbose"},
        {"posting_limit": 0},
        {"security_protocol": "TLS"},
        {"security_protocol": "SASL_SSL"},  # no user
        {"security_protocol": "SASL_SSL", "sasl_username": "u"},  # no password
        {
            "security_protocol": "SASL_SSL",
            "sasl_username": "u",
            "sasl_password": Secret("p"),
            "sasl_password_file": "/run/secrets/p",  # both
        },
        {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_username": "u",
            "sasl_password": Secret("p"),
            "sasl_mechanism": "GSSAPI",
        },
        {"security_protocol": "SSL", "ssl_cert_file": "c.pem"},  # no key
        {"standby_replicas": -1},
        {"max_event_age_s": -1.0},
        {"dead_letter_max_bytes": 10},
        {"event_loop": "trio"},
    ],
)
def test_invalid_values_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(SettingsError):
        Settings(**changes)  # type: ignore[arg-type]


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.partitions = 3  # type: ignore[misc]
    assert s.replace(partitions=3).partitions == 3


def test_secrets_never_show_when_settings_are_printed_or_tabled() -> None:
    s = Settings.from_env(
        {
            "LIVERANK_SECURITY_PROTOCOL": "SASL_SSL",
            "LIVERANK_SASL_USERNAME": "svc-liverank",
            "LIVERANK_SASL_PASSWORD": "hunter2-secret",
            "LIVERANK_SSL_KEY_PASSWORD": "key-secret",
        }
    )
    shown = repr(s) + str(s) + s.markdown_table() + f"{s.sasl_password}"
    assert "hunter2-secret" not in shown and "key-secret" not in shown
    assert s.sasl_password.get() == "hunter2-secret"
    # A child process gets them back exactly (tests and benchmarks start workers this way).
    assert Settings.from_env(s.to_env()) == s
    assert "hunter2-secret" not in repr(faust_credentials(s))


def test_sasl_ssl_client_configuration(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n", encoding="utf-8")
    s = Settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="svc",
        sasl_password_file=str(secret),
        ssl_ca_file="/etc/ca.pem",
        ssl_check_hostname=False,
    )
    assert sasl_password(s) == "from-a-file"
    config = client_config(s, {"acks": "all"})
    assert config == {
        "bootstrap.servers": s.bootstrap_servers,
        "security.protocol": "sasl_ssl",
        "sasl.mechanisms": "SCRAM-SHA-256",
        "sasl.username": "svc",
        "sasl.password": "from-a-file",
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.endpoint.identification.algorithm": "none",
        "logger": LIBRDKAFKA_LOG,
        "acks": "all",
    }
    missing = s.replace(sasl_password_file=str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match="absent"):
        client_config(missing)


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert client_config(Settings()) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "plaintext",
        # librdkafka's log lines go through Python logging (JSON in a pod).
        "logger": LIBRDKAFKA_LOG,
    }
    assert faust_credentials(Settings()) is None
