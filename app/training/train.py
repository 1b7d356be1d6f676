"""Training loop for the sequence ranker: full-softmax next-item prediction with early stopping."""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from app.core.features import user_features
from app.core.ranking import TYPE_IDS
from app.core.state import StateLimits
from app.core.text import term_ids, tokenize
from app.training.evaluate import evaluate
from app.training.features import GenreTrack, affinity_after, data_items, genre_track
from app.training.model import ModelConfig, SequenceRanker
from app.training.sequences import SequenceData, Split

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    id_dropout: float = 0.1
    pseudo_query_rate: float = 0.15
    eval_every: int = 2
    patience: int = 8
    seed: int = 42
    progress: bool = True
    model: dict[str, int | float] = field(default_factory=dict)
    # Knowledge distillation from a teacher (train's ``teacher``): the loss is
    # (1 - distill) * cross-entropy on the next item + distill * T^2 * KL(teacher || student)
    # over every item's softmax at temperature T, at every position.
    distill: float = 0.0
    temperature: float = 1.0


def item_text(data: SequenceData, index: int) -> str:
    """The text an item is searchable by: title and genres (the catalog's title, category, tags)."""
    return " ".join((data.item_titles[index], *data.item_genres[index]))


@dataclass(frozen=True)
class ItemTables:
    """Per-item arrays the training loop and the evaluation share (index 0 pads)."""

    terms: NDArray[np.int64]  # (n_items + 1, max_item_terms)
    genres: NDArray[np.float32]  # (n_genres, n_items + 1), each item's column sums to 1
    genre_names: tuple[str, ...]
    popularity: NDArray[np.float32]  # (n_items + 1,) log1p(training count) / catalog max
    tokens: tuple[frozenset[str], ...]  # searchable tokens per item
    token_index: dict[str, int]  # token -> row of ``incidence`` (row 0: unknown token)
    incidence: NDArray[np.float32]  # (tokens + 1, n_items + 1): 1 where an item has the token
    # Items from this index on never use their id embedding: they stand for catalog items the
    # model has never seen, and teach it to rank from text, category and query alone.
    content_only_from: int
    track: GenreTrack  # every user's genre affinity after each interaction


def item_tables(
    data: SequenceData,
    train: list[NDArray[np.int64]],
    cfg: ModelConfig,
    content_only_from: int | None = None,
    limits: StateLimits | None = None,
) -> ItemTables:
    """The per-item arrays, and every user's genre affinities computed by the serving code
    (app.training.features) with ``limits`` (default: the worker's defaults)."""
    n = data.n_items + 1
    terms = np.zeros((n, cfg.max_item_terms), dtype=np.int64)
    tokens: list[frozenset[str]] = [frozenset()]
    for i in range(1, n):
        toks = tokenize(item_text(data, i))
        ids = term_ids(toks, cfg.n_buckets, cfg.max_item_terms)
        terms[i, : len(ids)] = ids
        tokens.append(frozenset(toks))
    counts = np.bincount(np.concatenate(train) if train else np.zeros(0, np.int64), minlength=n)
    track = genre_track(data, data_items(data, counts), limits or StateLimits())
    # As the worker's catalog scales it (app.core.catalog): log1p(count) over the catalog's largest.
    # The catalog served is the primary data's items; content-only items are scaled alike.
    primary = content_only_from if content_only_from is not None else n
    log_pop = np.log1p(counts.astype(np.float64))
    top = max(float(log_pop[1:primary].max(initial=0.0)), 1e-9)
    popularity = np.minimum(log_pop / top, 1.0).astype(np.float32)
    popularity[0] = 0.0
    vocabulary = sorted({t for toks in tokens for t in toks})
    token_index = {t: i + 1 for i, t in enumerate(vocabulary)}
    incidence = np.zeros((len(vocabulary) + 1, n), dtype=np.float32)
    for i, item_toks in enumerate(tokens):
        for t in item_toks:
            incidence[token_index[t], i] = 1.0
    return ItemTables(
        terms,
        track.genres,
        track.names,
        popularity,
        tuple(tokens),
        token_index,
        incidence,
        content_only_from if content_only_from is not None else n,
        track,
    )


@dataclass
class Batch:
    inputs: Tensor  # (B, L) item indices, right-aligned
    targets: Tensor  # (B, L) next item, 0 where none
    mask: Tensor  # (B, L) float
    types: Tensor  # (B, L)
    query_terms: Tensor  # (B, L, Q)
    query_tokens: list[tuple[int, int, tuple[str, ...]]]  # (row, position, tokens) with a query
    user_features: Tensor  # (B, L, U)
    genre_affinity: Tensor  # (B, L, G) normalized by the max per position


