"""The model card's spread over seeds: computed from the seeds' evaluations, never typed in."""

from __future__ import annotations

import pytest

from app.training.report import _seeds_text, seed_summary


def run(hr: float, ndcg: float, *, ranker_only: bool = True) -> dict[str, object]:
    row = {"hr@10": hr, "ndcg@10": ndcg, "mrr": 0.0, "users": 943}
    doc: dict[str, object] = {"onnx_fp32": row, "onnx_int8": dict(row)}
    if ranker_only:
        doc["ranker_only_fp32"] = {"hr@10": hr / 2, "ndcg@10": ndcg / 2}
    return doc


def test_mean_and_sample_std_per_row() -> None:
    summary = seed_summary({44: run(0.3, 0.12), 42: run(0.1, 0.10), 43: run(0.2, 0.11)}, "n")
    assert summary["seeds"] == [42, 43, 44]
    assert summary["note"] == "n"
    fp32 = summary["rows"]["onnx_fp32"]
    assert fp32["hr@10"] == pytest.approx([0.2, 0.1])  # sample std of 0.1, 0.2, 0.3
    assert fp32["ndcg@10"] == pytest.approx([0.11, 0.01])
    assert summary["rows"]["ranker_only_fp32"]["hr@10"] == pytest.approx([0.1, 0.05])
    assert "onnx_fp16" not in summary["rows"]  # in no evaluation
    text = _seeds_text(summary)
    assert "Over 3 training seeds (42, 43, 44)" in text
    assert "| onnx_fp32 | 0.2000 ± 0.1000 | 0.1100 ± 0.0100 |" in text


def test_a_row_missing_from_one_seed_is_left_out() -> None:
    summary = seed_summary({1: run(0.2, 0.1), 2: run(0.2, 0.1, ranker_only=False)})
    assert set(summary["rows"]) == {"onnx_fp32", "onnx_int8"}


def test_one_seed_has_no_spread() -> None:
    with pytest.raises(ValueError, match="at least two seeds"):
        seed_summary({42: run(0.2, 0.1)})
    with pytest.raises(ValueError, match="no row"):
        seed_summary({1: {"x": {}}, 2: {"x": {}}})
