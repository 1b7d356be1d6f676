"""The supervisor's pure parts (process count, layout, exit codes, merged metrics, probes) and
its process handling with stand-in children (no broker)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.core.settings import Settings, SettingsError
from app.ops.metrics import Metrics
from app.streams.supervisor import (
    ChildProbe,
    Supervisor,
    cgroup_cpu_quota,
    child_env,
    cpus_available,
    exit_code_for,
    layout,
    merge_metrics,
    parse_cpu_max,
    process_count,
)


def test_processes_setting_is_validated() -> None:
    assert Settings().processes == 1
    assert Settings.from_env({"LIVERANK_PROCESSES": "0"}).processes == 0
    with pytest.raises(SettingsError):
        Settings(processes=-1)


@pytest.mark.parametrize(
    ("affinity", "quota", "want"),
    [(8, None, 8), (8, 2.0, 2), (8, 2.9, 2), (2, 4.0, 2), (4, 0.5, 1), (1, None, 1)],
)
def test_cpus_available_is_affinity_capped_by_the_quota(
    affinity: int, quota: float | None, want: int
) -> None:
    assert cpus_available(affinity, quota) == want


def test_process_count_zero_means_one_per_cpu() -> None:
    assert process_count(0, affinity=lambda: 16, quota=lambda: 3.0) == 3
    assert process_count(0, affinity=lambda: 2, quota=lambda: None) == 2
    assert process_count(1, affinity=lambda: 16, quota=lambda: None) == 1
    assert process_count(0) >= 1  # this machine's own affinity and cgroup


def test_cgroup_quota_v2_and_v1(tmp_path: Path) -> None:
    assert parse_cpu_max("max 100000\n") is None
    assert parse_cpu_max("150000 100000\n") == 1.5
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("400000 100000\n")
    assert cgroup_cpu_quota(v2) == 4.0
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    assert cgroup_cpu_quota(v1) == 2.0
    assert cgroup_cpu_quota(tmp_path / "absent") is None


def test_layout_gives_each_child_a_directory_and_a_loopback_port(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", http_port=9000, http_host="0.0.0.0")  # noqa: S104
    specs = layout(settings, 3)
    assert [s.data_dir for s in specs] == [tmp_path / "data" / f"p{i}" for i in range(3)]
    assert [s.http_port for s in specs] == [9001, 9002, 9003]
    env = child_env(settings, specs[1], {"PATH": "/bin", "LIVERANK_PROCESSES": "3"})
    assert env["PATH"] == "/bin"
    child = Settings.from_env({k: v for k, v in env.items() if k.startswith("LIVERANK_")})
    assert child == settings.replace(
        processes=1, data_dir=tmp_path / "data" / "p1", http_host="127.0.0.1", http_port=9002
    )


def test_exit_codes() -> None:
    assert exit_code_for(3) == 3
    assert exit_code_for(-signal.SIGKILL) == 7
    assert exit_code_for(0) == 7  # a child that ends without being asked has failed


def test_merged_metrics_label_every_sample_and_declare_each_family_once() -> None:
    a, b = Metrics(quality_k=10), Metrics(quality_k=10)
    a.dead_letters.labels("schema").inc(2)
    b.dead_letters.labels("schema").inc(3)
    a.consumer_lag.labels("events", "0").set(5)
    b.consumer_lag.labels("events", "1").set(7)
    text = merge_metrics(
        {"0": generate_latest(a.registry).decode(), "1": generate_latest(b.registry).decode()}
    ).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    types = [line for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types))
    dead = {
        s.labels["process"]: s.value
        for s in families["liverank_dead_letters"].samples
        if s.name == "liverank_dead_letters_total"
    }
    assert dead == {"0": 2.0, "1": 3.0}
    lag = {
        (s.labels["process"], s.labels["partition"])
        for s in families["liverank_consumer_lag_records"].samples
    }
    assert lag == {("0", "0"), ("1", "1")}
    assert all("process" in s.labels for f in families.values() for s in f.samples)


def test_child_probe() -> None:
    now = [0.0]
    probe = ChildProbe(stale_after_s=30.0, clock=lambda: now[0])
    assert probe.live() and not probe.ready()  # starting
    probe.record(0, 0)
    assert probe.live()  # never answered yet: still starting
    probe.record(200, 503)
    assert probe.live() and not probe.ready()
    probe.record(200, 200)
    assert probe.ready()
    probe.record(503, 200)
    assert not probe.live() and not probe.ready()
    probe.record(200, 200)
    now[0] = 10.0
    probe.record(0, 0)  # a missed poll is not yet a failure...
    assert probe.live() and not probe.ready()
    now[0] = 31.0  # ...silence past the staleness is
    assert not probe.live()


CHILD = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(int(sys.argv[1])))\n"
    "time.sleep(float(sys.argv[2]))\n"
    "sys.exit(int(sys.argv[3]))\n"
)


def supervisor(tmp_path: Path, command: list[str]) -> Supervisor:
    settings = Settings(data_dir=tmp_path, http_port=0, shutdown_grace_s=5.0)
    return Supervisor(settings, 2, {"PATH": "/usr/bin:/bin"}, command)


def test_a_child_exiting_stops_the_others_with_its_code(tmp_path: Path) -> None:
    # Each child sleeps 0.3 s then exits 3; a SIGTERM makes it exit 0.
    sup = supervisor(tmp_path, [sys.executable, "-c", CHILD, "0", "0.3", "3"])
    assert sup.run() == 3
    assert all(c.proc.poll() is not None for c in sup.children)


def test_sigterm_is_forwarded_and_a_clean_stop_exits_0(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, [sys.executable, "-c", CHILD, "0", "600", "9"])
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(sup.wait()))
    sup.start()
    try:
        thread.start()
        time.sleep(0.5)
        sup._signal(signal.SIGTERM, None)
        thread.join(timeout=30)
        assert result == [0]
    finally:
        for child in sup.children:
            child.proc.kill()
            child.proc.wait()
