"""The alert rules and the Grafana dashboard parse, name only metrics the worker exposes, and are
complete; and the validator goes red on each kind of breakage."""

from __future__ import annotations

import copy
import doctest
import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

pytest.importorskip("promql_parser", reason="the dev extra installs promql-parser")

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "deploy" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


v = _load("validate_observability")
needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl renders the kustomizations"
)

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def known() -> dict[str, str]:
    return v.known_series()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def anchors() -> dict[str, set[str]]:
    return v.doc_anchors()  # type: ignore[no-any-return]


@pytest.fixture
def rules() -> Obj:
    return yaml.safe_load(v.RULES.read_text())  # type: ignore[no-any-return]


@pytest.fixture
def dashboard() -> Obj:
    return json.loads(v.DASHBOARD.read_text())  # type: ignore[no-any-return]


def test_rules_pass(rules: Obj, known: dict[str, str], anchors: dict[str, set[str]]) -> None:
    assert v.rule_errors(rules, known, anchors) == []


def test_dashboard_passes(dashboard: Obj, known: dict[str, str]) -> None:
    assert v.dashboard_errors(dashboard, known) == []


@needs_kubectl
def test_dashboard_configmap_passes() -> None:
    assert v.configmap_errors(v.render(v.GRAFANA), v.DASHBOARD.read_text()) == []


