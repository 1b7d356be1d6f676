"""Runs a real ``prometheus`` server for tests, and asks it PromQL the way Grafana does."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from app.dev.localkafka import pick_free_ports

ROOT = Path(__file__).resolve().parents[2]


def check_rules() -> ModuleType:
    """deploy/prometheus/check_rules.py (not a package): the rules file and the tool finder."""
    spec = importlib.util.spec_from_file_location(
        "check_rules", ROOT / "deploy" / "prometheus" / "check_rules.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require(tool: str) -> str:
    """The path of ``tool``; fails the test (never skips it) when it is not installed."""
    rules = check_rules()
    path = rules.find_tool(tool)
    if path is None:
        pytest.fail(rules.MISSING.format(tool=tool), pytrace=False)
    return str(path)


class PrometheusError(RuntimeError):
    """Prometheus answered with an error (a bad expression, a timeout). Not an AssertionError:
    a poll retries those, and this one should end the test at once, with its reason."""


class PrometheusProcess:
    """A ``prometheus`` server on a free loopback port, with its own config and data folder."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = pick_free_ports(1)[0]
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(
        self,
        targets: Sequence[str],
        labels: Mapping[str, str],
        rule_files: Sequence[Path] = (),
        job: str = "liverank",
        scrape_interval_s: int = 1,
    ) -> Path:
        """One static scrape job; ``labels`` stand for the ones Kubernetes service discovery
        gives a pod (namespace, pod) under the ServiceMonitor."""
        interval = f"{scrape_interval_s}s"
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,  # may not exceed the interval
                "evaluation_interval": interval,
            },
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": list(targets), "labels": dict(labels)}],
                }
            ],
        }
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self, config: Path, ready_timeout_s: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self._status("/-/ready") == 200:
                return
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {ready_timeout_s}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as resp:  # noqa: S310 - loopback
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0

    def api(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        """``data`` of an HTTP API answer (GET ``/api/v1/<path>``); PrometheusError on an error."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - loopback
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The series of an instant query (``/api/v1/query``), evaluated now."""
        data = self.api("query", [("query", expr)])
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's ``label_values(match, label)`` lists."""
        return list(self.api(f"label/{label}/values", [("match[]", match)]))

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def grafana_intervals(
    range_s: int, scrape_interval_s: int, max_data_points: int = 1000
) -> dict[str, str]:
    """Grafana's interval variables for a dashboard time range, with the data source's scrape
    interval set to Prometheus's. Grafana also rounds ``$__interval`` to a "nice" step; whole
    seconds are close enough here.

    >>> grafana_intervals(3 * 3600, 1)["__rate_interval"]
    '12s'
    >>> grafana_intervals(300, 15)["__rate_interval"]
    '60s'
    """
    interval = max(scrape_interval_s, math.ceil(range_s / max_data_points))
    rate_interval = max(interval + scrape_interval_s, 4 * scrape_interval_s)
    return {
        "__interval": f"{interval}s",
        "__interval_ms": str(interval * 1000),
        "__rate_interval": f"{rate_interval}s",
        "__range": f"{range_s}s",
        "__range_s": str(range_s),
    }


def relative_seconds(grafana_time: str) -> int:
    """``now-3h`` -> 10800: the length of a dashboard's relative ``time.from``."""
    match = re.fullmatch(r"now-(\d+)([smhdw])", grafana_time)
    assert match, f"not a relative time: {grafana_time}"
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return int(match.group(1)) * unit


def regex_value(values: Sequence[str]) -> str:
    """A multi-value variable's selection as Grafana writes it into a ``=~`` matcher: each value
    regex-escaped (inside a PromQL string, so backslashes doubled), several as ``(a|b)``.

    >>> regex_value(["liverank-0"]), regex_value(["a.b", "c"])
    ('liverank-0', '(a\\\\\\\\.b|c)')
    """
    escaped = [re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """``$name`` and ``${name}`` replaced by ``variables[name]``; longest names first, so that
    ``$__interval`` does not eat the start of ``$__interval_ms``.

    >>> substitute('rate(x{job=~"$job"}[$__rate_interval])', {"job": "a", "__rate_interval": "4s"})
    'rate(x{job=~"a"}[4s])'
    """
    for name in sorted(variables, key=len, reverse=True):
        value = variables[name]
        text = text.replace("${" + name + "}", value)
        # Backslashes doubled: re.sub would read the value's own as escapes.
        pattern = r"\$" + re.escape(name) + r"(?![A-Za-z0-9_])"
        text = re.sub(pattern, value.replace("\\", "\\\\"), text)
    return text
