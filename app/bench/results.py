"""What a benchmark run measured, as plain dataclasses that round-trip through JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from app.bench.stats import LatencySummary

FIXED = "fixed"  # an open-loop run at a set rate
MAX = "max"  # the system kept busy by a standing backlog: its throughput ceiling


@dataclass(frozen=True, slots=True)
class StepResult:
    """One load level on one system: rates over the measured window, latency of the events
    scheduled in it, and resources per processed event."""

    system: str
    catalog_items: int
    step: str
    kind: str
    offered_eps: float
    achieved_eps: float
    kept_up: bool | None  # None for MAX steps (always backlogged by design)
    window_s: float
    events_in_window: int
    expected_records: int  # recommendations (pipe: copies) the window's events ask for
    records: int  # of those, found on the output topic
    degraded: int
    coalesced: int
    latency_ms: LatencySummary
    cpu_ms_per_event: float | None
    broker_cpu_ms_per_event: float | None
    loadgen_cpu_ms_per_event: float | None
    rss_mib: float | None
    peak_rss_mib: float | None
    generator_behind_ms: float
    drained: bool
    note: str = ""

    @property
    def unanswered(self) -> int:
        return max(0, self.expected_records - self.records)


@dataclass(frozen=True, slots=True)
class SystemResult:
    """One system (worker, naive baseline or pipe) over one catalog."""

    system: str
    catalog_items: int
    ready_s: float
    rss_ready_mib: float | None
    peak_rss_mib: float | None
    variant: str | None
    steps: list[StepResult]
    skipped_rates: list[float] = field(default_factory=list)
    log_path: str = ""
    error: str | None = None

    @property
    def max_eps(self) -> float | None:
        found = [s.achieved_eps for s in self.steps if s.kind == MAX]
        return max(found) if found else None

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.step == name), None)


@dataclass(frozen=True, slots=True)
class CatalogPrep:
    items: int
    generate_s: float
    publish_s: float
    topic: str


@dataclass(frozen=True, slots=True)
class Target:
    """A goal the benchmark checks; ``passed`` is None where it only reports a figure."""

    name: str
    measured: str
    passed: bool | None


@dataclass
class BenchResults:
    started_at: str
    wall_s: float
    machine: dict[str, Any]
    config: dict[str, Any]
    catalogs: list[CatalogPrep] = field(default_factory=list)
    systems: list[SystemResult] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def system(self, name: str, items: int) -> SystemResult | None:
        return next(
            (s for s in self.systems if s.system == name and s.catalog_items == items), None
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> BenchResults:
        def step(d: dict[str, Any]) -> StepResult:
            return StepResult(**{**d, "latency_ms": LatencySummary(**d["latency_ms"])})

        def system(d: dict[str, Any]) -> SystemResult:
            return SystemResult(**{**d, "steps": [step(s) for s in d["steps"]]})

        return cls(
            started_at=doc["started_at"],
            wall_s=doc["wall_s"],
            machine=doc["machine"],
            config=doc["config"],
            catalogs=[CatalogPrep(**c) for c in doc.get("catalogs", [])],
            systems=[system(s) for s in doc.get("systems", [])],
            targets=[Target(**t) for t in doc.get("targets", [])],
            notes=list(doc.get("notes", [])),
        )
