"""Shadow scoring: a candidate model ranks the same micro-batches as the serving model, its lists
are attributed to what users really do, and what the serving model outputs does not change."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import orjson
import pytest
from numpy.typing import NDArray

from app.core.attribution import Impression
from app.core.catalog import Catalog
from app.core.codec import (
    SHADOW,
    ModelUpdate,
    decode_model_update,
    encode_event,
    encode_model_update,
    encode_shadow,
    format_time_ms,
    model_update_key,
    validator,
)
from app.core.processor import ATTRIBUTION, Output, Processor
from app.core.ranking import model_vectorizer
from app.core.records import Event, EventType, Item, Source
from app.core.scoring.base import RankInputs, Scorer
from app.core.scoring.package import LoadedModel
from app.core.settings import Settings
from app.core.shadow import ShadowBook, ShadowClosed
from app.ops.quality import SERVING, Closed, LiveQuality
from app.ops.quality import SHADOW as SHADOW_ROLE
from app.ops.quality_report import closed_from_record, report
from tests.conftest import T0

CLOCK_MS = T0 + 10_000_000  # every output's emit time: a fixed clock, so outputs compare as bytes


class Restamped:
    """The serving scorer under another version, its scores optionally turned around."""

    def __init__(self, scorer: Scorer, version: str, *, negate: bool = False) -> None:
        self.scorer = scorer
        self.version = version
        self.negate = negate
        self.calls = 0

    @property
    def model_version(self) -> str:
        return self.version

    def score(self, inputs: RankInputs) -> NDArray[np.float32]:
        self.calls += 1
        scores = self.scorer.score(inputs)
        return -scores if self.negate else scores


def with_shadow(
    catalog: Catalog, model: LoadedModel, settings: Settings, version: str, *, negate: bool
) -> tuple[Processor, Restamped]:
    processor = Processor(catalog, model.ranker, model.spec, settings, clock=lambda: CLOCK_MS)
    spec = dataclasses.replace(model.spec, version=version)
    scorer = Restamped(model.ranker, version, negate=negate)
    processor.set_shadow(spec, scorer)
    catalog.set_shadow(model_vectorizer(model.encoder, spec), version)
    catalog.publish()
    return processor, scorer


class Shop:
    """Users who view an item, then click the first item each recommendation shows them (or
    the last), a micro-batch at a time: the serving model's lists decide what they do."""

    def __init__(self, processor: Processor, first_item: str, *, click_rank: int = 0) -> None:
        self.processor = processor
        self.store: dict[bytes, bytes] = {}
        self.offset = itertools.count()
        self.time = itertools.count(T0, 1_000)
        self.ids = itertools.count()
        self.first_item = first_item
        self.click_rank = click_rank
        self.outputs: list[Output] = []
        self.served: list[Impression] = []
        self.shadow: list[ShadowClosed] = []
        self.last_list: dict[str, list[str]] = {}

    def event(self, user: str, kind: EventType, item: str) -> tuple[bytes, Source]:
        t = next(self.time)
        event = Event(f"e{next(self.ids)}", user, kind, t, _iso(t), item_id=item)
        return encode_event(event), Source("events", 0, next(self.offset), user.encode(), t)

    def batch(self, records: list[tuple[bytes, Source]]) -> None:
        result = self.processor.handle_batch(records, self.store.get)
        for outcome in result.outcomes:
            self.outputs += outcome.outputs
            self.served += outcome.closed
            if outcome.state is not None and outcome.user_id is not None:
                self.store[outcome.user_id.encode()] = outcome.state
            rec = outcome.recommendation
            if rec is not None:
                self.last_list[rec.user_id] = [i.item_id for i in rec.items]
        # As the events agent does: the shadow's part once the serving outputs are out.
        shadow = self.processor.shadow_batch(result.shadow)
        self.outputs += shadow.outputs
        self.shadow += shadow.closed

    def run(self, users: list[str], rounds: int) -> None:
        self.batch([self.event(u, EventType.VIEW, self.first_item) for u in users])
        self.batch([self.event(u, EventType.CLICK, self.first_item) for u in users])
        for _ in range(rounds):
            self.batch(
                [self.event(u, EventType.CLICK, self.last_list[u][self.click_rank]) for u in users]
            )
        # Every window closes: the sweeper's steps for the served and the shadow impressions.
        far = next(self.time) + 10 * 3_600_000
        for user in users:
            swept = self.processor.close_due(user, self.store.get(user.encode()), far)
            self.outputs += swept.outputs
            self.served += swept.closed
        sweep = self.processor.sweep_shadow(0, far)
        self.outputs += sweep.outputs
        self.shadow += sweep.closed