def test_the_alerts_are_there(rules: Obj) -> None:
    alerts = {r["alert"] for g in rules["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {
        "LiverankConsumerLagGrowing",
        "LiverankEndToEndLatencyHigh",
        "LiverankDeadLettersHigh",
        "LiverankNoReadyWorkers",
        "LiverankDegradationHigh",
        "LiverankNoProgress",
    }


def test_the_dashboard_shows_what_an_sre_needs(dashboard: Obj) -> None:
    exprs = " ".join(t["expr"] for p in v.panels(dashboard) for t in p.get("targets", []))
    for series in (
        "liverank_events_total",
        "liverank_recommendations_total",
        "liverank_end_to_end_latency_seconds_bucket",
        "liverank_consumer_lag_records",
        "liverank_behind_seconds",
        "liverank_dead_letters_total",
        "liverank_degraded_total",
        "liverank_model_info",
        "liverank_live_hit_rate",
        "liverank_live_ctr",
        "liverank_ready",
        "liverank_model_reloads_total",
    ):
        assert series in exprs
    variables = {t["name"] for t in dashboard["templating"]["list"]}
    assert {"datasource", "job", "pod"} <= variables


def test_series_follow_the_metric_types(known: dict[str, str]) -> None:
    # counters are scraped with _total, histograms as _bucket/_sum/_count, gauges as they are
    assert "liverank_events_total" in known and "liverank_events" not in known
    assert "liverank_end_to_end_latency_seconds_bucket" in known
    assert "liverank_end_to_end_latency_seconds" not in known
    assert "liverank_ready" in known and "liverank_ready_total" not in known
    assert "liverank_consumer_lag_records" in known
    # collected at scrape time by app/ops/quality.py's collector, not declared up front
    assert "liverank_live_hit_rate" in known


def _rule(name: str) -> Callable[[Obj], Obj]:
    return lambda doc: next(
        r for g in doc["spec"]["groups"] for r in g["rules"] if r.get("alert") == name
    )


LAG = _rule("LiverankConsumerLagGrowing")

# Each breakage must be caught: the validator is only worth its green if it can go red.
RULE_BREAKAGES: dict[str, tuple[Callable[[Obj], None], str]] = {
    "unclosed parenthesis": (lambda d: LAG(d).update(expr="sum(liverank_ready"), "does not parse"),
    "rate of an instant vector": (
        lambda d: LAG(d).update(expr="rate(liverank_events_total) > 0"),
        "expected type matrix",
    ),
    "unknown function": (
        lambda d: LAG(d).update(expr="rat(liverank_events_total[5m]) > 0"),
        "does not parse",
    ),
    "misspelt metric": (
        lambda d: LAG(d).update(expr="sum(liverank_consumer_lag) > 0"),
        "unknown metric liverank_consumer_lag",
    ),
    "counter without _total": (
        lambda d: LAG(d).update(expr="rate(liverank_dead_letters[5m]) > 0"),
        "unknown metric liverank_dead_letters",
    ),
    "histogram without _bucket": (
        lambda d: LAG(d).update(
            expr="histogram_quantile(0.99, rate(liverank_end_to_end_latency_seconds[5m])) > 1"
        ),
        "unknown metric liverank_end_to_end_latency_seconds",
    ),
    "selector without a name": (
        lambda d: LAG(d).update(expr='sum({job="liverank"}) > 0'),
        "without a fixed metric name",
    ),
    "no severity": (lambda d: LAG(d)["labels"].pop("severity"), "severity None"),
    "unknown severity": (lambda d: LAG(d)["labels"].update(severity="page"), "severity 'page'"),
    "no summary": (lambda d: LAG(d)["annotations"].pop("summary"), "no summary"),
    "no runbook": (lambda d: LAG(d)["annotations"].pop("runbook_url"), "no runbook_url"),
    "runbook to a missing heading": (
        lambda d: LAG(d)["annotations"].update(runbook_url="docs/operating.md#no-such-section"),
        "docs/operating.md has no such heading",
    ),
    "runbook to a missing document": (
        lambda d: LAG(d)["annotations"].update(runbook_url="docs/runbooks.md#alerts"),
        "no such document",
    ),
    "runbook to the old README heading": (
        lambda d: LAG(d)["annotations"].update(runbook_url="README.md#alerts"),
        "README.md has no such heading",
    ),
    "two alerts of one name": (
        lambda d: d["spec"]["groups"][0]["rules"].append(copy.deepcopy(LAG(d))),
        "a second alert of that name",
    ),
}


@pytest.mark.parametrize("case", sorted(RULE_BREAKAGES))
def test_rule_breakage_is_caught(
    case: str, rules: Obj, known: dict[str, str], anchors: dict[str, set[str]]
) -> None:
    breaks, message = RULE_BREAKAGES[case]
    breaks(rules)
    errors = v.rule_errors(rules, known, anchors)
    assert any(message in e for e in errors), errors


def test_a_recording_rule_names_a_series(
    rules: Obj, known: dict[str, str], anchors: dict[str, set[str]]
) -> None:
    rules["spec"]["groups"][0]["rules"] += [
        {"record": "liverank:lag:sum", "expr": "sum(liverank_consumer_lag_records)"},
    ]
    LAG(rules)["expr"] = "liverank:lag:sum > 5000"
    assert v.rule_errors(rules, known, anchors) == []


def _panel(title: str) -> Callable[[Obj], Obj]:
    return lambda doc: next(p for p in v.panels(doc) if p.get("title") == title)


LATENCY = _panel("End-to-end latency")

DASHBOARD_BREAKAGES: dict[str, tuple[Callable[[Obj], None], str]] = {
    "unknown metric in a target": (
        lambda d: LATENCY(d)["targets"][0].update(expr="sum(rate(liverank_event_total[5m]))"),
        "unknown metric liverank_event_total",
    ),
    "broken target": (
        lambda d: LATENCY(d)["targets"][0].update(expr="histogram_quantile(0.5, "),
        "does not parse",
    ),
    "a fixed data source": (
        lambda d: LATENCY(d)["targets"][1].update(datasource={"type": "prometheus", "uid": "abc"}),
        "target B: datasource is not ${datasource}",
    ),
    "panel with a fixed data source": (
        lambda d: LATENCY(d).update(datasource={"type": "prometheus", "uid": "abc"}),
        "'End-to-end latency': datasource is not ${datasource}",
    ),
    "two panels of one id": (
        lambda d: LATENCY(d).update(id=_panel("Recommendations")(d)["id"]),
        "not unique",
    ),
    "panel without a description": (lambda d: LATENCY(d).pop("description"), "no description"),
    "two targets of one refId": (
        lambda d: LATENCY(d)["targets"][1].update(refId="A"),
        "refIds not unique",
    ),
    "unknown metric in a variable": (
        lambda d: d["templating"]["list"][3]["query"].update(
            query="label_values(liverank_readyy, pod)"
        ),
        "variable pod: unknown metric liverank_readyy",
    ),
    "no datasource variable": (
        lambda d: d["templating"]["list"].pop(0),
        "no datasource variable",
    ),
}


@pytest.mark.parametrize("case", sorted(DASHBOARD_BREAKAGES))
def test_dashboard_breakage_is_caught(case: str, dashboard: Obj, known: dict[str, str]) -> None:
    breaks, message = DASHBOARD_BREAKAGES[case]
    breaks(dashboard)
    errors = v.dashboard_errors(dashboard, known)
    assert any(message in e for e in errors), errors


def test_a_metric_removed_from_the_code_is_caught(dashboard: Obj, known: dict[str, str]) -> None:
    without = {k: w for k, w in known.items() if not k.startswith("liverank_consumer_lag_records")}
    errors = v.dashboard_errors(dashboard, without)
    assert any("unknown metric liverank_consumer_lag_records" in e for e in errors), errors


@needs_kubectl
def test_configmap_breakage_is_caught() -> None:
    objs = v.render(v.GRAFANA)
    text = v.DASHBOARD.read_text()
    unlabelled = copy.deepcopy(objs)
    unlabelled[0]["metadata"]["labels"].pop("grafana_dashboard")
    assert any("grafana_dashboard" in e for e in v.configmap_errors(unlabelled, text))
    assert any("differs" in e for e in v.configmap_errors(objs, text.replace("p99", "p98")))
    bad_field = copy.deepcopy(objs)
    bad_field[0]["dato"] = bad_field[0].pop("data")
    assert any("'dato'" in e for e in v.configmap_errors(bad_field, text))


@needs_kubectl
def test_the_rule_schema_catches_a_bad_duration() -> None:
    pytest.importorskip("kubernetes_validate", reason="the dev extra installs it")
    k8s = _load("validate_k8s")
    objs = k8s.render(ROOT / "deploy" / "k8s" / "overlays" / "cpu")
    rule = next(o for o in objs if o["kind"] == "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["for"] = "10 minutes"
    errors = k8s.validate_schemas([rule], k8s.load_crd_schemas())
    assert any("for" in e and "does not match" in e for e in errors), errors


def test_docstring_examples() -> None:
    result = doctest.testmod(v)
    assert result.attempted > 0 and result.failed == 0
