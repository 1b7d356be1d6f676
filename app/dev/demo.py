"""The demo's traffic player and live printer: sessions in, recommendations printed with latency."""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

import numpy as np
import orjson
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from app.core.codec import encode_event, encode_item, format_time_ms, parse_time_ms
from app.core.processor import wall_clock_ms
from app.core.records import Item
from app.core.settings import Settings
from app.dev.synthetic import Traffic, make_catalog
from app.kafka.kafka_config import client_config, keyed_by_user


def demo_catalog(items: int) -> list[Item]:
    """``items`` synthetic items, or (0) MovieLens-100K's movies, the default model's own items."""
    if items > 0:
        return make_catalog(items)
    from pathlib import Path

    from app.training.movielens import fetch_ml100k, load_ml100k, movielens_catalog

    cache = Path.home() / ".cache" / "liverank" / "datasets"
    return movielens_catalog(load_ml100k(fetch_ml100k(cache)))


def publish_catalog(settings: Settings, items: list[Item]) -> int:
    """Produce items to the compacted catalog topic, keyed by item id."""
    producer = Producer(client_config(settings, {"linger.ms": 20, "acks": "all"}))
    for item in items:
        producer.produce(settings.topic_catalog, key=item.item_id.encode(), value=encode_item(item))
        producer.poll(0)
    remaining = producer.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} catalog records were not delivered")
    return len(items)


def play(
    settings: Settings,
    traffic: Traffic,
    rate: float,
    stop: threading.Event,
    clock: Callable[[], int] = wall_clock_ms,
) -> int:
    """Produce sessions at about ``rate`` events/s, each stamped with the time it is sent."""
    producer = Producer(
        client_config(settings, {"linger.ms": 1, "acks": 1, **keyed_by_user(settings)})
    )
    sent = 0
    interval = 1.0 / rate
    next_at = time.monotonic()
    # Several sessions are open at once, as on a real site; each advances one event at a time.
    sessions = [traffic.session() for _ in range(max(1, int(rate)))]
    rng = traffic.rng
    while not stop.is_set():
        i = rng.randrange(len(sessions))
        event = next(sessions[i], None)
        if event is None:
            sessions[i] = traffic.session()
            continue
        now = clock()
        event = dataclasses.replace(event, event_time_ms=now, event_time=format_time_ms(now))
        producer.produce(
            settings.topic_events, key=event.user_id.encode(), value=encode_event(event)
        )
        producer.poll(0)
        sent += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
    producer.flush(10)
    return sent


def _describe(items: list[dict[str, object]], titles: dict[str, Item], n: int = 3) -> str:
    parts = []
    for entry in items[:n]:
        item = titles.get(str(entry["item_id"]))
        label = f"{item.title} [{item.category}]" if item else str(entry["item_id"])
        parts.append(f"{label} {float(str(entry['score'])):.2f}")
    return "; ".join(parts)


def run_demo(
    settings: Settings,
    *,
    users: int,
    items: int,
    rate: float,
    duration_s: float | None,
    report_every_s: float = 10.0,
    out: TextIO = sys.stdout,
) -> dict[str, float]:
    """Play traffic and print each recommendation as it arrives; returns latency figures (ms)."""
    catalog = demo_catalog(items)
    titles = {i.item_id: i for i in catalog}
    traffic = Traffic(catalog, n_users=users)
    consumer = Consumer(
        client_config(
            settings, {"group.id": f"{settings.app_id}-demo-printer", "enable.auto.commit": False}
        )
    )
    meta = consumer.list_topics(settings.topic_recommendations, timeout=10)
    parts = meta.topics[settings.topic_recommendations].partitions
    consumer.assign([TopicPartition(settings.topic_recommendations, p, OFFSET_END) for p in parts])
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sent: list[int] = []
    player = threading.Thread(
        target=lambda: sent.append(play(settings, traffic, rate, stop)), daemon=True
    )
    latencies: list[float] = []
    started = time.monotonic()
    last_report, reported = started, 0
    player.start()
    print(
        f"playing ~{rate:g} events/s from {users} users over {len(catalog)} items; Ctrl-C stops",
        file=out,
    )
    try:
        while not stop.is_set():
            if duration_s is not None and time.monotonic() - started > duration_s:
                break
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                if msg.error() is not None:
                    continue
                value = msg.value()
                if value is None:  # a forgotten user's tombstone
                    key = (msg.key() or b"").decode(errors="replace")
                    print(f"{'':10} {key:<11} forgotten", file=out, flush=True)
                    continue
                rec = orjson.loads(value)
                _, append_ms = msg.timestamp()
                event_ms = parse_time_ms(rec["event_time"])
                latency = append_ms - event_ms
                latencies.append(latency)
                what = f'search "{rec["query"]}"' if rec["kind"] == "search" else "next items"
                print(
                    f"{latency:7.1f} ms  {rec['user_id']:<11} {what:<32} -> "
                    f"{_describe(rec['items'], titles)}",
                    file=out,
                    flush=True,
                )
            if time.monotonic() - last_report >= report_every_s and len(latencies) > reported:
                window = latency_summary(latencies[reported:])
                print(
                    f"--- last {time.monotonic() - last_report:.0f} s: {int(window['n'])} "
                    f"recommendations, p50 {window['p50']:.1f} ms, p99 {window['p99']:.1f} ms ---",
                    file=out,
                    flush=True,
                )
                last_report, reported = time.monotonic(), len(latencies)
    finally:
        stop.set()
        player.join(timeout=15)
        consumer.close()
        signal.signal(signal.SIGINT, previous)
    summary = latency_summary(latencies)
    summary["events_sent"] = float(sent[0] if sent else 0)
    print(
        "\nend-to-end latency, event time -> recommendation appended to Kafka: "
        f"n={int(summary['n'])} p50={summary['p50']:.1f} ms p99={summary['p99']:.1f} ms "
        f"max={summary['max']:.1f} ms ({int(summary['events_sent'])} events sent)",
        file=out,
    )
    return summary


def latency_summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"n": 0.0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    arr = np.asarray(latencies, dtype=np.float64)
    return {
        "n": float(arr.size),
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }
