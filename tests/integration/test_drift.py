"""``scripts/drift``, the README's feedback-loop figure, end to end and small: a real worker
against the test broker, simulated users, two retrains on the stream (torch, the train extra)
and a hot reload of each model that beat the serving one. What it measures needs minutes of
traffic; this checks that the command behind the figure runs and reports every phase."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.integration.worker_process import ROOT, run_command

pytestmark = pytest.mark.integration

ROW = re.compile(r"^\| (\d)\. [^|]+ \| (\d+) \| ([\d.]+|nan) \| [\d.na]+ \| ([^|]+) \|$", re.M)
PUBLISHED = re.compile(r"^published seqrank (\S+) ", re.M)


def test_scripts_drift_runs_every_phase_and_serves_what_it_publishes(
    bootstrap: str, tmp_path: Path
) -> None:
    pytest.importorskip("torch", reason="retraining needs the train extra")
    done = run_command(
        [
            sys.executable,
            "-m",
            "app.dev.drift",
            *"--users 60 --items 60 --phase-s 5 --window-s 2".split(),
            "--out",
            str(tmp_path / "drift"),
        ],
        bootstrap,
        tmp_path,
    )
    output = done.stdout + done.stderr
    # Exit status 1: a model it published was not served within its wait.
    assert done.returncode == 0, output[-4000:]
    rows = ROW.findall(done.stdout)
    assert [r[0] for r in rows] == ["1", "2", "3", "4"], output[-4000:]
    for _phase, impressions, _hit_rate, models in rows:
        assert int(impressions) > 0, output[-4000:]
        assert re.fullmatch(r"(\S+ \(\d+\)(, )?)+", models.strip()), models
    # Phase 1 is the packaged model's; each retrain either says why it published nothing or
    # published a version that then ranked the phase after it.
    packaged = json.loads((ROOT / "models" / "seqrank-1" / "manifest.json").read_text())
    assert rows[0][3].strip().startswith(f"{packaged['version']} ("), rows[0]
    for version in PUBLISHED.findall(done.stdout):
        assert any(f"{version} (" in models for *_, models in rows[1:]), output[-4000:]
    retrains = len(re.findall(r"^(published seqrank|retrain of \S+ exited)", done.stdout, re.M))
    assert retrains == 2, output[-4000:]