def _iso(ms: int) -> str:
    return format_time_ms(ms)


def quality_of(shop: Shop, k: int = 10) -> tuple[LiveQuality, int]:
    """The live quality windows as a worker would compute them just after the last close."""
    closed = [Closed.of(i) for i in shop.served] + [
        Closed.of(i, SHADOW_ROLE) for _, i in shop.shadow
    ]
    now = max(c.closed_ms for c in closed)
    quality = LiveQuality(k)
    for c in closed:
        quality.add(c, now)
    return quality, now


USERS = [f"u{i}" for i in range(6)]


@pytest.fixture
def catalog(music_catalog: Catalog) -> Iterator[Catalog]:
    yield music_catalog
    music_catalog.set_shadow(None)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The clock is fixed (outputs compare as bytes), so no record may count as late.
    return dataclasses.replace(settings, deadline_ms=0)


def test_a_shadow_that_ranks_like_the_serving_model_is_measured_exactly_like_it(
    catalog: Catalog, model: LoadedModel, settings: Settings
) -> None:
    processor, scorer = with_shadow(catalog, model, settings, "1.1.0-twin", negate=False)
    shop = Shop(processor, "jazz-0")
    shop.run(USERS, rounds=4)
    assert scorer.calls > 0
    served = {i.request_id: (i.items, i.acted, i.closed_reason) for i in shop.served}
    shadow = {i.request_id: (i.items, i.acted, i.closed_reason) for _, i in shop.shadow}
    # Same lists for the same events, credited with the same actions, closed the same way.
    assert len(served) == len(USERS) * 5
    assert shadow == served
    quality, now = quality_of(shop)
    serving = quality.window(model.spec.version, 300, now)
    twin = quality.window("1.1.0-twin", 300, now, SHADOW_ROLE)
    assert serving.impressions == twin.impressions == len(served)
    assert serving.hit_rate == twin.hit_rate and serving.ndcg == twin.ndcg
    # Users click the first item of what they were shown: every list but the last was a hit.
    assert serving.hits == len(USERS) * 4


def test_a_shadow_that_turns_the_ranking_around_is_measured_worse(
    catalog: Catalog, model: LoadedModel, settings: Settings
) -> None:
    processor, _ = with_shadow(catalog, model, settings, "1.1.0-upside-down", negate=True)
    shop = Shop(processor, "jazz-0")
    shop.run(USERS, rounds=4)
    quality, now = quality_of(shop)
    serving = quality.window(model.spec.version, 300, now)
    worse = quality.window("1.1.0-upside-down", 300, now, SHADOW_ROLE)
    assert serving.impressions == worse.impressions > 0
    assert serving.hit_rate > 0.7
    # Its lists are the bottom of the same candidates: the clicked top item is not in them.
    assert worse.hit_rate < serving.hit_rate / 2
    assert worse.ndcg < serving.ndcg / 2
    assert quality.series() == [
        (SERVING, model.spec.version),
        (SHADOW_ROLE, "1.1.0-upside-down"),
    ]


def test_the_serving_outputs_are_byte_identical_with_and_without_a_shadow(
    catalog: Catalog, model: LoadedModel, settings: Settings
) -> None:
    plain = Processor(catalog, model.ranker, model.spec, settings, clock=lambda: CLOCK_MS)
    without = Shop(plain, "rock-1", click_rank=1)
    without.run(USERS, rounds=3)
    shadowed, _ = with_shadow(catalog, model, settings, "1.1.0-upside-down", negate=True)
    with_ = Shop(shadowed, "rock-1", click_rank=1)
    with_.run(USERS, rounds=3)

    def serving(outputs: list[Output]) -> list[tuple[str, bytes | None, bytes | None]]:
        return [
            (o.role, o.key, o.value)
            for o in outputs
            if not (o.role == ATTRIBUTION and o.document()["kind"] == "shadow")
        ]

    assert serving(with_.outputs) == serving(without.outputs)
    assert with_.store == without.store  # the states, byte for byte
    shadow_records = [o for o in with_.outputs if o not in without.outputs]
    assert shadow_records and all(o.document()["kind"] == "shadow" for o in shadow_records)
    check = validator("attribution")
    for record in shadow_records:
        check(record.document())