def _windows(seq_len: int, max_len: int) -> list[tuple[int, int]]:
    """(start, end) windows of at most max_len + 1 items covering a sequence, newest last."""
    out = []
    end = seq_len
    while end > 1:
        start = max(0, end - max_len - 1)
        out.append((start, end))
        end = start + 1 if start > 0 else 0
    return out


class BatchMaker:
    def __init__(
        self,
        data: SequenceData,
        tables: ItemTables,
        cfg: ModelConfig,
        train: list[NDArray[np.int64]],
        users: list[int],
        pseudo_query_rate: float,
        seed: int,
    ) -> None:
        self.data, self.tables, self.cfg = data, tables, cfg
        self.rng = random.Random(seed)
        self.pseudo_query_rate = pseudo_query_rate
        self.samples: list[tuple[int, int, int]] = []  # (user, start, end)
        self.train = train
        self.users = users
        queries = data.queries
        # Users whose data has no searches get pseudo searches (see _query_for).
        self.has_queries = [
            queries is not None and any(q for q in queries[u]) for u in range(len(data.sequences))
        ]
        self._all: Batch | None = None
        for row, seq in enumerate(train):
            for start, end in _windows(len(seq), cfg.max_len):
                self.samples.append((row, start, end))

    def epoch(self, batch_size: int) -> Iterator[Batch]:
        """Shuffled batches over every window. Windows are built once (the pseudo queries are
        drawn then): rebuilding them each epoch cost more than the model's own work."""
        if self._all is None:
            self._all = self.make(self.samples)
        everything = self._all
        order = torch.from_numpy(
            np.array(self.rng.sample(range(len(self.samples)), len(self.samples)))
        )
        by_row: dict[int, list[tuple[int, tuple[str, ...]]]] = {}
        for r, c, toks in everything.query_tokens:
            by_row.setdefault(r, []).append((c, toks))
        for i in range(0, len(order), batch_size):
            rows = order[i : i + batch_size]
            queries = [
                (j, c, toks) for j, r in enumerate(rows.tolist()) for c, toks in by_row.get(r, ())
            ]
            yield Batch(
                inputs=everything.inputs[rows],
                targets=everything.targets[rows],
                mask=everything.mask[rows],
                types=everything.types[rows],
                query_terms=everything.query_terms[rows],
                query_tokens=queries,
                user_features=everything.user_features[rows],
                genre_affinity=everything.genre_affinity[rows],
            )

    def _query_for(self, row: int, pos: int, target: int) -> str | None:
        """The data's own query, or now and then a pseudo query naming the target's genre/title."""
        queries = self.data.queries
        user = self.users[row]
        if queries is not None and self.has_queries[user]:
            return queries[user][pos]
        if self.rng.random() >= self.pseudo_query_rate:
            return None
        words = [w for w in tokenize(self.data.item_titles[target]) if len(w) > 3]
        choices = [*self.data.item_genres[target], *words]
        if not choices:
            return None
        return " ".join(self.rng.sample(choices, k=min(len(choices), self.rng.choice((1, 2)))))

    def make(self, samples: list[tuple[int, int, int]]) -> Batch:
        cfg, b, length = self.cfg, len(samples), self.cfg.max_len
        inputs = np.zeros((b, length), dtype=np.int64)
        targets = np.zeros((b, length), dtype=np.int64)
        types = np.zeros((b, length), dtype=np.int64)
        query_terms = np.zeros((b, length, cfg.max_query_terms), dtype=np.int64)
        feats = np.zeros((b, length, cfg.user_features), dtype=np.float32)
        affinity = np.zeros((b, length, self.tables.genres.shape[0]), dtype=np.float32)
        query_tokens: list[tuple[int, int, tuple[str, ...]]] = []
        all_types = self.data.types
        for r, (row, start, end) in enumerate(samples):
            seq = self.train[row]
            items = seq[start:end]
            n = len(items) - 1
            off = length - n
            inputs[r, off:] = items[:-1]
            targets[r, off:] = items[1:]
            user = self.users[row]
            kinds = all_types[user][start:end] if all_types is not None else None
            types[r, off:] = kinds[:-1] if kinds is not None else TYPE_IDS["click"]
            # The user's genre affinity after each input item, as the worker computes it.
            affinity[r, off:] = self.tables.track.affinity[user][start : start + n]
            for j in range(n):
                query = self._query_for(row, start + j + 1, int(items[j + 1]))
                count = start + j + 1
                feats[r, off + j] = user_features(
                    is_search=query is not None, interactions=count, max_len=length
                )
                if query is not None:
                    toks = tokenize(query)
                    ids = term_ids(toks, cfg.n_buckets, cfg.max_query_terms)
                    query_terms[r, off + j, : len(ids)] = ids
                    query_tokens.append((r, off + j, toks[: cfg.max_query_terms]))
        return Batch(
            inputs=torch.from_numpy(inputs),
            targets=torch.from_numpy(targets),
            mask=torch.from_numpy((inputs > 0).astype(np.float32)),
            types=torch.from_numpy(types),
            query_terms=torch.from_numpy(query_terms),
            query_tokens=query_tokens,
            user_features=torch.from_numpy(feats),
            genre_affinity=torch.from_numpy(affinity),
        )


