"""Process CPU time and memory from /proc (no psutil), and what machine the benchmark ran on."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
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


def parse_stat_ppid(stat: str) -> int:
    """The parent pid (field 4) from the text of ``/proc/<pid>/stat``.

    >>> parse_stat_ppid("42 (a (b) c) S 7 2 3")
    7
    """
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, grandchildren, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = parse_stat_ppid((entry / "stat").read_text())
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def sample_tree(pid: int, below: Sequence[int] | None = None) -> ProcSample | None:
    """:func:`sample` summed over ``pid`` and its descendants (``below``, when the caller
    looked them up already; else from /proc now): a supervisor's workers (``PROCESSES`` > 1)
    count as the system. The peak is the sum of each process's own peak, an upper bound on the
    tree's. None if ``pid`` is gone."""
    own = sample(pid)
    if own is None:
        return None
    others = descendants(pid) if below is None else below
    samples = [own, *(s for s in map(sample, others) if s is not None)]
    return ProcSample(
        cpu_s=sum(s.cpu_s for s in samples),
        rss_bytes=sum(s.rss_bytes for s in samples),
        peak_rss_bytes=sum(s.peak_rss_bytes for s in samples),
    )


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
