"""A small real run: train on synthetic data, export, and check ONNX against torch and quality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.core.scoring.base import RankInputs
from app.core.scoring.package import load_package
from app.training.evaluate import evaluate, most_popular
from app.training.export import write_package
from app.training.model import ExportRanker, ModelConfig
from app.training.onnx_eval import onnx_score_fn
from app.training.sequences import SequenceData, Split, leave_one_out, synthetic_sequences
from app.training.train import (
    TrainConfig,
    TrainResult,
    distillation_loss,
    load_torch,
    save_torch,
    torch_score_fn,
    train,
)

Trained = tuple[TrainResult, SequenceData, Split]


@pytest.fixture(scope="module")
def trained() -> Trained:
    data = synthetic_sequences(300, 150, seed=1)
    split = leave_one_out(data)
    cfg = ModelConfig(n_items=data.n_items, dim=32, n_buckets=1024, max_len=20)
    config = TrainConfig(epochs=20, eval_every=4, lr=5e-3, patience=3, progress=False)
    result = train(data, split, cfg, config)
    return result, data, split


def test_trained_model_beats_popularity(trained: Trained) -> None:
    result, data, split = trained
    model = evaluate(torch_score_fn(result.model, result.tables), split)
    popular = evaluate(most_popular(split), split)
    # Measured when written: 0.229 against 0.159 for popularity (seed 1).
    assert model["ndcg@10"] > 1.2 * popular["ndcg@10"], (model, popular)


def test_exported_package_matches_torch(trained: Trained, tmp_path: Path) -> None:
    result, data, split = trained
    out = write_package(
        result.model, data, tmp_path / "pkg", name="test", version="0.0.1", training={}, metrics={}
    )
    package = load_package(out, variant="fp32")
    spec = package.spec
    rng = np.random.default_rng(0)
    inputs = RankInputs.zeros(spec, 3, 20)
    inputs.history_vectors[:] = rng.standard_normal(inputs.history_vectors.shape)
    inputs.history_mask[:, -7:] = 1.0
    inputs.history_types[:, -7:] = 2
    inputs.query_terms[0, :2] = [5, 9]
    inputs.user_features[:] = rng.random(inputs.user_features.shape)
    inputs.candidate_vectors[:] = rng.standard_normal(inputs.candidate_vectors.shape)
    inputs.candidate_features[:] = rng.random(inputs.candidate_features.shape)
    onnx_scores = package.ranker.score(inputs)
    with torch.no_grad():
        ref, _user = ExportRanker(result.model).eval()(
            *(torch.from_numpy(v) for v in inputs.feed().values())
        )
    np.testing.assert_allclose(onnx_scores, ref.numpy(), rtol=1e-4, atol=1e-4)

    # Full-ranking quality through ONNX equals torch's, and INT8 stays close.
    reference = evaluate(torch_score_fn(result.model, result.tables), split)["ndcg@10"]
    fp32 = evaluate(onnx_score_fn(package, result.tables), split)["ndcg@10"]
    int8 = evaluate(onnx_score_fn(load_package(out, variant="int8"), result.tables), split)
    assert abs(fp32 - reference) < 1e-3
    assert int8["ndcg@10"] > 0.9 * reference


def test_distillation_loss_is_zero_for_the_teacher_itself_and_positive_otherwise() -> None:
    teacher = torch.randn(6, 11)
    teacher[:, 0] = float("-inf")  # the padding column, as full_logits leaves it
    assert distillation_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    student = teacher.clone()
    student[:, 1:] = torch.randn(6, 10)
    assert distillation_loss(student, teacher, 2.0).item() > 0.01


def test_a_student_learns_from_a_saved_teacher(trained: Trained, tmp_path: Path) -> None:
    """The teacher goes through save_torch and load_torch; a smaller student distilled from it
    trains and beats popularity (the distillation term is finite and drives learning)."""
    result, data, split = trained
    save_torch(result.model, tmp_path / "teacher.pt")
    teacher = load_torch(tmp_path / "teacher.pt")
    teacher_scores = torch_score_fn(teacher, result.tables)
    assert np.array_equal(
        teacher_scores(np.array([0]), [split.history(0, "test")]),
        torch_score_fn(result.model, result.tables)(np.array([0]), [split.history(0, "test")]),
    )
    cfg = ModelConfig(n_items=data.n_items, dim=16, n_buckets=1024, max_len=20, layers=1)
    config = TrainConfig(
        epochs=12, eval_every=4, lr=5e-3, patience=3, progress=False, distill=0.5, temperature=2.0
    )
    student = train(data, split, cfg, config, teacher=teacher)
    assert all(np.isfinite(row["loss"]) for row in student.history)
    got = evaluate(torch_score_fn(student.model, student.tables), split)
    popular = evaluate(most_popular(split), split)
    assert got["ndcg@10"] > popular["ndcg@10"], (got, popular)


def test_the_train_command_builds_a_hybrid_package_end_to_end(tmp_path: Path) -> None:
    """scripts/train's path, small: train with augmented text-only items (so the training
    tables are wider than the evaluated data), export, fit the blend, evaluate every variant."""
    from app.training.cli import main

    out = tmp_path / "pkg"
    code = main(
        [
            "train",
            "--data",
            "synthetic:120:60",
            "--augment",
            "synthetic:40:20",
            "--epochs",
            "2",
            "--dim",
            "16",
            "--threads",
            "1",
            "--quiet",
            "--timing-repeats",
            "5",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    package = load_package(out)
    assert package.spec.transitions is not None
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"ranker_only_fp32", "onnx_fp32", "onnx_int8", "onnx_fp16"} <= set(metrics)
    assert "blend" in json.loads((out / "manifest.json").read_text())

    # The card's spread over seeds comes from the seeds' evaluation files (`seeds` command).
    evaluations = []
    for seed, ndcg in ((1, 0.10), (2, 0.12), (3, 0.14)):
        path = tmp_path / f"seed{seed}.json"
        path.write_text(json.dumps({"onnx_fp32": {"hr@10": 0.2, "ndcg@10": ndcg}}))
        evaluations.append(f"{seed}={path}")
    assert main(["seeds", "--package", str(out), "--note", "made by hand", *evaluations]) == 0
    card = (out / "MODEL_CARD.md").read_text()
    assert "| onnx_fp32 | 0.2000 ± 0.0000 | 0.1200 ± 0.0200 |" in card
    assert "made by hand" in card
    kept = json.loads((out / "metrics.json").read_text())
    assert kept["seeds"]["seeds"] == [1, 2, 3] and "onnx_int8" in kept  # earlier metrics kept


def test_the_distillation_recipe_script_runs_and_reuses_its_teacher(tmp_path: Path) -> None:
    """scripts/train-distilled, tiny: teacher (two stages), then a one-block student with its
    blend; a second seed reuses the teacher."""
    import subprocess

    root = Path(__file__).resolve().parents[3]
    work = tmp_path / "work"

    def recipe(seed: int) -> str:
        done = subprocess.run(
            [
                str(root / "scripts" / "train-distilled"),
                *("--data", "synthetic:80:40", "--seed", str(seed), "--version", "7.7.0"),
                *("--teacher-epochs", "1", "--teacher-more", "1", "--epochs", "1"),
                *("--work", str(work), "--out", str(tmp_path / f"student-{seed}")),
                *("--", "--augment", "none", "--quiet", "--timing-repeats", "5"),
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    first = recipe(1)
    assert "teacher, 1 epochs" in first and (work / "teacher.pt").is_file()
    manifest = json.loads((tmp_path / "student-1" / "manifest.json").read_text())
    assert manifest["version"] == "7.7.0" and manifest["model"]["layers"] == 1
    assert manifest["training"]["teacher"] == str(work / "teacher.pt")
    assert "blend" in manifest
    assert load_torch(work / "teacher.pt").cfg.layers == 3
    assert "reusing the teacher" in recipe(2)
    assert (work / "student-2.pt").is_file()
