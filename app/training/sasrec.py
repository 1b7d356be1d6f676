"""SASRec (Kang and McAuley, 2018) as a reference, trained and evaluated by this project's code:
item-id embeddings only, learned positions, causal self-attention blocks (the ranker's own
``Block``), the next item scored by a dot product with the shared item embeddings, and the
full-softmax cross-entropy at every position; early stopping and the choice of dropout on
validation NDCG@10, the test split read once per configuration.
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from app.training.evaluate import evaluate
from app.training.model import Block, ModelConfig
from app.training.sequences import Split


@dataclass(frozen=True)
class SasrecConfig:
    dim: int = 64
    max_len: int = 50
    layers: int = 2
    heads: int = 1
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 200
    eval_every: int = 4
    patience: int = 5
    seed: int = 42


class SASRec(nn.Module):
    def __init__(self, n_items: int, cfg: SasrecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        block_cfg = ModelConfig(
            n_items=n_items,
            dim=cfg.dim,
            max_len=cfg.max_len,
            heads=cfg.heads,
            layers=cfg.layers,
            ffn=cfg.dim,
            dropout=cfg.dropout,
        )
        self.items = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)
        nn.init.normal_(self.items.weight, std=0.02)
        self.positions = nn.Embedding(cfg.max_len, cfg.dim)
        self.blocks = nn.ModuleList(Block(block_cfg) for _ in range(cfg.layers))
        self.final = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, inputs: Tensor) -> Tensor:
        """Right-aligned item ids (batch, max_len) to per-position states (batch, max_len, dim)."""
        mask = (inputs > 0).float()
        positions = torch.arange(inputs.shape[1])
        x = self.items(inputs) * self.cfg.dim**0.5 + self.positions(positions)[None]
        x = self.drop(x) * mask.unsqueeze(-1)
        n = inputs.shape[1]
        future = torch.triu(torch.ones(n, n), diagonal=1) * -1e9
        bias = (1.0 - mask)[:, None, None, :] * -1e9 + future[None, None]
        for block in self.blocks:
            x = block(x, bias) * mask.unsqueeze(-1)
        out: Tensor = self.final(x)
        return out

    def logits(self, states: Tensor) -> Tensor:
        scores: Tensor = states @ self.items.weight.T
        scores[..., 0] = float("-inf")
        return scores


def _windows(
    sequences: Sequence[NDArray[np.int64]], max_len: int, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """One training window per user with at least two items: inputs and next-item targets of a
    random stretch of their sequence (the last one as often as any), right-aligned."""
    rows = [s for s in sequences if len(s) >= 2]
    inputs = np.zeros((len(rows), max_len), dtype=np.int64)
    targets = np.zeros((len(rows), max_len), dtype=np.int64)
    for r, seq in enumerate(rows):
        end = int(rng.integers(2, len(seq) + 1))
        part = seq[max(0, end - max_len - 1) : end]
        x, y = part[:-1], part[1:]
        inputs[r, max_len - len(x) :] = x
        targets[r, max_len - len(y) :] = y
    return inputs, targets


def score_fn(model: SASRec) -> Any:
    """Full-ranking scores for :func:`app.training.evaluate.evaluate`."""
    max_len = model.cfg.max_len

    def score(users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> NDArray[np.float32]:
        model.eval()
        inputs = np.zeros((len(histories), max_len), dtype=np.int64)
        for r, hist in enumerate(histories):
            last = hist[-max_len:]
            inputs[r, max_len - len(last) :] = last
        with torch.no_grad():
            states = model(torch.from_numpy(inputs))[:, -1]
            result: NDArray[np.float32] = model.logits(states).numpy().astype(np.float32)
        return result

    return score


@dataclass
class SasrecResult:
    model: SASRec
    valid: dict[str, float]
    epochs: int
    seconds: float


def train_sasrec(split: Split, cfg: SasrecConfig) -> SasrecResult:
    """Train on ``split.train``, keeping the weights with the best validation NDCG@10."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = SASRec(split.n_items, cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    best: dict[str, float] = {"ndcg@10": -1.0}
    best_state = copy.deepcopy(model.state_dict())
    stale, epoch, started = 0, 0, time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):  # noqa: B007 - the last epoch run is reported
        model.train()
        inputs, targets = _windows(split.train, cfg.max_len, rng)
        order = rng.permutation(len(inputs))
        for start in range(0, len(order), cfg.batch_size):
            chosen = order[start : start + cfg.batch_size]
            x, y = torch.from_numpy(inputs[chosen]), torch.from_numpy(targets[chosen])
            logits = model.logits(model(x))
            keep = y > 0
            loss = nn.functional.cross_entropy(logits[keep], y[keep])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        if epoch % cfg.eval_every == 0:
            valid = evaluate(score_fn(model), split, stage="valid")
            if valid["ndcg@10"] > best["ndcg@10"]:
                best, stale = valid, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
    model.load_state_dict(best_state)
    model.eval()
    return SasrecResult(model, best, epoch, time.perf_counter() - started)


def tune_and_test(
    split: Split, dropouts: Sequence[float], seeds: Sequence[int], base: SasrecConfig
) -> dict[str, Any]:
    """Choose the dropout on validation (first seed), then train every seed with it and read
    the test split once per seed. Returns the runs and the mean ± std of the test figures."""
    tried = []
    for dropout in dropouts:
        cfg = SasrecConfig(**{**asdict(base), "dropout": dropout, "seed": seeds[0]})
        result = train_sasrec(split, cfg)
        tried.append((result.valid["ndcg@10"], dropout, result))
    _, chosen, first = max(tried, key=lambda t: (t[0], -t[1]))
    runs: list[dict[str, Any]] = []
    for seed, result in zip(
        seeds,
        itertools.chain(
            [first],
            (
                train_sasrec(split, SasrecConfig(**{**asdict(base), "dropout": chosen, "seed": s}))
                for s in seeds[1:]
            ),
        ),
        strict=True,
    ):
        test = evaluate(score_fn(result.model), split, stage="test")
        runs.append(
            {
                "seed": seed,
                "valid": result.valid,
                "test": test,
                "epochs": result.epochs,
                "seconds": round(result.seconds, 1),
            }
        )
    summary = {
        key: [
            float(np.mean([r["test"][key] for r in runs])),
            float(np.std([r["test"][key] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
        ]
        for key in ("hr@10", "ndcg@10")
    }
    return {
        "config": {**asdict(base), "dropout": chosen},
        "dropouts_tried": {str(d): v for v, d, _ in tried},
        "runs": runs,
        "test_mean_std": summary,
    }
