"""SASRec, the reference trained by this code: it learns, and the dropout is chosen on
validation with the test split read once per seed."""

from __future__ import annotations

from app.training.evaluate import evaluate, most_popular
from app.training.sasrec import SasrecConfig, score_fn, train_sasrec, tune_and_test
from app.training.sequences import leave_one_out, synthetic_sequences


def test_sasrec_learns_the_sequences() -> None:
    split = leave_one_out(synthetic_sequences(300, 150, seed=1))
    result = train_sasrec(split, SasrecConfig(dim=32, max_len=20, epochs=40, eval_every=4, lr=5e-3))
    got = evaluate(score_fn(result.model), split)
    popular = evaluate(most_popular(split), split)
    assert got["ndcg@10"] > popular["ndcg@10"], (got, popular)
    assert result.valid["ndcg@10"] > 0


def test_tuning_reports_each_seed_and_the_mean() -> None:
    split = leave_one_out(synthetic_sequences(120, 60, seed=2))
    base = SasrecConfig(dim=16, max_len=10, epochs=4, eval_every=2, lr=5e-3)
    found = tune_and_test(split, [0.1, 0.4], [1, 2], base)
    assert set(found["dropouts_tried"]) == {"0.1", "0.4"}
    chosen = found["config"]["dropout"]
    assert found["dropouts_tried"][str(chosen)] == max(found["dropouts_tried"].values())
    assert [r["seed"] for r in found["runs"]] == [1, 2]
    hr = [r["test"]["hr@10"] for r in found["runs"]]
    assert abs(found["test_mean_std"]["hr@10"][0] - sum(hr) / 2) < 1e-12
