"""Offline check of the alert rules and the Grafana dashboard against the worker's own metrics.

Run by ``tests/unit/test_observability.py``, or as ``python deploy/validate_observability.py``.
No Prometheus, no Grafana, no network: every PromQL expression is parsed with ``promql-parser``
(PyPI; Rust bindings of GreptimeTeam's promql-parser, which also type-checks function
arguments), and every metric it names must be a series that a real ``app.ops.metrics.Metrics``
registry exposes, so the rules and the dashboard cannot drift from the code. Alerts need a
severity, a summary, a description and a runbook (a link into ``README.md`` or ``docs/*.md``
must name a heading there: the alerts' runbook is ``docs/operating.md#alerts``); the dashboard
needs unique panel ids, a description on every panel and the ``${datasource}`` variable on every
query; the ConfigMap that ships it (``deploy/grafana``, rendered with ``kubectl kustomize``)
must carry the file as it is, with the Grafana sidecar's label.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.dev.markdown_links import github_anchors  # noqa: E402 - path set first (run as a script)
from app.ops.metrics import Metrics  # noqa: E402 - path set first (run as a script)

RULES = ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "liverank.json"
# The documents a runbook_url may link (a path in this repository, #heading).
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SEVERITIES = {"critical", "warning", "info"}
# What prometheus_client's text exposition writes for a family of each type: the series names a
# query can select. A counter family "x" is scraped as x_total (and x_created), never as "x".
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
# Grafana's interval macros stand where PromQL wants a duration; substituted before parsing.
GRAFANA_INTERVALS = re.compile(r"\$\{?__(?:rate_interval|interval|range)\b\}?")
DATASOURCE_UID = "${datasource}"

Obj = dict[str, Any]


def known_series(registry: CollectorRegistry | None = None) -> dict[str, str]:
    """Series name -> what it is ("counter liverank_events"), for every family ``registry``
    (by default a fresh ``Metrics()``'s) collects.

    >>> known_series()["liverank_events_total"], "liverank_events" in known_series()
    ('counter liverank_events', False)
    """
    registry = registry if registry is not None else Metrics().registry
    series = {}
    for family in registry.collect():
        for suffix in SERIES_SUFFIXES[family.type]:
            series[family.name + suffix] = f"{family.type} {family.name}"
    return series


def selected_names(expr: promql_parser.Expr) -> Iterator[str | None]:
    """The metric name of every selector in ``expr``; None for one without a fixed name
    (no name, or ``__name__`` matched by a regular expression)."""
    found: list[str | None] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name is not None:
                found.append(node.name)
                return
            groups = [node.matchers.matchers, *node.matchers.or_matchers]
            names = [
                m.value
                for group in groups
                for m in group
                if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal
            ]
            found.extend(names or [None])

    promql_parser.walk(expr, visit)
    return iter(found)


def promql_errors(expr: str, known: Mapping[str, str], where: str) -> list[str]:
    """Why ``expr`` would not work: a parse or type error, or a series the worker does not
    expose.

    >>> promql_errors("rate(liverank_events_total[5m])", known_series(), "x")
    []
    >>> promql_errors("rate(liverank_events[5m])", known_series(), "x")
    ['x: unknown metric liverank_events']
    """
    try:
        parsed = promql_parser.parse(expr)
    except ValueError as exc:
        return [f"{where}: does not parse: {exc}"]
    errors = []
    for name in selected_names(parsed):
        if name is None:
            errors.append(f"{where}: a selector without a fixed metric name cannot be checked")
        elif name not in known:
            errors.append(f"{where}: unknown metric {name}")
    return errors


def doc_anchors() -> dict[str, set[str]]:
    """The anchors of every document a runbook may link, by its path in the repository
    (``README.md`` and ``docs/*.md``)."""
    return {
        str(path.relative_to(ROOT)): github_anchors(path.read_text(encoding="utf-8"))
        for path in DOCS
    }


def runbook_errors(runbook: str, anchors: Mapping[str, set[str]], where: str) -> list[str]:
    """A runbook link into this repository must name a document and one of its headings;
    absolute URLs are not checked.

    >>> runbook_errors("docs/operating.md#alerts", {"docs/operating.md": {"alerts"}}, "x")
    []
    >>> runbook_errors("docs/operating.md#scale", {"docs/operating.md": {"alerts"}}, "x")
    ['x: runbook docs/operating.md#scale: docs/operating.md has no such heading']
    """
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", runbook):
        return []
    path, _, anchor = runbook.partition("#")
    if path not in anchors:
        return [f"{where}: runbook {runbook}: no such document (README.md or docs/*.md)"]
    if anchor and anchor not in anchors[path]:
        return [f"{where}: runbook {runbook}: {path} has no such heading"]
    return []


def rule_errors(doc: Obj, known: Mapping[str, str], anchors: Mapping[str, set[str]]) -> list[str]:
    """A PrometheusRule's expressions, and each alert's labels and annotations; ``anchors``
    (from ``doc_anchors``) are the headings a runbook link may point at."""
    errors: list[str] = []
    if doc.get("kind") != "PrometheusRule":
        return [f"expected a PrometheusRule, got {doc.get('kind')}"]
    alerts: set[str] = set()
    groups = doc["spec"]["groups"]
    # Recording rules make new series that later rules may use.
    known = dict(known) | {
        r["record"]: "recording rule" for g in groups for r in g["rules"] if "record" in r
    }
    for group in groups:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record") or "?"
            where = f"rule {group['name']}/{name}"
            errors += promql_errors(str(rule["expr"]), known, where)
            if "alert" not in rule:
                continue
            if name in alerts:
                errors.append(f"{where}: a second alert of that name")
            alerts.add(name)
            severity = rule.get("labels", {}).get("severity")
            if severity not in SEVERITIES:
                errors.append(f"{where}: severity {severity!r}, want one of {sorted(SEVERITIES)}")
            annotations = rule.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                if not str(annotations.get(key, "")).strip():
                    errors.append(f"{where}: no {key} annotation")
            runbook = str(annotations.get("runbook_url", ""))
            if runbook:
                errors += runbook_errors(runbook, anchors, where)
    return errors


def _queries(dashboard: Obj) -> Iterator[tuple[str, Obj, str]]:
    """(where, holder of the datasource, PromQL) for every panel target and query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel.get('id')} {panel.get('title')!r} target {target.get('refId')}"
            yield where, target, str(target.get("expr", ""))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = str(query.get("query", "") if isinstance(query, dict) else query)
        # label_values(selector, label): Grafana's, around a PromQL selector.
        match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", text, re.S)
        yield f"variable {var.get('name')}", var, match.group(1) if match else text


def panels(dashboard: Obj) -> Iterator[Obj]:
    """Every panel, rows' collapsed panels included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_errors(dashboard: Obj, known: Mapping[str, str]) -> list[str]:
    errors: list[str] = []
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if ds is None or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errors.append("no datasource variable of type datasource for prometheus")
    ids: set[object] = set()
    for panel in panels(dashboard):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("id") in ids or not isinstance(panel.get("id"), int):
            errors.append(f"{where}: panel id missing or not unique")
        ids.add(panel.get("id"))
        if panel.get("type") == "row":
            continue
        if not str(panel.get("description", "")).strip():
            errors.append(f"{where}: no description")
        if not panel.get("targets"):
            errors.append(f"{where}: no queries")
        if panel.get("datasource", {}).get("uid") != DATASOURCE_UID:
            errors.append(f"{where}: datasource is not {DATASOURCE_UID}")
        refs = [t.get("refId") for t in panel.get("targets", [])]
        if len(refs) != len(set(refs)):
            errors.append(f"{where}: refIds not unique: {refs}")
    for where, holder, promql in _queries(dashboard):
        if (holder.get("datasource") or {}).get("uid") != DATASOURCE_UID:
            errors.append(f"{where}: datasource is not {DATASOURCE_UID}")
        errors += promql_errors(GRAFANA_INTERVALS.sub("5m", promql), known, where)
    return errors


def render(kustomization: Path) -> list[Obj]:
    """``kubectl kustomize`` (offline) and parse the stream of objects."""
    out = subprocess.run(  # noqa: S603 - fixed argv, no shell
        ["kubectl", "kustomize", str(kustomization)],  # noqa: S607 - kubectl from PATH on purpose
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def configmap_errors(objs: list[Obj], dashboard_text: str) -> list[str]:
    """The rendered dashboard ConfigMap: valid, labelled for the sidecar, the file unchanged."""
    from kubernetes_validate.utils import ValidationError, validate

    maps = [o for o in objs if o.get("kind") == "ConfigMap"]
    if len(maps) != 1:
        return [f"expected one ConfigMap, found {len(maps)}"]
    cm = maps[0]
    errors = []
    try:
        # The Kubernetes version deploy/validate_k8s.py checks against.
        validate(copy.deepcopy(cm), "1.32", strict=True)
    except ValidationError as exc:
        errors.append(f"ConfigMap: {exc.json_path}: {exc.message}")
    if cm["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
        errors.append('ConfigMap: no label grafana_dashboard: "1" (the sidecar would skip it)')
    if cm.get("data", {}).get(DASHBOARD.name) != dashboard_text:
        errors.append(f"ConfigMap: {DASHBOARD.name} differs from {DASHBOARD.relative_to(ROOT)}")
    # kubectl apply keeps the whole object in an annotation, at most 256 KiB.
    if len(dashboard_text.encode()) > 200_000:
        errors.append("dashboard over 200 kB: kubectl apply would refuse it; use server-side apply")
    return errors


def check() -> list[str]:
    known = known_series()
    anchors = doc_anchors()
    text = DASHBOARD.read_text()
    return (
        rule_errors(yaml.safe_load(RULES.read_text()), known, anchors)
        + dashboard_errors(json.loads(text), known)
        + configmap_errors(render(GRAFANA), text)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args(argv)
    errors = check()
    for error in errors:
        print(f"  {error}")
    status = f"{len(errors)} error(s)" if errors else "ok"
    print(f"rules, dashboard and its ConfigMap: {status}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
