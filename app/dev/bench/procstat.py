"""Process CPU time and memory from /proc (no psutil), and what machine the benchmark ran on."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcSample:
    """CPU seconds (user + system, every thread) and resident memory of one process."""

    cpu_s: float
    rss_bytes: int
    peak_rss_bytes: int


def parse_stat_cpu_ticks(stat: str) -> tuple[int, int]:
    """(utime, stime) in clock ticks from the text of ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may itself hold spaces or parentheses,
    so fields are counted from the last ``)``.

    >>> parse_stat_cpu_ticks("42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13")
    (11, 12)
    """
    rest = stat[stat.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(rest[11]), int(rest[12])


def parse_status_memory(status: str) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes from the text of ``/proc/<pid>/status`` (0 when absent).

    >>> parse_status_memory("Name:\\tx\\nVmHWM:\\t  2048 kB\\nVmRSS:\\t  1024 kB\\n")
    (1048576, 2097152)
    """
    values = {"VmRSS": 0, "VmHWM": 0}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            number, _, unit = rest.strip().partition(" ")
            values[key] = int(number) * (1024 if unit.strip() == "kB" else 1)
    return values["VmRSS"], values["VmHWM"]


_TICKS = os.sysconf("SC_CLK_TCK")


def sample(pid: int) -> ProcSample | None:
    """The process's CPU and memory now, or None if it is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        status = (PROC / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    utime, stime = parse_stat_cpu_ticks(stat)
    rss, hwm = parse_status_memory(status)
    return ProcSample(cpu_s=(utime + stime) / _TICKS, rss_bytes=rss, peak_rss_bytes=hwm)


def machine_info() -> dict[str, Any]:
    """CPU model and count, memory, kernel and the versions that shape the numbers."""
    model = ""
    try:
        for line in (PROC / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except FileNotFoundError:
        pass
    mem_total = 0
    try:
        for line in (PROC / "meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
                break
    except FileNotFoundError:
        pass
    versions: dict[str, str | None] = {}
    for dist in ("confluent-kafka", "onnxruntime", "numpy", "faust-streaming", "rocksdict"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu_model": model,
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": mem_total,
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "versions": versions,
    }
