"""Announce a model package on the model-updates topic, after checking it here first."""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import Producer

from app.core.codec import ModelUpdate, encode_model_update
from app.core.scoring.gate import check_candidate
from app.core.settings import Settings
from app.kafka.kafka_config import client_config


def publish_model(settings: Settings, path: Path, note: str | None = None) -> ModelUpdate:
    """Run the gate every worker will run (on the CPU, FP32), then announce the package.

    Raises ``ModelContractError`` (nothing announced) for a package the workers would refuse.
    """
    folder = path.resolve()
    model = check_candidate(folder, variant="fp32", device="cpu")
    update = ModelUpdate(
        name=model.spec.name,
        version=model.spec.version,
        path=str(folder),
        published_ms=time.time_ns() // 1_000_000,
        note=note,
    )
    producer = Producer(client_config(settings, {"acks": "all", "enable.idempotence": True}))
    producer.produce(
        settings.topic_model_updates, key=update.name.encode(), value=encode_model_update(update)
    )
    if producer.flush(30):
        raise RuntimeError(f"model update not delivered to {settings.topic_model_updates}")
    return update
