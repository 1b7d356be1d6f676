"""scripts/gpu-bench's in-process part runs (on the CPU here) and prints its table."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.dev.bench import gpu

MODEL = Path(__file__).resolve().parents[2] / "models" / "seqrank-1"


def test_batch_of_takes_rows_in_order_and_pads_candidates() -> None:
    calls = gpu.real_inputs(MODEL, n_items=300, n_events=80)
    assert calls
    for size in (1, 5, 300):
        inputs = gpu.batch_of(calls, size)
        widths = {a.shape[0] for a in inputs.feed().values()}
        assert widths == {size}
        assert inputs.candidate_vectors.shape[1] == max(c.candidate_vectors.shape[1] for c in calls)


def test_main_prints_a_row_per_batch(capsys: pytest.CaptureFixture[str]) -> None:
    code = gpu.main(["--model", str(MODEL), "--repeats", "3", "--items", "300", "--events", "80"])
    assert code == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| provider | precision | batch |")
    batches = sorted(int(r.split("|")[3]) for r in rows[1:])
    assert batches == [1, 256]
    if "CUDAExecutionProvider" not in out.split("\n", 1)[0]:
        assert all("CPU fallback" in r for r in rows[1:])