def query_match_batch(tables: ItemTables, queries: list[tuple[str, ...]]) -> NDArray[np.float32]:
    """(queries, n_items + 1): the fraction of each query's tokens an item contains, as
    app.core.features computes ``query_match`` when serving."""
    width = max(1, max(len(q) for q in queries))
    index = np.zeros((len(queries), width), dtype=np.int64)
    for r, q in enumerate(queries):
        index[r, : len(q)] = [tables.token_index.get(t, 0) for t in q]
    lengths = np.array([max(1, len(q)) for q in queries], dtype=np.float32)
    match: NDArray[np.float32] = tables.incidence[index].sum(axis=1) / lengths[:, None]
    return match


def full_logits(
    model: SequenceRanker,
    tables: ItemTables,
    batch: Batch,
    item_vectors: Tensor,
    popularity: Tensor,
    genres: Tensor,
) -> Tensor:
    """Scores of every item at every position: (B, L, n_items + 1), padding column at -inf."""
    hist = item_vectors[batch.inputs] * batch.mask.unsqueeze(-1)
    states = model.encode(hist, batch.mask, batch.types)
    user = model.user_vector(states, batch.query_terms, batch.user_features)
    logits = user @ item_vectors.T
    w = model.head.weight[0]
    category = batch.genre_affinity @ genres
    logits = logits + w[0] * popularity + w[1] * category + model.head.bias
    if batch.query_tokens:
        rows = torch.tensor([r for r, _, _ in batch.query_tokens])
        cols = torch.tensor([c for _, c, _ in batch.query_tokens])
        match = torch.from_numpy(query_match_batch(tables, [t for _, _, t in batch.query_tokens]))
        extra = torch.zeros_like(logits)
        extra[rows, cols] = w[2] * match
        logits = logits + extra
    logits[..., 0] = float("-inf")
    return logits


def model_ids(tables: ItemTables) -> NDArray[np.int64]:
    """The id each item is encoded with: its index, or 0 (unknown) for content-only items."""
    ids = np.arange(tables.terms.shape[0], dtype=np.int64)
    ids[tables.content_only_from :] = 0
    return ids


def item_vectors(model: SequenceRanker, tables: ItemTables, id_dropout: float = 0.0) -> Tensor:
    ids = torch.from_numpy(model_ids(tables))
    if id_dropout > 0:
        ids = torch.where(torch.rand(ids.shape) < id_dropout, torch.zeros_like(ids), ids)
    result: Tensor = model.items(ids, torch.from_numpy(tables.terms))
    return result


def torch_score_fn(
    model: SequenceRanker, tables: ItemTables, n_items: int | None = None
) -> Callable[[NDArray[np.int64], list[NDArray[np.int64]]], NDArray[np.float32]]:
    """Full-ranking scores for evaluation, computed the way the serving graph computes them;
    only items ``0..n_items`` are returned (the evaluated data set's own items)."""
    cfg = model.cfg
    width = (n_items if n_items is not None else tables.terms.shape[0] - 1) + 1

    def score(users: NDArray[np.int64], histories: list[NDArray[np.int64]]) -> NDArray[np.float32]:
        model.eval()
        with torch.no_grad():
            vectors = item_vectors(model, tables)
            inputs = np.zeros((len(histories), cfg.max_len), dtype=np.int64)
            feats = np.zeros((len(histories), cfg.user_features), dtype=np.float32)
            affinity = np.zeros((len(histories), tables.genres.shape[0]), dtype=np.float32)
            for r, hist in enumerate(histories):
                last = hist[-cfg.max_len :]
                inputs[r, cfg.max_len - len(last) :] = last
                feats[r] = user_features(
                    is_search=False, interactions=len(hist), max_len=cfg.max_len
                )
                affinity[r] = affinity_after(tables.track, int(users[r]), len(hist))
            x = torch.from_numpy(inputs)
            mask = (x > 0).float()
            types = torch.where(x > 0, TYPE_IDS["click"], 0)
            states = model.encode(vectors[x] * mask.unsqueeze(-1), mask, types, last_only=True)
            no_query = torch.zeros((len(histories), cfg.max_query_terms), dtype=torch.int64)
            user = model.user_vector(states[:, 0], no_query, torch.from_numpy(feats))
            cand_features = torch.stack(
                [
                    torch.from_numpy(tables.popularity).expand(len(histories), -1),
                    torch.from_numpy(affinity) @ torch.from_numpy(tables.genres),
                    torch.zeros(len(histories), vectors.shape[0]),
                ],
                dim=-1,
            )
            scores = model.score(user, vectors.expand(len(histories), -1, -1), cand_features)
            return scores[:, :width].numpy().astype(np.float32)

    return score


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(teacher || student) of the softmaxes at temperature T, mean over rows; the
    padding column (index 0, -inf in both) is left out."""
    t = temperature
    log_student = torch.log_softmax(student[:, 1:] / t, dim=-1)
    log_teacher = torch.log_softmax(teacher[:, 1:] / t, dim=-1)
    kl = torch.nn.functional.kl_div(
        log_student, log_teacher, log_target=True, reduction="batchmean"
    )
    result: Tensor = kl * (t * t)
    return result


def save_torch(model: SequenceRanker, path: Path) -> None:
    """The trained torch model (config and weights), to teach a student later."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": model.cfg.as_dict(), "state": model.state_dict()}, path)