def test_a_shadow_without_its_item_vectors_is_skipped_not_guessed(
    catalog: Catalog, model: LoadedModel, settings: Settings
) -> None:
    processor = Processor(catalog, model.ranker, model.spec, settings, clock=lambda: CLOCK_MS)
    spec = dataclasses.replace(model.spec, version="2.0.0")
    processor.set_shadow(spec, Restamped(model.ranker, "2.0.0"))  # catalog not encoded for it
    shop = Shop(processor, "jazz-0")
    records = [shop.event("u1", EventType.CLICK, "jazz-0")]
    result = processor.handle_batch(records, shop.store.get)
    done = processor.shadow_batch(result.shadow)
    assert (result.ranked, done.ranked, done.skipped) == (1, 0, 1)
    catalog.set_shadow(model_vectorizer(model.encoder, spec), "2.0.0")
    catalog.publish()
    result = processor.handle_batch([shop.event("u1", EventType.CLICK, "jazz-3")], lambda _: None)
    done = processor.shadow_batch(result.shadow)
    assert (done.ranked, done.skipped) == (1, 0)


def test_the_catalog_encodes_the_shadow_rows_with_the_shadow_encoder(
    catalog: Catalog, model: LoadedModel, item_factory: Callable[..., Item]
) -> None:
    def doubled(items: Sequence[Item]) -> NDArray[np.float32]:
        return 2.0 * model_vectorizer(model.encoder, model.spec)(items)

    catalog.set_shadow(doubled, "x2")
    assert catalog.publish()
    index = catalog.index
    assert index.shadow is not None and index.shadow.encoder_tag == "x2"
    assert index.shadow.ids == index.ids
    np.testing.assert_allclose(index.shadow.vectors, 2.0 * index.vectors, rtol=1e-6)
    # A catalog change keeps the unchanged rows' shadow vectors and encodes the new one.
    catalog.upsert(item_factory("jazz-new", "jazz", popularity=5000.0))
    assert catalog.publish()
    index = catalog.index
    assert index.shadow is not None and len(index.shadow) == len(index) == 41
    np.testing.assert_allclose(index.shadow.vectors, 2.0 * index.vectors, rtol=1e-6)
    catalog.set_shadow(None)
    assert catalog.publish()
    assert catalog.index.shadow is None


def test_the_book_bounds_its_users_and_forgets_a_partition(
    event_factory: Callable[..., Event],
) -> None:
    book = ShadowBook(window_ms=1_000, open_limit=2, max_users=2)

    def shown(request: str, at: int) -> Impression:
        return Impression(request, "next_items", "s", ("a", "b"), at, at + 1_000, (0, 0))

    assert book.on_shown("u1", shown("r1", 0), partition=0) == ()
    assert book.on_shown("u2", shown("r2", 1), partition=1) == ()
    # u1 is the least recent: forgotten, not closed (no served impression closes for room).
    assert book.on_shown("u3", shown("r3", 2), partition=0) == ()
    assert (book.users, book.forgotten) == (2, 1)
    # A user's own open impressions beyond open_limit close as served ones do.
    book.on_shown("u3", shown("r4", 3), partition=0)
    closed = book.on_shown("u3", shown("r5", 4), partition=0)
    assert [i.request_id for _, i in closed] == ["r3"]
    assert book.drop_partition(1) == 1  # u2
    assert book.users == 1
    click = event_factory("click", user_id="u3", item_id="b", time_ms=500)
    assert book.on_event(click, record_ms=500) == ()
    swept = book.sweep(0, up_to_ms=10_000)
    assert sorted((i.request_id, [a.rank for a in i.acted]) for _, i in swept) == [
        ("r4", []),
        ("r5", [1]),  # the newest open impression that showed the item gets the click
    ]
    assert book.users == 0


