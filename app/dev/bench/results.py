"""What a benchmark run measured, as plain dataclasses that round-trip through JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from app.dev.bench.stats import LatencySummary, Spread, spread

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
    repeat: int = 0  # which round of the interleaved levels (0 first)

    @property
    def unanswered(self) -> int:
        return max(0, self.expected_records - self.records)


@dataclass(frozen=True, slots=True)
class LevelSummary:
    """One load level of one system over its repeats: medians with their min-max spread."""

    system: str
    catalog_items: int
    step: str
    kind: str
    runs: int
    sustained: int  # runs that kept up (FIXED levels)
    offered_eps: Spread
    achieved_eps: Spread
    p50_ms: Spread
    p95_ms: Spread
    p99_ms: Spread
    max_ms: Spread
    cpu_ms_per_event: Spread
    broker_cpu_ms_per_event: Spread
    rss_mib: Spread
    records: int
    unanswered: int
    degraded: int

    @property
    def kept_up(self) -> bool:
        """Sustained in most of its runs (a FIXED level)."""
        return self.kind == FIXED and 2 * self.sustained > self.runs


def summarize_level(steps: list[StepResult]) -> LevelSummary:
    """The repeats of one level (same system, catalog and step name) summarized."""
    first = steps[0]
    lat = [s.latency_ms for s in steps]
    return LevelSummary(
        system=first.system,
        catalog_items=first.catalog_items,
        step=first.step,
        kind=first.kind,
        runs=len(steps),
        sustained=sum(bool(s.kept_up) for s in steps),
        offered_eps=spread([s.offered_eps for s in steps]),
        achieved_eps=spread([s.achieved_eps for s in steps]),
        p50_ms=spread([x.p50 for x in lat]),
        p95_ms=spread([x.p95 for x in lat]),
        p99_ms=spread([x.p99 for x in lat]),
        max_ms=spread([x.max for x in lat]),
        cpu_ms_per_event=spread([s.cpu_ms_per_event for s in steps]),
        broker_cpu_ms_per_event=spread([s.broker_cpu_ms_per_event for s in steps]),
        rss_mib=spread([s.rss_mib for s in steps]),
        records=sum(s.records for s in steps),
        unanswered=sum(s.unanswered for s in steps),
        degraded=sum(s.degraded for s in steps),
    )


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
    # A worker with a shadow model: events the shadow ranked and skipped over the whole run
    # (its liverank_shadow_events_total), read before it stopped.
    shadow_events: dict[str, float] | None = None

    @property
    def max_eps(self) -> float | None:
        """The median of the ``max`` level's runs."""
        return spread([s.achieved_eps for s in self.steps if s.kind == MAX]).median

    def step(self, name: str) -> StepResult | None:
        """The first run of level ``name``."""
        return next((s for s in self.steps if s.step == name), None)

    def level(self, name: str) -> LevelSummary | None:
        """Every run of level ``name``, summarized."""
        runs = [s for s in self.steps if s.step == name]
        return summarize_level(runs) if runs else None

    def levels(self) -> list[LevelSummary]:
        """Each level summarized: max first, then by offered load."""
        names: dict[str, None] = dict.fromkeys(s.step for s in self.steps)
        found = [summarize_level([s for s in self.steps if s.step == n]) for n in names]
        return sorted(found, key=lambda lv: (lv.kind != MAX, lv.offered_eps.median or 0.0))


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