def load_torch(path: Path) -> SequenceRanker:
    doc = torch.load(path, map_location="cpu", weights_only=True)
    model = SequenceRanker(ModelConfig(**doc["config"]))
    model.load_state_dict(doc["state"])
    model.eval()
    return model


@dataclass
class TrainResult:
    model: SequenceRanker
    tables: ItemTables
    history: list[dict[str, float]]
    best_valid: dict[str, float]


def train(
    data: SequenceData,
    split: Split,
    cfg: ModelConfig,
    tc: TrainConfig,
    *,
    eval_split: Split | None = None,
    content_only_from: int | None = None,
    teacher: SequenceRanker | None = None,
    init: SequenceRanker | None = None,
) -> TrainResult:
    """Train on the training sequences; keep the weights with the best validation NDCG@10 on
    ``eval_split`` (default ``split``), whose items must be the first ones of ``data``. With a
    ``teacher`` (trained on the same data and item tables) and ``tc.distill`` above 0, the
    student also learns the teacher's full distribution over the items at every position.
    ``init``: start from these weights (the same configuration) rather than from scratch."""
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)  # noqa: NPY002 - torch dropout aside, this is the only global RNG
    tables = item_tables(data, split.train, cfg, content_only_from)
    evaluated = eval_split if eval_split is not None else split
    model = SequenceRanker(cfg)
    if init is not None:
        model.load_state_dict(init.state_dict())
    users = list(split.users) if hasattr(split, "users") else list(range(len(split.train)))
    maker = BatchMaker(data, tables, cfg, split.train, users, tc.pseudo_query_rate, tc.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    popularity = torch.from_numpy(tables.popularity)
    genres = torch.from_numpy(tables.genres)
    best: dict[str, float] = {"ndcg@10": -1.0}
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    stale = 0
    teacher_vectors: Tensor | None = None
    if teacher is not None and tc.distill > 0:
        teacher.eval()  # frozen: no dropout, no id dropout, its item vectors computed once
        with torch.no_grad():
            teacher_vectors = item_vectors(teacher, tables)
    bar = _progress(tc.epochs, tc.progress, "training")
    for epoch in range(1, tc.epochs + 1):
        model.train()
        losses = []
        for batch in maker.epoch(tc.batch_size):
            vectors = item_vectors(model, tables, tc.id_dropout)
            logits = full_logits(model, tables, batch, vectors, popularity, genres)
            keep = batch.targets > 0
            loss = torch.nn.functional.cross_entropy(logits[keep], batch.targets[keep])
            if teacher is not None and teacher_vectors is not None:
                with torch.no_grad():
                    taught = full_logits(
                        teacher, tables, batch, teacher_vectors, popularity, genres
                    )
                loss = (1.0 - tc.distill) * loss + tc.distill * distillation_loss(
                    logits[keep], taught[keep], tc.temperature
                )
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            losses.append(loss.item())
        row = {"epoch": float(epoch), "loss": float(np.mean(losses))}
        if epoch % tc.eval_every == 0 or epoch == tc.epochs:
            scorer = torch_score_fn(model, tables, evaluated.n_items)
            valid = evaluate(scorer, evaluated, stage="valid", k=10)
            row.update({f"valid_{k}": v for k, v in valid.items()})
            if valid["ndcg@10"] > best["ndcg@10"]:
                best, stale = valid, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
        history.append(row)
        bar(row)
        if stale >= tc.patience:
            log.info("early stop at epoch %d", epoch)
            break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, tables, history, best)


def _progress(total: int, enabled: bool, desc: str) -> Callable[[dict[str, float]], None]:
    if not enabled:
        return lambda row: None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is in the train extra; fall back to log lines
        return lambda row: log.info("%s %s", desc, row)
    bar = tqdm(total=total, desc=desc, unit="epoch")

    def update(row: dict[str, float]) -> None:
        bar.update(1)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k != "epoch"})

    return update
