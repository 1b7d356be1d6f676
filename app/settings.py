"""The one frozen settings object, read from ``LIVERANK_*`` environment variables at start-up."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "LIVERANK_"


class SettingsError(ValueError):
    """A ``LIVERANK_*`` variable could not be turned into a valid setting."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker can be configured with; each field maps to ``LIVERANK_<NAME>``."""

    app_id: str = "liverank"
    bootstrap_servers: str = "127.0.0.1:9092"
    # Topics: names and partition counts. Events, recommendations and feedback share a
    # partition count so that per-user state, keyed like the events topic, stays co-partitioned.
    topic_events: str = "liverank.events.v1"
    topic_catalog: str = "liverank.catalog.v1"
    topic_recommendations: str = "liverank.recommendations.v1"
    topic_feedback: str = "liverank.feedback.v1"
    topic_dead_letters: str = "liverank.dead-letters.v1"
    partitions: int = 4
    catalog_partitions: int = 1
    replication_factor: int = 1
    processing_guarantee: str = "at_least_once"
    data_dir: Path = Path(".liverank-data")
    model_path: Path = Path("models/default/model.onnx")
    onnx_threads: int = 1
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # User state bounds: they keep one user's RocksDB value small whatever the user does.
    history_size: int = 50
    recent_event_ids: int = 64
    max_query_terms: int = 16
    max_purchased: int = 200
    max_affinities: int = 32
    affinity_half_life_s: float = 6 * 3600.0
    # Ranking.
    top_k: int = 10
    candidates: int = 200
    # Input limits.
    max_event_bytes: int = 16 * 1024
    # Catalog follower: how often a changed catalog is re-indexed, and how long start-up may wait.
    catalog_refresh_s: float = 0.2
    catalog_preload_timeout_s: float = 120.0
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.processing_guarantee not in {"at_least_once", "exactly_once"}:
            raise SettingsError(
                "processing_guarantee must be 'at_least_once' or 'exactly_once', "
                f"got {self.processing_guarantee!r}"
            )
        for name in (
            "partitions",
            "catalog_partitions",
            "replication_factor",
            "onnx_threads",
            "history_size",
            "recent_event_ids",
            "max_query_terms",
            "max_purchased",
            "max_affinities",
            "top_k",
            "candidates",
            "max_event_bytes",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.candidates < self.top_k:
            raise SettingsError(
                f"candidates ({self.candidates}) must be at least top_k ({self.top_k})"
            )
        if self.affinity_half_life_s <= 0:
            raise SettingsError("affinity_half_life_s must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from ``LIVERANK_*`` variables; unknown ones are an error, not ignored.

        >>> Settings.from_env({"LIVERANK_PARTITIONS": "8"}).partitions
        8
        """
        known = {f.name: f for f in fields(cls)}
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name not in known:
                raise SettingsError(f"unknown setting {key}")
            values[name] = _convert(key, raw, hints[name])
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (settings are frozen)."""
        return dataclasses.replace(self, **changes)

    def as_table(self) -> list[tuple[str, str, str]]:
        """(variable, type, default) rows, used to keep README.md's configuration table true."""
        hints = get_type_hints(type(self))
        rows = []
        for f in fields(self):
            rows.append((ENV_PREFIX + f.name.upper(), _type_name(hints[f.name]), str(f.default)))
        return rows


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(key: str, raw: str, tp: Any) -> Any:
    try:
        if tp is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
        if tp is Path:
            return Path(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{key}: {exc}") from exc
