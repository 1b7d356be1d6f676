"""A small ML-100K replay through a real worker: every event answered, the model beats the
streaming co-occurrence baseline on the same events."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.settings import Settings
from app.dev.replay.data import load_dataset
from app.dev.replay.pacing import THINK, Pace
from app.dev.replay.report import render_markdown
from app.dev.replay.run import ReplayConfig, run_replay
from app.training.movielens import DatasetUnavailable

pytestmark = pytest.mark.integration

USERS, LAST = 300, 12


def test_replay_through_a_live_worker(bootstrap: str, tmp_path: Path) -> None:
    try:
        dataset = load_dataset("ml-100k")  # fetched once into ~/.cache (as scripts/demo does)
    except DatasetUnavailable as exc:
        pytest.skip(f"ML-100K is not available here: {exc}")
    config = ReplayConfig(
        data="ml-100k",
        # Closed loop: each user's next click only after the worker answered the previous one,
        # so what is judged does not depend on how fast this machine is (no backlog, no
        # batch that holds two of a user's events). The deadline is off for the same reason.
        pace=Pace(THINK, 0.0),
        limit_users=USERS,
        last_events=LAST,
        worker_env={"LIVERANK_DEADLINE_MS": "0"},
        work_dir=tmp_path / "work",
        idle_timeout_s=60.0,
        command="tests/integration/test_replay.py",
    )
    result = run_replay(config, Settings(bootstrap_servers=bootstrap), environ={}, dataset=dataset)
    report = render_markdown(result)
    counts = result.scores.counts
    assert counts.events == USERS * LAST, report
    assert counts.answered == counts.events, report  # every event got its recommendation
    assert counts.missing == counts.dead_letters == counts.degraded == 0, report
    assert result.timed_out_waits == 0, report
    live, cooccurrence, popularity = result.scores.systems
    assert live.all.events == USERS * (LAST - 1) and live.missing == 0, report
    assert live.last.events == live.second_last.events == USERS, report
    assert live.all.hr > cooccurrence.all.hr, report
    assert live.all.hr > popularity.all.hr, report
    assert result.worker_settings["LIVERANK_DEADLINE_MS"] == "0.0", report
