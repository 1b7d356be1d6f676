"""The alert rules pass ``promtool check rules`` and the unit tests in
deploy/prometheus/alerts.test.yml (``promtool test rules``), which give every alert a case where
it fires and one where it stays quiet; and each of these checks goes red when it should."""

from __future__ import annotations

import copy
import doctest
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    path = ROOT / "deploy" / "prometheus" / "check_rules.py"
    spec = importlib.util.spec_from_file_location("check_rules", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


c = _load()

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def promtool() -> None:
    # Not a skip: a machine without promtool would pass without ever checking the rules.
    if c.find_tool("promtool") is None:
        pytest.fail(c.MISSING.format(tool="promtool"), pytrace=False)


@pytest.fixture
def spec() -> Obj:
    return c.rules_spec()  # type: ignore[no-any-return]  # module loaded by path


@pytest.fixture
def unit_tests() -> Obj:
    return yaml.safe_load(c.UNIT_TESTS.read_text())  # type: ignore[no-any-return]  # yaml gives Any


def _firing_case(unit_tests: Obj, alert: str) -> Obj:
    return next(
        case
        for test in unit_tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert and case.get("exp_alerts")
    )


def test_the_rules_file_is_the_prometheusrule_spec(tmp_path: Path, spec: Obj) -> None:
    written = c.write_rules(spec, tmp_path)
    assert yaml.safe_load(written.read_text()) == yaml.safe_load(c.RULES.read_text())["spec"]
    assert c.RULES_FILE in yaml.safe_load(c.UNIT_TESTS.read_text())["rule_files"]


def test_promtool_check_rules(promtool: None, tmp_path: Path, spec: Obj) -> None:
    done = c.promtool("check", "rules", c.write_rules(spec, tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(c.alert_rules(spec))} rules found" in done.stdout


def test_promtool_test_rules(promtool: None, tmp_path: Path) -> None:
    done = c.promtool("test", "rules", c.stage(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_and_a_quiet_case(spec: Obj, unit_tests: Obj) -> None:
    alerts = [r["alert"] for r in c.alert_rules(spec)]
    assert len(alerts) >= 6
    firing, quiet = c.coverage(unit_tests)
    assert c.coverage_errors(alerts, unit_tests) == []
    assert set(alerts) <= firing and set(alerts) <= quiet


def test_a_new_alert_without_cases_is_caught(spec: Obj, unit_tests: Obj) -> None:
    alerts = [r["alert"] for r in c.alert_rules(spec)] + ["LiverankSomethingNew"]
    assert c.coverage_errors(alerts, unit_tests) == [
        "LiverankSomethingNew: no case where it fires",
        "LiverankSomethingNew: no case where it stays quiet",
    ]


def test_an_alert_without_a_quiet_case_is_caught(spec: Obj, unit_tests: Obj) -> None:
    alerts = [r["alert"] for r in c.alert_rules(spec)]
    for test in unit_tests["tests"]:
        test["alert_rule_test"] = [
            case
            for case in test.get("alert_rule_test", [])
            if case["alertname"] != "LiverankNoProgress" or case.get("exp_alerts")
        ]
    assert c.coverage_errors(alerts, unit_tests) == [
        "LiverankNoProgress: no case where it stays quiet"
    ]


# promtool test rules is only worth its green if it goes red: a wrong expectation in the tests,
# or a rule changed under them.
def _wrong_severity(spec: Obj, tests: Obj) -> None:
    _firing_case(tests, "LiverankDeadLettersHigh")["exp_alerts"][0]["exp_labels"]["severity"] = (
        "critical"
    )


def _wrong_annotation(spec: Obj, tests: Obj) -> None:
    annotations = _firing_case(tests, "LiverankNoProgress")["exp_alerts"][0]["exp_annotations"]
    annotations["description"] = annotations["description"].replace("11m 0s", "10m 0s")


def _expects_quiet_where_it_fires(spec: Obj, tests: Obj) -> None:
    _firing_case(tests, "LiverankConsumerLagGrowing")["exp_alerts"] = []


def _threshold_raised(spec: Obj, tests: Obj) -> None:
    rule = next(r for r in c.alert_rules(spec) if r["alert"] == "LiverankDegradationHigh")
    rule["expr"] = rule["expr"].replace("> 0.05", "> 0.5")


def _for_lengthened(spec: Obj, tests: Obj) -> None:
    next(r for r in c.alert_rules(spec) if r["alert"] == "LiverankNoReadyWorkers")["for"] = "6m"


BREAKAGES = {
    "wrong severity expected": _wrong_severity,
    "wrong annotation expected": _wrong_annotation,
    "quiet expected where it fires": _expects_quiet_where_it_fires,
    "threshold raised in the rule": _threshold_raised,
    "for: lengthened in the rule": _for_lengthened,
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_promtool_test_rules_goes_red(
    promtool: None, case: str, tmp_path: Path, spec: Obj, unit_tests: Obj
) -> None:
    broken_spec, broken_tests = copy.deepcopy(spec), copy.deepcopy(unit_tests)
    BREAKAGES[case](broken_spec, broken_tests)
    done = c.promtool("test", "rules", c.stage(tmp_path, broken_spec, broken_tests))
    assert done.returncode != 0, done.stdout
    assert "FAILED" in done.stdout + done.stderr


def test_promtool_check_rules_goes_red(promtool: None, tmp_path: Path, spec: Obj) -> None:
    rule = next(r for r in c.alert_rules(spec) if r["alert"] == "LiverankNoProgress")
    rule["expr"] = "rate(liverank_events_total) > 0"  # rate of an instant vector
    done = c.promtool("check", "rules", c.write_rules(spec, tmp_path))
    assert done.returncode != 0, done.stdout
    assert "expected type range vector" in done.stdout + done.stderr


def test_docstring_examples() -> None:
    result = doctest.testmod(c)
    assert result.attempted > 0 and result.failed == 0
