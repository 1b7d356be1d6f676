"""``scripts/demo``, the README's first command, end to end and small: it creates the topics,
publishes a catalog, starts a real worker against the test broker, plays traffic and prints the
latency summary that README.md quotes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.worker_process import ROOT, run_command

pytestmark = pytest.mark.integration

SUMMARY = re.compile(
    r"end-to-end latency, event time -> recommendation appended to Kafka: "
    r"n=(\d+) p50=[\d.]+ ms p99=[\d.]+ ms max=[\d.]+ ms \((\d+) events sent\)"
)


def test_scripts_demo_prints_recommendations_and_its_latency_summary(
    bootstrap: str, tmp_path: Path
) -> None:
    done = run_command(
        [str(ROOT / "scripts" / "demo"), "--items", "300", "--users", "20", "--duration", "8"],
        bootstrap,
        tmp_path,
        timeout_s=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "worker ready" in output and "stopping the worker" in output, output[-3000:]
    summary = SUMMARY.search(done.stdout)
    assert summary is not None, output[-3000:]
    recommendations, sent = int(summary.group(1)), int(summary.group(2))
    assert sent > 0 and recommendations > 0, summary.group(0)
    # Each recommendation printed on its own line, before the summary.
    assert len(re.findall(r"^\s*[\d.]+ ms  \S+", done.stdout, re.MULTILINE)) == recommendations
