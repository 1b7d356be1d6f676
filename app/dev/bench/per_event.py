"""The worker's own processing set up for a per-event loop: the like-for-like baselines
(``naive_full``, ``quix_app``) rank with exactly the worker's model, catalog and settings."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from app.core.catalog import Catalog, index_options
from app.core.processor import ATTRIBUTION, DEAD_LETTERS, FEEDBACK, RECOMMENDATIONS, Processor
from app.core.ranking import model_vectorizer
from app.core.records import DeadLetterError, Source
from app.core.scoring.gate import check_candidate
from app.core.settings import Settings
from app.ops.metrics import Metrics
from app.streams.catalog_follower import CatalogFollower

log = logging.getLogger("liverank.bench.per_event")


@dataclass(frozen=True, slots=True)
class Loaded:
    """A processor ready to take records, and the topic each output role goes to."""

    processor: Processor
    topics: dict[str, str]
    items: int


def output_topics(settings: Settings) -> dict[str, str]:
    """Output role to topic, as the worker's producer maps them (app.streams.worker)."""
    return {
        RECOMMENDATIONS: settings.topic_recommendations,
        FEEDBACK: settings.topic_feedback,
        DEAD_LETTERS: settings.topic_dead_letters,
        ATTRIBUTION: settings.topic_attribution,
    }


def load(settings: Settings) -> Loaded:
    """Model through the worker's start-up gate, catalog preloaded from its topic, processor:
    what ``app.streams.worker.run_worker`` builds, less the Faust app around it."""
    started = time.monotonic()
    model = check_candidate(
        settings.model_path,
        variant=settings.model_variant,
        threads=settings.onnx_threads,
        device=settings.model_device,
    )
    catalog = Catalog(
        model_vectorizer(model.encoder, model.spec),
        index_options(settings),
        encoder_tag=model.spec.version,
    )
    processor = Processor(catalog, model.ranker, model.spec, settings)

    def ignore(error: DeadLetterError, reason: str, source: Source, raw: bytes) -> None:
        log.warning("bad catalog record at offset %d: %s", source.offset, reason)

    # The bench's catalog does not change while it runs: preloaded once, not followed.
    follower = CatalogFollower(settings, catalog, Metrics(quality_k=settings.quality_k), ignore)
    follower.preload()
    follower.stop()
    items = len(catalog.index)
    log.info(
        "model %s %s (%s) and %d items loaded in %.1f s",
        model.spec.name,
        model.spec.version,
        model.ranker.variant,
        items,
        time.monotonic() - started,
    )
    return Loaded(processor, output_topics(settings), items)
