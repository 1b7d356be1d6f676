"""librdkafka configuration derived from settings, shared by every confluent-kafka client."""

from __future__ import annotations

from collections.abc import Mapping

from app.settings import Settings

ConfigValue = str | int | float | bool


def client_config(
    settings: Settings, extra: Mapping[str, ConfigValue] | None = None
) -> dict[str, ConfigValue]:
    """Connection settings for librdkafka plus the client-specific ``extra`` keys."""
    config: dict[str, ConfigValue] = {"bootstrap.servers": settings.bootstrap_servers}
    config.update(extra or {})
    return config