def test_shadow_records_and_updates_keep_their_contracts() -> None:
    update = ModelUpdate("seqrank", "2.0.0", "/models/seqrank-2", T0, "try it", role=SHADOW)
    raw = encode_model_update(update)
    assert decode_model_update(raw) == update
    assert orjson.loads(raw)["role"] == "shadow"
    serving = ModelUpdate("seqrank", "2.0.0", "/models/seqrank-2", T0)
    assert "role" not in orjson.loads(encode_model_update(serving))
    assert model_update_key("seqrank", SHADOW) != model_update_key("seqrank")
    imp = Impression("r1", "search", "2.0.0", ("a", "b", "c"), T0, T0 + 5, (3, 42))
    doc = orjson.loads(
        encode_shadow(imp, "u1", events_topic="events", window_s=1.0, emit_time_ms=T0)
    )
    validator("attribution")(doc)
    assert doc["kind"] == "shadow" and [i["item_id"] for i in doc["items"]] == ["a", "b", "c"]
    closed = closed_from_record(doc)
    assert closed is not None and closed.role == SHADOW_ROLE and closed.shown == 3


def test_the_quality_report_shows_the_shadow_beside_the_serving_model() -> None:
    quality = LiveQuality(k=10)
    quality.add(Closed("1.1.0", T0, 10, ((0, "click"),)), T0)
    quality.add(Closed("1.1.0", T0, 10, ()), T0)
    quality.add(Closed("2.0.0", T0, 10, ((3, "click"),), SHADOW_ROLE), T0)
    quality.add(Closed("2.0.0", T0, 10, ((0, "purchase"),), SHADOW_ROLE), T0)
    text = report(quality, T0)
    rows = [line for line in text.splitlines() if line.startswith("| 1.1.0") or "2.0.0" in line]
    assert rows[0].startswith("| 1.1.0 | serving | 300 s | 2 | 0.500 | 0.500 |")
    # NDCG@10: (1/log2(5) + 1) / 2
    assert rows[2].startswith("| 2.0.0 | shadow | 300 s | 2 | 1.000 | 0.715 |")


def test_settings_name_the_shadow_bound(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).shadow_max_users == 200_000


def test_the_shadow_waits_while_the_worker_is_behind(
    catalog: Catalog, model: LoadedModel, settings: Settings
) -> None:
    behind = dataclasses.replace(settings, deadline_ms=100)
    processor, scorer = with_shadow(catalog, model, behind, "1.1.0-twin", negate=False)
    shop = Shop(processor, "jazz-0")
    late_value, late_source = shop.event("u1", EventType.CLICK, "jazz-0")
    fresh_value, fresh_source = shop.event("u2", EventType.CLICK, "jazz-3")
    records = [
        (late_value, dataclasses.replace(late_source, timestamp_ms=CLOCK_MS - 60_000)),
        (fresh_value, dataclasses.replace(fresh_source, timestamp_ms=CLOCK_MS)),
    ]
    result = processor.handle_batch(records, shop.store.get)
    done = processor.shadow_batch(result.shadow)
    # The late record got the cheap path, the fresh one the model; the shadow left the batch.
    assert (result.ranked, result.degraded) == (1, 1)
    assert (done.ranked, done.skipped, scorer.calls) == (0, 1, 0)
    # Caught up: the next batch is ranked by both.
    value, source = shop.event("u3", EventType.CLICK, "jazz-6")
    result = processor.handle_batch(
        [(value, dataclasses.replace(source, timestamp_ms=CLOCK_MS))], shop.store.get
    )
    done = processor.shadow_batch(result.shadow)
    assert (result.ranked, done.ranked, done.skipped, scorer.calls) == (1, 1, 0, 1)


def test_a_forgotten_user_leaves_nothing_in_the_shadow_book(
    catalog: Catalog, model: LoadedModel, settings: Settings
) -> None:
    processor, _ = with_shadow(catalog, model, settings, "1.1.0-twin", negate=False)
    shop = Shop(processor, "jazz-0")
    shop.batch([shop.event("u1", EventType.CLICK, "jazz-0")])
    assert processor.shadow is not None and processor.shadow.book.users == 1
    t = next(shop.time)
    forget = Event(f"e{next(shop.ids)}", "u1", EventType.FORGET_USER, t, _iso(t))
    shop.batch([(encode_event(forget), Source("events", 0, next(shop.offset), b"u1", t))])
    assert processor.shadow.book.users == 0
    # Nothing of theirs closes later: no shadow record names them after the forget.
    assert processor.sweep_shadow(0, t + 10 * 3_600_000).closed == ()
