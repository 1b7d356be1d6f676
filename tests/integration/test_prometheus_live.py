"""A real Prometheus scrapes a live worker: the dashboard's queries and the alert rules work.

Every query of the Grafana dashboard returns a series with a number (not NaN), and every alert
rule evaluates without error, both in Prometheus's rule manager and as a query.

The worker gets the traffic that makes its series exist: searches, clicks and a purchase (events,
recommendations, latency), a malformed record (dead letters), a bad model update (model reloads)
and attribution windows short enough to close (live quality). Dashboard variables are resolved
as Grafana resolves them: ``$namespace``, ``$job`` and ``$pod`` through their own
``label_values`` queries against this Prometheus, with this worker selected (narrower than
All's ``.*``), the interval macros from the dashboard's time range and a 1 s scrape interval.
Every wait polls for a condition, with a generous limit."""

from __future__ import annotations

import doctest
import itertools
import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from app.core.codec import format_time_ms
from app.core.settings import Settings
from app.dev.synthetic import make_catalog
from tests.integration.kafka_io import KafkaIO, Record
from tests.integration.prometheus import (
    PrometheusError,
    PrometheusProcess,
    check_rules,
    grafana_intervals,
    regex_value,
    relative_seconds,
    require,
    substitute,
)
from tests.integration.worker_process import ROOT, WorkerProcess, isolated_settings, running_worker

pytestmark = pytest.mark.integration

DASHBOARD = ROOT / "deploy" / "grafana" / "liverank.json"
SCRAPE_S = 1
# What Kubernetes service discovery would put on the worker's series under the ServiceMonitor.
NAMESPACE, POD, JOB = "liverank-it", "liverank-0", "liverank"
CATALOG = make_catalog(60, seed=21)
# Impressions close (and reach liverank_live_*) when this window ends after a recommendation.
ATTRIBUTION_WINDOW_S = 2.0
WAIT_S = 120.0

T = TypeVar("T")


def poll(probe: Callable[[], T | None], what: str, timeout_s: float = WAIT_S) -> T:
    """``probe()`` until it returns something other than None."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"not {what} after {timeout_s:.0f} s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def settings(bootstrap: str, module_tmp: Path) -> Settings:
    return isolated_settings(bootstrap, module_tmp, attribution_window_s=ATTRIBUTION_WINDOW_S)


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    return check_rules().rules_spec()  # type: ignore[no-any-return]  # module loaded by path


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    """Checked before the worker starts: a missing one fails the test at once, saying why."""
    return require("prometheus")


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: str, settings: Settings, module_tmp: Path, rules: dict[str, Any]
) -> Iterator[PrometheusProcess]:
    """Started before the worker (it scrapes a target that is down until the worker is up)."""
    workdir = module_tmp / "prometheus"
    workdir.mkdir()
    server = PrometheusProcess(prometheus_binary, workdir)
    config = server.write_config(
        [f"127.0.0.1:{settings.http_port}"],
        {"namespace": NAMESPACE, "pod": POD},
        rule_files=[check_rules().write_rules(rules, workdir)],
        job=JOB,
        scrape_interval_s=SCRAPE_S,
    )
    try:
        server.start(config)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def worker(
    prometheus: PrometheusProcess, settings: Settings, kafka: KafkaIO, module_tmp: Path
) -> Iterator[WorkerProcess]:
    with running_worker(settings, kafka, CATALOG, module_tmp / "worker.log") as proc:
        yield proc


def send(kafka: KafkaIO, settings: Settings, user: str, kind: str, **fields: Any) -> str:
    doc = {
        "event_id": f"{user}-{uuid.uuid4().hex[:10]}",
        "user_id": user,
        "type": kind,
        "event_time": format_time_ms(time.time_ns() // 1_000_000),
        **fields,
    }
    kafka.produce(settings.topic_events, user.encode(), orjson.dumps(doc))
    return str(doc["event_id"])


def traffic(kafka: KafkaIO, settings: Settings) -> None:
    """Everything the dashboard shows something for; returns once the worker answered."""
    items = [item.item_id for item in CATALOG]
    triggers = [send(kafka, settings, "prom-a", "search", query=CATALOG[0].title.split()[0])]
    triggers += [send(kafka, settings, "prom-a", "click", item_id=i) for i in items[:3]]
    triggers += [send(kafka, settings, "prom-b", "click", item_id=i) for i in items[3:5]]
    send(kafka, settings, "prom-b", "purchase", item_id=items[4])
    kafka.produce(settings.topic_events, b"prom-bad", b'{"event_id": "x", ')  # malformed_json
    kafka.produce(settings.topic_model_updates, b"seqrank", b"not a model update")  # invalid

    def answered(records: list[Record]) -> bool:
        ids = {orjson.loads(r.value or b"{}").get("event_id") for r in records}
        return set(triggers) <= ids

    kafka.read_until(settings.topic_recommendations, answered, timeout_s=WAIT_S)


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title and refId, PromQL) of every panel target, rows' collapsed panels included."""
    found = []
    for panel in dashboard["panels"]:
        for p in [panel, *panel.get("panels", [])]:
            for target in p.get("targets", []):
                found.append((f"{p['title']!r} {target['refId']}", str(target["expr"])))
    return found


