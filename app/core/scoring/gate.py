"""The model gate: a new package replaces the serving model only after it loads and behaves."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from app.core.features import user_features
from app.core.scoring.base import ModelContractError, RankInputs
from app.core.scoring.package import LoadedModel, ModelSpec, OnnxRanker, load_package, read_spec
from app.core.text import term_ids

log = logging.getLogger(__name__)

PROBE_SEED = 1729
PROBE_ITEMS = 128
PROBE_BATCHES = (1, 8, 64)
PROBE_WIDTH = 64
# Words to hash into item and query terms, so the probe looks like catalog text, not noise.
PROBE_WORDS = (
    "jazz", "rock", "classical", "piano", "guitar", "live", "vinyl", "remastered", "best",
    "soundtrack", "1977", "love", "night", "blues", "symphony", "greatest", "hits", "acoustic",
)  # fmt: skip
# A row scored alone against the same row in a padded batch may differ by this share of the
# batch's score spread (standard deviation): relative, so it means the same at any score scale.
# FP32 on the CPU differs by ~1e-7; 1e-3 only absorbs kernel changes between batch sizes. INT8's
# dynamic quantization scales activations over the whole batch, so neighbours move a row's
# scores: up to 0.16 measured (30 seeds, batches up to 256). FP16 and CUDA kernels (TF32 for
# FP32) round differently per shape, by less (not measured: no GPU here). A model that mixes
# rows or candidates (a wrong reshape, a batch-wide normalisation) moves them by about 1, so
# 0.4 still catches it.
FP32_CPU_TOLERANCE = 1e-3
REDUCED_PRECISION_TOLERANCE = 0.4
# Below this share of the scores' magnitude, a row's scores count as one constant value.
CONSTANT_SPREAD = 1e-6


class ModelRejected(ModelContractError):
    """A candidate model that must not replace the serving one; the message says why."""


def _reject(path: Path, message: str) -> ModelRejected:
    return ModelRejected(f"{path}: {message}")


def check_candidate(
    path: Path,
    *,
    variant: str = "auto",
    threads: int = 1,
    device: str = "auto",
    serving: ModelSpec | None = None,
) -> LoadedModel:
    """Load the package at ``path`` (contract, checksums, warm-up), then probe it on realistic
    inputs; return it ready to serve, or raise :class:`ModelContractError` saying what is wrong.

    With ``serving``, the candidate must also be able to take its place: a new version of the
    same model family. Every other spec field may change, because a swap rebuilds what depends
    on them (the ranker's buffers and query cache, the re-encoded catalog), and user state keeps
    only item ids. :class:`ModelSlot` treats an offer of the serving version as a no-op instead.
    """
    model = load_package(path, variant=variant, threads=threads, device=device)
    spec = model.spec
    if serving is not None:
        if spec.version == serving.version:
            raise _reject(path, f"version {spec.version} is already serving; nothing to switch to")
        if spec.name != serving.name:
            # Another family arriving as a reload is a misrouted update, not an upgrade.
            raise _reject(
                path, f"model {spec.name!r} cannot replace {serving.name!r}; deploy it instead"
            )
    # Checksums only prove the files are the ones the packager hashed; an encoder from one
    # training run with a ranker from another passes them, and the probe, with useless scores.
    for role, stamped in (
        ("item encoder", model.encoder.metadata.get("liverank.model_version")),
        (f"ranker ({model.ranker.variant})", model.ranker.metadata.get("liverank.model_version")),
    ):
        if stamped != spec.version:
            raise _reject(
                path,
                f"files from different builds: manifest version {spec.version}, "
                f"{role} stamped {stamped}",
            )
    rng = np.random.default_rng(PROBE_SEED)
    vectors = _probe_encoder(path, model, rng)
    _probe_ranker(path, model.ranker, vectors, rng)
    return model


def _terms(rng: np.random.Generator, spec: ModelSpec, limit: int) -> list[int]:
    count = int(rng.integers(1, limit + 1))
    words = tuple(str(w) for w in rng.choice(PROBE_WORDS, size=count, replace=False))
    return term_ids(words, spec.n_buckets, limit)


def _probe_encoder(path: Path, model: LoadedModel, rng: np.random.Generator) -> NDArray[np.float32]:
    """Item vectors for known and new items; they feed the ranker probe."""
    spec = model.spec
    known = np.fromiter(spec.item_index.values(), dtype=np.int64, count=len(spec.item_index))
    index = np.zeros(PROBE_ITEMS, dtype=np.int64)
    if known.size:
        index[:] = rng.choice(known, PROBE_ITEMS)
    index[: PROBE_ITEMS // 4] = 0  # new items: their text alone makes the vector
    terms = np.zeros((PROBE_ITEMS, spec.max_item_terms), dtype=np.int64)
    for row in range(PROBE_ITEMS):
        ids = _terms(rng, spec, min(spec.max_item_terms, 6))
        terms[row, : len(ids)] = ids
    vectors = model.encoder.encode(index, terms)
    if vectors.shape != (PROBE_ITEMS, spec.dim):
        raise _reject(
            path,
            f"item encoder gives {vectors.shape} for {PROBE_ITEMS} items, not [items, {spec.dim}]",
        )
    if not np.isfinite(vectors).all():
        raise _reject(path, "item encoder gives vectors that are not finite (NaN or Inf)")
    if not np.ptp(vectors, axis=0).any():
        raise _reject(path, "item encoder gives the same vector for every item")
    # The catalog encodes only new and changed items and keeps the rest, so an item's vector
    # must not depend on the other items in its call.
    alone = model.encoder.encode(index[:4], terms[:4])
    scale = float(np.abs(vectors).max())
    if alone.shape != (4, spec.dim) or not np.allclose(
        alone, vectors[:4], rtol=0, atol=1e-4 * scale
    ):
        raise _reject(path, "item encoder gives an item another vector alone than in a batch")
    return vectors


def _probe_inputs(
    spec: ModelSpec,
    vectors: NDArray[np.float32],
    rng: np.random.Generator,
    batch: int,
    width: int,
) -> tuple[RankInputs, list[int]]:
    """A batch as the worker builds it: left-padded histories (row 1 a new user), searches with
    query terms, and candidate lists of different lengths padded to ``width``."""
    inputs = RankInputs.zeros(spec, batch, width)
    counts = []
    for row in range(batch):
        length = 0 if row == 1 else int(rng.integers(1, spec.max_len + 1))
        if length:
            inputs.history_vectors[row, -length:] = vectors[rng.integers(0, len(vectors), length)]
            inputs.history_mask[row, -length:] = 1.0
            inputs.history_types[row, -length:] = rng.choice(
                [1, 2, 3, 4], size=length, p=[0.6, 0.25, 0.1, 0.05]
            )
        search = bool(rng.random() < 0.35)
        if search:
            ids = _terms(rng, spec, min(spec.max_query_terms, 3))
            inputs.query_terms[row, : len(ids)] = ids
        inputs.user_features[row] = user_features(
            is_search=search, interactions=length + int(rng.integers(0, 30)), max_len=spec.max_len
        )
        count = width if row == 0 else int(rng.integers(2, width + 1))
        picks = rng.choice(len(vectors), size=count, replace=False)
        inputs.candidate_vectors[row, :count] = vectors[picks]
        # Padded as the worker pads: with one item's vector.
        inputs.candidate_vectors[row, count:] = vectors[0]
        features = inputs.candidate_features[row, :count]
        features[:, 0] = rng.random(count) ** 2  # popularity: most items are not popular
        features[:, 1] = np.where(rng.random(count) < 0.4, rng.random(count), 0.0)
        if search:
            features[:, 2] = rng.choice([0.0, 0.5, 1.0], size=count, p=[0.7, 0.2, 0.1])
        counts.append(count)
    return inputs, counts


def _row(inputs: RankInputs, row: int, count: int) -> RankInputs:
    """One row of a batch as the worker would send it alone: its own candidates, no padding."""

    def one(array: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.ascontiguousarray(array[row : row + 1])

    return RankInputs(
        history_vectors=one(inputs.history_vectors),
        history_mask=one(inputs.history_mask),
        history_types=np.ascontiguousarray(inputs.history_types[row : row + 1]),
        query_terms=np.ascontiguousarray(inputs.query_terms[row : row + 1]),
        user_features=one(inputs.user_features),
        candidate_vectors=one(inputs.candidate_vectors[:, :count]),
        candidate_features=one(inputs.candidate_features[:, :count]),
    )


def _probe_ranker(
    path: Path, ranker: OnnxRanker, vectors: NDArray[np.float32], rng: np.random.Generator
) -> None:
    exact = ranker.variant == "fp32" and ranker.device == "cpu"
    tolerance = FP32_CPU_TOLERANCE if exact else REDUCED_PRECISION_TOLERANCE
    for batch in PROBE_BATCHES:
        inputs, counts = _probe_inputs(ranker.spec, vectors, rng, batch, PROBE_WIDTH)
        scores = ranker.score(inputs)
        if scores.shape != (batch, PROBE_WIDTH):
            raise _reject(
                path,
                f"scores must be [batch, candidates] = {(batch, PROBE_WIDTH)}, got {scores.shape}",
            )
        rows = [scores[row, :count] for row, count in enumerate(counts)]
        for row, real in enumerate(rows):
            where = f"row {row} of a batch of {batch}"
            if not np.isfinite(real).all():
                raise _reject(path, f"scores are not finite (NaN or Inf) in {where}")
            if np.ptp(real) <= CONSTANT_SPREAD * max(1.0, float(np.abs(real).max())):
                raise _reject(path, f"the same score for every candidate in {where}")
        allowed = tolerance * float(np.concatenate(rows).std())
        for row, real in enumerate(rows):
            where = f"row {row} of a batch of {batch}"
            alone = ranker.score(_row(inputs, row, real.shape[0]))
            if alone.shape != (1, real.shape[0]) or not np.isfinite(alone).all():
                raise _reject(
                    path, f"{where} scored alone gives {alone.shape} or non-finite scores"
                )
            moved = float(np.abs(alone[0] - real).max())
            if moved > allowed:
                raise _reject(
                    path,
                    f"{where} scores differently alone (by {moved:.3g}, allowed {allowed:.3g}): "
                    "it depends on the other rows or candidates",
                )


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What came of one offer: swapped in or not, and why."""

    accepted: bool
    version: str | None  # the candidate's; None when its manifest could not be read
    reason: str
    seconds: float


class ModelSlot:
    """The serving model, replaced only by a candidate that passes :func:`check_candidate`.

    Readers take :attr:`current` once per batch; a bad candidate is logged and counted, never
    raised, so a broken package on a model-updates topic cannot stop the worker.
    """

    def __init__(self, model: LoadedModel) -> None:
        self._current = model
        self._lock = threading.Lock()
        self.accepted = 0
        self.rejected = 0
        self.unchanged = 0

    @property
    def current(self) -> LoadedModel:
        # A single reference read of an immutable LoadedModel: readers need no lock and see the
        # old model or the new one whole.
        return self._current

    def offer(
        self, path: Path, *, variant: str = "auto", threads: int = 1, device: str = "auto"
    ) -> ReloadResult:
        """Check the package at ``path`` and swap it in if it passes; the serving version again
        is a no-op (an update topic may deliver the same message twice), not a rejection."""
        start = time.perf_counter()
        # One offer at a time, so two racing offers cannot leave the older candidate serving.
        with self._lock:
            serving = self._current.spec
            version: str | None = None
            try:
                version = read_spec(path)[0].version
                if version == serving.version:
                    self.unchanged += 1
                    log.info("model %s: version %s is already serving", path, version)
                    reason = f"{path}: version {version} is already serving"
                    return ReloadResult(False, version, reason, time.perf_counter() - start)
                model = check_candidate(
                    path, variant=variant, threads=threads, device=device, serving=serving
                )
            except Exception as exc:  # anything a bad package raises (ORT, OSError, ...)
                reason = (
                    str(exc)
                    if isinstance(exc, ModelContractError)
                    else f"{type(exc).__name__}: {exc}"
                )
                if str(path) not in reason:
                    reason = f"{path}: {reason}"
                reason = " ".join(reason.split())  # one log line, whatever ORT's message holds
                self.rejected += 1
                log.warning(
                    "model rejected, still serving %s: %s",
                    serving.version,
                    reason,
                    extra={
                        "model_version": version,  # the candidate's, when its spec was read
                        "serving_version": serving.version,
                        "model_path": str(path),
                        "error": reason,
                    },
                )
                return ReloadResult(False, version, reason, time.perf_counter() - start)
            self._current = model
            self.accepted += 1
        seconds = time.perf_counter() - start
        log.info(
            "model %s %s from %s replaced %s",
            model.spec.name,
            version,
            path,
            serving.version,
            extra={"model_version": version, "previous_version": serving.version},
        )
        return ReloadResult(True, version, f"replaced {serving.version}", seconds)
