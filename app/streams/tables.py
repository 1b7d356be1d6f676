"""The Faust tables: per-user state, keyed by user_id like the events topic."""

from __future__ import annotations

import faust
from faust.types import TableT

from app.core.settings import Settings
from app.kafka.topics import USER_STATE_TABLE


def user_state_table(app: faust.App, settings: Settings) -> TableT[bytes, bytes]:
    """Raw bytes in and out: ``app.core.state`` owns the encoding.

    The changelog has the events topic's partition count and a user's value is written while
    processing that user's event, so the value lands on the same partition number: the table is
    co-partitioned with the events topic, and a user's state lives with the worker that owns
    their events.
    """
    return app.Table(
        USER_STATE_TABLE,
        default=None,
        partitions=settings.partitions,
        # Serialized with the app-wide "raw" key/value serializers (app.streams.main).
        key_type=bytes,
        value_type=bytes,
    )
