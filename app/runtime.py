"""What a running worker holds: settings, catalog, scorer, processor, metrics, health and its
way out."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.catalog import Catalog
from app.health import Health
from app.metrics import Metrics
from app.outputs import OutputProducer
from app.processor import Processor
from app.settings import Settings
from app.shutdown import Shutdown
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
    shutdown: Shutdown
    # Attribution windows to close (the sweeper), by partition and user.
    due: DueIndex = field(default_factory=DueIndex)
