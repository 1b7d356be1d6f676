"""The naive baseline: the per-event consumer loop a user would write first, for comparison.

A plain confluent-kafka loop: poll one record, decode it, read and write the user's state in
RocksDB, retrieve candidates by brute force over the whole item matrix, build the ranker's
inputs and call ONNX Runtime at batch 1, produce the recommendation and the feedback record.
Correct, and deliberately free of the worker's batching, indexes and reused buffers. It shares
only the stable wire and state code (app.core.codec, app.core.state) with the worker.

Run as ``python -m app.dev.bench.naive --help``; ``scripts/bench`` starts it as a process.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from numpy.typing import NDArray
from rocksdict import Options, Rdict

from app.core.codec import (
    DecodeError,
    decode_event,
    decode_item,
    encode_feedback,
    encode_recommendation,
)
from app.core.records import (
    NEXT_ITEM_TRIGGERS,
    Event,
    EventType,
    Item,
    RankedItem,
    Recommendation,
)
from app.core.state import (
    LastRecommendation,
    StateLimits,
    UserState,
    apply_event,
    decode_state,
    encode_state,
    with_recommendation,
)
from app.core.text import term_ids, tokenize
from app.dev.bench.kafka_io import stop_on_signals, subscribe

log = logging.getLogger("liverank.bench.naive")

TYPE_IDS = {"view": 1, "click": 2, "add_to_cart": 3, "purchase": 4}
PROFILE_DEPTH = 10
# A query token matches at most its most popular items (the worker's default posting limit):
# without it one search for a genre would sort a tenth of a large catalog.
POSTING_LIMIT = 2000


@dataclass(frozen=True, slots=True)
class Package:
    """The parts of a model package (docs/contracts.md, model package contract) the baseline
    needs."""

    version: str
    files: dict[str, Any]
    dim: int
    max_len: int
    max_query_terms: int
    max_item_terms: int
    n_buckets: int
    item_index: dict[str, int]


def read_package(path: Path) -> Package:
    """``manifest.json`` and ``items.tsv`` of a model package, read directly."""
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    model = manifest["model"]
    index: dict[str, int] = {}
    for line in (path / manifest["files"]["items"]).read_text(encoding="utf-8").splitlines()[1:]:
        idx, item_id = line.split("\t")
        index[item_id] = int(idx)
    return Package(
        version=str(manifest["version"]),
        files=manifest["files"],
        dim=int(model["dim"]),
        max_len=int(model["max_len"]),
        max_query_terms=int(model["max_query_terms"]),
        max_item_terms=int(model["max_item_terms"]),
        n_buckets=int(model["n_buckets"]),
        item_index=index,
    )


def read_catalog(bootstrap: str, topic: str, timeout_s: float = 600.0) -> list[Item]:
    """Every live item of the compacted catalog topic, read from the beginning to its end."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "naive-catalog", "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        }
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        items: dict[str, Item] = {}
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise RuntimeError(f"catalog not read within {timeout_s:g} s")
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error() is not None:
                    continue
                try:
                    decoded = decode_item(msg.value(), msg.key())
                except DecodeError:
                    continue
                if isinstance(decoded, Item):
                    items[decoded.item_id] = decoded
                else:
                    items.pop(decoded, None)
                partition, offset = msg.partition() or 0, msg.offset() or 0
                if offset + 1 >= ends[partition]:
                    todo.discard(partition)
        return list(items.values())
    finally:
        consumer.close()


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class NaiveRanker:
    """Item matrix built once at start-up; everything else is computed per event."""

    def __init__(
        self,
        package: Path,
        variant: str,
        items: Sequence[Item],
        *,
        candidates: int = 200,
        top_k: int = 10,
        half_life_s: float = 6 * 3600.0,
        threads: int = 1,
    ) -> None:
        spec = read_package(package)
        self.spec = spec
        self.model_version = spec.version
        self.candidates = candidates
        self.top_k = top_k
        self.half_life_s = half_life_s
        self.session = _session(package / spec.files["ranker"][variant], threads)
        self.known = {i.item_id: i for i in items}  # withdrawn items still shape affinities
        active = sorted((i for i in items if not i.withdrawn), key=lambda i: i.item_id)
        self.ids = [i.item_id for i in active]
        self.row_of = {item_id: row for row, item_id in enumerate(self.ids)}
        self.category = [i.category for i in active]
        self.vectors = self._encode(package / spec.files["item_encoder"], active, threads)
        log_pop = np.log1p(np.array([i.popularity for i in active], dtype=np.float32))
        top = float(log_pop.max()) if len(active) else 0.0
        self.popularity = log_pop / top if top > 0 else log_pop
        self.popular = np.argsort(-self.popularity, kind="stable")
        self.token_rows: dict[str, list[int]] = {}
        for row in self.popular.tolist():
            item = active[row]
            for token in tokenize(" ".join((item.title, item.category, *item.tags))):
                self.token_rows.setdefault(token, []).append(row)

    def _encode(self, path: Path, items: list[Item], threads: int) -> NDArray[np.float32]:
        spec = self.spec
        encoder = _session(path, threads)
        index = np.array([spec.item_index.get(i.item_id, 0) for i in items], dtype=np.int64)
        terms = np.zeros((len(items), spec.max_item_terms), dtype=np.int64)
        for row, item in enumerate(items):
            tokens = tokenize(" ".join((item.title, item.category, *item.tags)))
            ids = term_ids(tokens, spec.n_buckets, spec.max_item_terms)
            terms[row, : len(ids)] = ids
        parts = [np.zeros((0, spec.dim), dtype=np.float32)]
        for start in range(0, len(items), 65_536):
            (vectors,) = encoder.run(
                ["item_vectors"],
                {
                    "item_index": index[start : start + 65_536],
                    "item_terms": terms[start : start + 65_536],
                },
            )
            parts.append(np.asarray(vectors, dtype=np.float32))
        return np.ascontiguousarray(np.concatenate(parts))

    def recommend(self, state: UserState, event: Event) -> Recommendation:
        """Retrieve, featurize and score one event (the state is the user's after it)."""
        limit = self.candidates
        is_search = event.type is EventType.SEARCH
        tokens = tokenize(event.query) if is_search and event.query else ()
        excluded = {self.row_of[i] for i in state.purchased if i in self.row_of}
        if not is_search and event.item_id in self.row_of:
            excluded.add(self.row_of[event.item_id])
        chosen: dict[int, str] = {}
        match: dict[int, float] = {}
        if tokens:
            counts: dict[int, int] = {}
            for token in tokens:
                for row in self.token_rows.get(token, ())[:POSTING_LIMIT]:
                    counts[row] = counts.get(row, 0) + 1
            match = {row: n / len(tokens) for row, n in counts.items()}
            best = sorted(counts, key=lambda r: (-counts[r], -self.popularity[r]))
            for row in best:
                if len(chosen) >= limit:
                    break
                if row not in excluded:
                    chosen[row] = "query"
        history = [self.row_of[i.item_id] for i in state.history if i.item_id in self.row_of]
        if history[-PROFILE_DEPTH:] and len(chosen) < limit:
            # Brute force: the profile against every item in the catalog, every event.
            profile = self.vectors[history[-PROFILE_DEPTH:]].mean(axis=0)
            scores = self.vectors @ profile
            quota = limit // 4 if tokens else limit // 2
            k = min(scores.shape[0], quota + len(excluded) + len(chosen))
            nearest = np.argpartition(-scores, k - 1)[:k]
            for row in nearest[np.argsort(-scores[nearest])].tolist():
                if quota <= 0:
                    break
                if row not in excluded and row not in chosen:
                    chosen[row] = "similar"
                    quota -= 1
        for row in self.popular[: limit + len(excluded) + len(chosen)].tolist():
            if len(chosen) >= limit:
                break
            if row not in excluded and row not in chosen:
                chosen[row] = "popular"
        rows = list(chosen)
        scores = self._score(state, event, rows, match)
        if is_search:
            order = sorted(
                range(len(rows)), key=lambda j: (match.get(rows[j], 0.0) <= 0, -scores[j])
            )
        else:
            order = sorted(range(len(rows)), key=lambda j: -scores[j])
        items = tuple(
            RankedItem(self.ids[rows[j]], round(float(scores[j]), 6), chosen[rows[j]])
            for j in order[: self.top_k]
        )
        return Recommendation(
            event_id=event.event_id,
            user_id=event.user_id,
            kind="search" if is_search else "next_items",
            items=items,
            model_version=self.model_version,
            event_time=event.event_time,
            event_time_ms=event.event_time_ms,
            query=event.query,
        )

    def _score(
        self, state: UserState, event: Event, rows: list[int], match: dict[int, float]
    ) -> NDArray[np.float32]:
        spec = self.spec
        history_vectors = np.zeros((1, spec.max_len, spec.dim), dtype=np.float32)
        history_mask = np.zeros((1, spec.max_len), dtype=np.float32)
        history_types = np.zeros((1, spec.max_len), dtype=np.int64)
        recent = state.history[-spec.max_len :]
        offset = spec.max_len - len(recent)
        for j, interaction in enumerate(recent):
            row = self.row_of.get(interaction.item_id)
            if row is not None:
                history_vectors[0, offset + j] = self.vectors[row]
                history_mask[0, offset + j] = 1.0
                history_types[0, offset + j] = TYPE_IDS.get(interaction.type, 2)
        query_terms = np.zeros((1, spec.max_query_terms), dtype=np.int64)
        if event.type is EventType.SEARCH and event.query:
            ids = term_ids(tokenize(event.query), spec.n_buckets, spec.max_query_terms)
            query_terms[0, : len(ids)] = ids
        interactions = state.interactions
        user_features = np.array(
            [
                [
                    1.0 if event.type is EventType.SEARCH else 0.0,
                    min(1.0, math.log1p(interactions) / 10.0),
                    min(interactions, spec.max_len) / spec.max_len,
                ]
            ],
            dtype=np.float32,
        )
        categories, _tags = state.affinities_at(event.event_time_ms, self.half_life_s)
        strongest = max(categories.values(), default=0.0)
        candidate_features = np.zeros((1, len(rows), 3), dtype=np.float32)
        for j, row in enumerate(rows):
            affinity = categories.get(self.category[row], 0.0)
            candidate_features[0, j] = (
                self.popularity[row],
                affinity / strongest if strongest > 0 else 0.0,
                match.get(row, 0.0),
            )
        feed: dict[str, Any] = {
            "history_vectors": history_vectors,
            "history_mask": history_mask,
            "history_types": history_types,
            "query_terms": query_terms,
            "user_features": user_features,
            "candidate_vectors": self.vectors[rows][np.newaxis],
            "candidate_features": candidate_features,
        }
        (scores,) = self.session.run(["scores"], feed)
        return np.asarray(scores[0], dtype=np.float32)


