"""What a running worker holds: settings, catalog, scorer, processor, metrics and health."""

from __future__ import annotations

from dataclasses import dataclass, field

from faust.types import EventT

from app.catalog import Catalog
from app.health import Health
from app.metrics import Metrics
from app.outputs import OutputProducer
from app.processor import Processor
from app.settings import Settings
from app.watermarks import DueIndex, Watermarks


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    catalog: Catalog
    processor: Processor
    metrics: Metrics
    health: Health
    outputs: OutputProducer
    watermarks: Watermarks
    # Attribution windows to close (the sweeper), and a record of each partition seen, which
    # the sweeper names to write that partition's state outside stream iteration.
    due: DueIndex = field(default_factory=DueIndex)
    partition_events: dict[int, EventT[bytes]] = field(default_factory=dict)
