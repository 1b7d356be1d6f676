"""The alert rules under Prometheus's own promtool: ``check rules`` and ``test rules``.

Run by ``tests/unit/test_promtool.py``, or as ``python deploy/prometheus/check_rules.py``. The
rules live in one place, the PrometheusRule ``deploy/k8s/base/prometheusrule.yaml``; its ``spec``
is a plain Prometheus rules file, so it is written out (``liverank.rules.yml``) into a scratch
folder next to a copy of the unit tests ``deploy/prometheus/alerts.test.yml``, whose
``rule_files`` name it. The unit tests must give every alert a case where it fires and one
where it stays quiet. promtool comes with Debian's ``prometheus`` package (``scripts/setup``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml"
UNIT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
RULES_FILE = "liverank.rules.yml"
MISSING = (
    "{tool} not found on PATH: scripts/setup installs it (run it as root; it installs Debian's "
    "prometheus package, which has prometheus and promtool), or apt-get install prometheus"
)

Obj = dict[str, Any]


def find_tool(name: str) -> str | None:
    """The path of ``promtool`` or ``prometheus``; None when it is not installed."""
    return shutil.which(name)


def rules_spec(crd: Path = RULES) -> Obj:
    """The PrometheusRule's ``spec``: ``groups`` of rules, as Prometheus reads a rules file."""
    doc = yaml.safe_load(crd.read_text())
    if doc.get("kind") != "PrometheusRule":
        raise ValueError(f"{crd}: expected a PrometheusRule, got {doc.get('kind')}")
    return dict(doc["spec"])


def alert_rules(spec: Obj) -> list[Obj]:
    """Every alerting rule of every group, in order."""
    return [rule for group in spec["groups"] for rule in group["rules"] if "alert" in rule]


def write_rules(spec: Obj, dest: Path) -> Path:
    """``spec`` as ``dest/liverank.rules.yml``."""
    path = dest / RULES_FILE
    path.write_text(yaml.safe_dump(spec, sort_keys=False, width=100))
    return path


def stage(dest: Path, spec: Obj | None = None, unit_tests: Obj | None = None) -> Path:
    """The rules file and the unit tests (by default the repository's) side by side in ``dest``;
    the unit tests' path."""
    write_rules(spec if spec is not None else rules_spec(), dest)
    path = dest / UNIT_TESTS.name
    if unit_tests is None:
        shutil.copyfile(UNIT_TESTS, path)
    else:
        path.write_text(yaml.safe_dump(unit_tests, sort_keys=False, width=100))
    return path


def coverage(unit_tests: Obj) -> tuple[set[str], set[str]]:
    """(alerts with a case that expects them to fire, alerts with a case that expects none).

    >>> coverage({"tests": [{"alert_rule_test": [
    ...     {"alertname": "A", "eval_time": "5m", "exp_alerts": [{"exp_labels": {}}]},
    ...     {"alertname": "B", "eval_time": "5m"}]}]})
    ({'A'}, {'B'})
    """
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in unit_tests.get("tests") or []:
        for case in test.get("alert_rule_test") or []:
            (firing if case.get("exp_alerts") else quiet).add(str(case["alertname"]))
    return firing, quiet


def coverage_errors(alerts: Iterable[str], unit_tests: Obj) -> list[str]:
    """Alerts the unit tests never see firing, or never see quiet; cases for unknown alerts.

    >>> coverage_errors(["A"], {"tests": [{"alert_rule_test": [{"alertname": "A"}]}]})
    ['A: no case where it fires']
    """
    firing, quiet = coverage(unit_tests)
    known = set(alerts)
    errors = []
    for name in sorted(known):
        if name not in firing:
            errors.append(f"{name}: no case where it fires")
        if name not in quiet:
            errors.append(f"{name}: no case where it stays quiet")
    errors += [
        f"{name}: a case for an alert the rules do not have"
        for name in sorted((firing | quiet) - known)
    ]
    return errors


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``promtool`` with ``args``, its output captured (no check of the exit status)."""
    tool = find_tool("promtool")
    if tool is None:
        raise FileNotFoundError(MISSING.format(tool="promtool"))
    return subprocess.run(  # noqa: S603 - fixed argv, no shell
        [tool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args(argv)
    if find_tool("promtool") is None:
        print(MISSING.format(tool="promtool"), file=sys.stderr)
        return 2
    spec = rules_spec()
    errors = coverage_errors(
        (r["alert"] for r in alert_rules(spec)), yaml.safe_load(UNIT_TESTS.read_text())
    )
    with tempfile.TemporaryDirectory(prefix="liverank-promtool-") as tmp:
        tests = stage(Path(tmp), spec)
        failed = 0
        for args in (("check", "rules", tests.parent / RULES_FILE), ("test", "rules", tests)):
            done = promtool(*args)
            print(f"$ promtool {' '.join(map(str, args[:2]))}\n{done.stdout}{done.stderr}")
            failed += done.returncode != 0
    for error in errors:
        print(f"  {error}")
    print(f"promtool: {failed} command(s) failed; coverage: {len(errors)} error(s)")
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