@dataclass(frozen=True, slots=True)
class NaiveConfig:
    bootstrap: str
    group: str
    topic_events: str
    topic_catalog: str
    topic_recommendations: str
    topic_feedback: str
    model_path: Path
    variant: str
    data_dir: Path
    ready_file: Path | None = None
    max_event_bytes: int = 16 * 1024
    threads: int = 1


def run(config: NaiveConfig) -> int:
    """Consume until SIGTERM/SIGINT; returns how many events were processed."""
    started = time.monotonic()
    items = read_catalog(config.bootstrap, config.topic_catalog)
    ranker = NaiveRanker(config.model_path, config.variant, items, threads=config.threads)
    log.info("%d items read and encoded in %.1f s", len(items), time.monotonic() - started)
    limits = StateLimits()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = Rdict(str(config.data_dir / "state"), options=Options(raw_mode=True))
    producer = Producer({"bootstrap.servers": config.bootstrap})
    consumer = Consumer(
        {
            "bootstrap.servers": config.bootstrap,
            "group.id": config.group,
            "auto.offset.reset": "earliest",
        }
    )
    stopped = stop_on_signals()
    subscribe(consumer, config.topic_events, config.ready_file)
    processed = 0
    try:
        while not stopped.is_set():
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            try:
                event = decode_event(msg.value() or b"", max_bytes=config.max_event_bytes)
            except DecodeError as exc:
                log.warning("skipping a bad event: %s", exc)
                continue
            key = event.user_id.encode()
            raw = db.get(key)
            previous = decode_state(raw) if raw is not None else None
            duplicate = previous is not None and previous.has_applied(event.event_id)
            item = ranker.known.get(event.item_id) if event.item_id is not None else None
            state = apply_event(previous, event, item, limits)
            if event.type is EventType.SEARCH or event.type in NEXT_ITEM_TRIGGERS:
                rec = ranker.recommend(state, event)
                now = time.time_ns() // 1_000_000
                producer.produce(
                    config.topic_recommendations,
                    key=key,
                    value=encode_recommendation(rec, emit_time_ms=now),
                )
                state = with_recommendation(
                    state,
                    LastRecommendation(
                        rec.event_id, rec.model_version, tuple(i.item_id for i in rec.items)
                    ),
                )
            last = previous.last_recommendation if previous is not None else None
            producer.produce(
                config.topic_feedback,
                key=key,
                value=encode_feedback(
                    event,
                    emit_time_ms=time.time_ns() // 1_000_000,
                    duplicate=duplicate,
                    last_recommendation=None
                    if last is None
                    else (last.event_id, last.model_version, last.item_ids),
                ),
            )
            db[key] = encode_state(state)
            producer.poll(0)
            processed += 1
    finally:
        consumer.close()
        producer.flush(10)
        db.close()
    return processed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.dev.bench.naive", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--recommendations", required=True)
    parser.add_argument("--feedback", required=True)
    parser.add_argument("--model", type=Path, default=Path("models/seqrank-1"))
    parser.add_argument("--variant", default="int8", choices=["fp32", "int8", "fp16"])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    processed = run(
        NaiveConfig(
            bootstrap=args.bootstrap,
            group=args.group,
            topic_events=args.events,
            topic_catalog=args.catalog,
            topic_recommendations=args.recommendations,
            topic_feedback=args.feedback,
            model_path=args.model,
            variant=args.variant,
            data_dir=args.data_dir,
            ready_file=args.ready_file,
            threads=args.threads,
        )
    )
    log.info("stopped after %d events", processed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
