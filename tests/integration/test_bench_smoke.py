"""``scripts/bench --smoke --two-processes --shadow`` against the session's broker: every system
(the worker, the worker with two processes, the worker with a shadow model, the like-for-like
naive loop, Quix Streams, the plain naive loop, the pipe) starts, takes a tiny
load and is measured, and the report is written, so the shipped benchmark cannot break
unnoticed (issue 14: it did not run at HEAD and nothing caught it). Its figures are not
checked: they depend on the machine. The first run makes .venv-quix (about a minute)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_runs_every_system(bootstrap: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVERANK_")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    done = subprocess.run(
        [
            str(ROOT / "scripts" / "bench"),
            "--smoke",
            "--two-processes",
            "--shadow",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    results = orjson.loads((tmp_path / "latest" / "results.json").read_bytes())
    systems = {s["system"]: s for s in results["systems"]}
    assert set(systems) == {
        "pipe",
        "liverank",
        "liverank-2p",
        "liverank-shadow",
        "naive-full",
        "quix",
        "naive",
    }, systems.keys()
    # The two-process worker is measured as its whole process tree: a supervisor and two
    # workers, each with the model and the catalog, hold more memory than one worker.
    assert systems["liverank-2p"]["rss_ready_mib"] > systems["liverank"]["rss_ready_mib"]
    # The shadow system really ranked with its shadow model: its cost is what it measures.
    shadow = systems["liverank-shadow"]["shadow_events"]
    assert shadow is not None and shadow["loaded"] == 1 and shadow["ranked"] > 0, shadow
    assert systems["liverank"]["shadow_events"] is None
    for system in results["systems"]:
        assert system["error"] is None, system
        assert {s["step"] for s in system["steps"]} == {"max", "50"}, system
        # Every system answered the fixed-rate level's events with recommendations (the
        # pipe: copies), however fast; a system that only dead-lettered them would have none.
        fixed = [s for s in system["steps"] if s["kind"] != "max"]
        assert fixed and all(s["records"] > 0 for s in fixed), fixed
    text = (tmp_path / "latest" / "results.md").read_text()
    assert "| target (medians) | measured | met |" in text
    assert "naive-full (like-for-like)" in text and "naive (plain)" in text
    print(f"\nbench smoke: {', '.join(systems)} ran in {results['wall_s']:.0f} s")
