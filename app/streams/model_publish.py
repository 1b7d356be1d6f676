"""Announce a model package on the model-updates topic, after checking it here first."""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import Producer

from app.core.codec import SERVING, SHADOW, ModelUpdate, encode_model_update, model_update_key
from app.core.scoring.gate import check_candidate
from app.core.settings import Settings
from app.kafka.kafka_config import client_config


def publish_model(
    settings: Settings, path: Path, note: str | None = None, role: str = SERVING
) -> ModelUpdate:
    """Run the gate every worker will run (on the CPU, FP32), then announce the package.

    ``role``: serving (workers switch to it) or shadow (workers score with it beside the
    serving model and measure it live, serving nothing from it; announcing the shadow's version
    as serving later promotes it). Raises ``ModelContractError`` (nothing announced) for a
    package the workers would refuse.
    """
    folder = path.resolve()
    model = check_candidate(folder, variant="fp32", device="cpu")
    update = ModelUpdate(
        name=model.spec.name,
        version=model.spec.version,
        path=str(folder),
        published_ms=time.time_ns() // 1_000_000,
        note=note,
        role=role,
    )
    _send(settings, model_update_key(update.name, role), encode_model_update(update))
    return update


def retire_shadow(settings: Settings, name: str) -> None:
    """A tombstone on the model's shadow key: workers stop scoring with its shadow (and, once
    the topic is compacted, a restarted worker finds none)."""
    _send(settings, model_update_key(name, SHADOW), None)


def _send(settings: Settings, key: bytes, value: bytes | None) -> None:
    producer = Producer(client_config(settings, {"acks": "all", "enable.idempotence": True}))
    producer.produce(settings.topic_model_updates, key=key, value=value)
    if producer.flush(30):
        raise RuntimeError(f"model update not delivered to {settings.topic_model_updates}")