def resolve_variables(
    dashboard: dict[str, Any], prometheus: PrometheusProcess, want: dict[str, str]
) -> dict[str, str]:
    """Each query variable, in dashboard order, from its ``label_values`` query (earlier
    variables substituted into it), with the value ``want`` names selected; then the intervals.

    Polls: a variable's values exist once Prometheus has scraped the worker."""
    values: dict[str, str] = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        selector, label = query.removeprefix("label_values(").removesuffix(")").rsplit(",", 1)
        selector, label = substitute(selector, values).strip(), label.strip()
        name = var["name"]

        def listed(selector: str = selector, label: str = label, name: str = name) -> bool | None:
            return True if want[name] in prometheus.label_values(label, selector) else None

        poll(listed, f"{want[name]!r} listed by variable {name}: label_values({selector})")
        values[name] = regex_value([want[name]])
    range_s = relative_seconds(dashboard["time"]["from"])
    return values | grafana_intervals(range_s, SCRAPE_S)


def test_every_dashboard_query_and_alert_rule_works_on_a_live_worker(
    prometheus: PrometheusProcess,
    worker: WorkerProcess,
    kafka: KafkaIO,
    settings: Settings,
    rules: dict[str, Any],
) -> None:
    started = time.monotonic()
    traffic(kafka, settings)
    # Scraped, and seen ready (a scrape from before /readyz said so would still read 0).
    poll(
        lambda: True if prometheus.query(f'up{{job="{JOB}"}} == 1') else None,
        "the worker scraped (up == 1)",
    )
    poll(
        lambda: True if prometheus.query(f'liverank_ready{{job="{JOB}"}} == 1') else None,
        "the worker seen ready (liverank_ready == 1)",
    )

    dashboard = json.loads(DASHBOARD.read_text())
    variables = resolve_variables(
        dashboard, prometheus, {"namespace": NAMESPACE, "job": JOB, "pod": POD}
    )
    queries = [(where, substitute(expr, variables)) for where, expr in dashboard_queries(dashboard)]
    assert len(queries) >= 15
    for where, expr in queries:
        assert "$" not in expr, f"{where}: a variable left unresolved: {expr}"

    # All queries in one poll, with a click per round: rates over the short $__rate_interval
    # need traffic inside it (the first wave's counters were born before the first scrape, so
    # they show no increase). A query is done once it returns a series with a number (not
    # NaN): a histogram_quantile or a ratio with nothing to divide would be an empty panel.
    results: dict[str, list[dict[str, Any]]] = {}
    done: set[str] = set()
    items = itertools.cycle(item.item_id for item in CATALOG)

    def all_answered() -> bool | None:
        send(kafka, settings, "prom-live", "click", item_id=next(items))
        for where, expr in queries:
            if where not in done:
                results[where] = prometheus.query(expr)
                if any(math.isfinite(float(s["value"][1])) for s in results[where]):
                    done.add(where)
        return True if len(done) == len(queries) else None

    try:
        poll(all_answered, "every dashboard query answered with a series")
    except AssertionError:
        missing = [
            f"  {where}: {expr}\n    got {results.get(where)}"
            for where, expr in queries
            if where not in done
        ]
        raise AssertionError(
            "dashboard queries without a series (or only NaN):\n"
            + "\n".join(missing)
            + f"\n{worker.log_tail()}"
        ) from None

    # Alert rules: each expression evaluates as a query (it need not select anything while the
    # worker is healthy), and Prometheus's own evaluation of each rule reports no error.
    alerts = check_rules().alert_rules(rules)
    assert len(alerts) >= 6
    evaluated = {rule["alert"]: len(prometheus.query(str(rule["expr"]))) for rule in alerts}

    def rules_evaluated() -> list[dict[str, Any]] | None:
        loaded = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        evaluated_all = all(r["health"] != "unknown" for r in loaded)
        return loaded if evaluated_all and len(loaded) == len(alerts) else None

    loaded = poll(rules_evaluated, "every alert rule evaluated by Prometheus")
    assert {r["name"]: (r["health"], r.get("lastError", "")) for r in loaded} == {
        rule["alert"]: ("ok", "") for rule in alerts
    }

    # And the check can fail: a misspelt metric selects nothing, a broken expression is refused.
    assert prometheus.query("sum(rate(liverank_event_total[1m]))") == []
    with pytest.raises(PrometheusError, match="bad_data"):
        prometheus.query("rate(liverank_events_total)")

    print(f"\nPrometheus on a live worker, {time.monotonic() - started:.0f} s after the traffic:")
    for where, _ in queries:
        values = [s["value"][1] for s in results[where]]
        print(f"  {where}: {len(values)} series, {', '.join(values[:4])}")
    print(f"  alert rules (series selected now): {evaluated}")


def test_docstring_examples() -> None:
    from tests.integration import prometheus

    result = doctest.testmod(prometheus)
    assert result.attempted > 0 and result.failed == 0
