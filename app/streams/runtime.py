"""What a running worker holds: settings, catalog, scorer, processor, metrics, health and its
way out."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.core.catalog import Catalog
from app.core.processor import Processor
from app.core.settings import Settings
from app.ops.health import Health
from app.ops.metrics import Metrics
from app.streams.outputs import OutputProducer
from app.streams.shutdown import Shutdown
from app.streams.watermarks import DueIndex, Watermarks


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    catalog: Catalog
    processor: Processor
    metrics: Metrics
    health: Health
    outputs: OutputProducer
    watermarks: Watermarks
    shutdown: Shutdown
    # Attribution windows to close (the sweeper), by partition and user.
    due: DueIndex = field(default_factory=DueIndex)
