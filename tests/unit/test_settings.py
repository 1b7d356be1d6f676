"""Settings: defaults, environment parsing, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings, SettingsError


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
