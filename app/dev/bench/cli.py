"""``python -m app.dev.bench``: parse options, run the benchmark, write and print the report."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from app.core.settings import ENV_PREFIX, Settings, SettingsError
from app.dev.bench.report import render_markdown, write_all
from app.dev.bench.runner import MAX_WARMUP_S, SKIP_ABOVE, Bench, BenchConfig, say
from app.dev.bench.systems import (
    NAIVE,
    NAIVE_FULL,
    PIPE,
    QUIX,
    QUIX_PYTHON,
    ROOT,
    WORKER,
    WORKER_2P,
    WORKER_SHADOW,
    apply_env,
    parse_env_pairs,
)


@dataclass(frozen=True, slots=True)
class Preset:
    catalogs: str
    rates: str
    pipe_rates: str
    duration_s: float
    warmup_s: float
    max_duration_s: float
    users: int
    templates: int
    repeats: int
    max_warmup_s: float
    # None: no rate is skipped. The smoke run runs every level on every system however slow
    # the machine is: it checks that each one answers, and a busy CI machine must not turn
    # that into a skipped level.
    skip_above: float | None = SKIP_ABOVE


# Quick: one catalog, max and the two latency targets' rates, two rounds; under 5 minutes on a
# 2-core machine, broker start included (4 min 58 s on a slow day with 1.5 s and 4 s warm-ups;
# the warm-ups are what can give: the systems stay warm between levels, and the saturation
# controller fills its standing backlog within about two seconds).
QUICK = Preset("10000", "300,1000", "1000", 5.0, 1.0, 5.0, 10_000, 40_000, 2, 3.0)
# Smoke: every system on a tiny catalog at a tiny rate for seconds, one round; scripts/test
# runs it (its test is tests/integration/test_bench_smoke.py) so that the shipped benchmark
# cannot rot. Its figures mean nothing.
SMOKE = Preset("1000", "50", "50", 2.0, 1.0, 2.0, 200, 500, 1, 1.0, skip_above=None)
FULL = Preset(
    "10000,1000000", "300,1000,2000", "1000,5000", 10.0, 3.0, 10.0, 20_000, 120_000, 3, MAX_WARMUP_S
)


def _numbers(text: str) -> tuple[float, ...]:
    """``"500,1k,1e6"`` style lists: commas, optional underscores, k and M suffixes.

    >>> _numbers("500,1_000,2k,1M")
    (500.0, 1000.0, 2000.0, 1000000.0)
    """
    out = []
    for part in text.replace("_", "").split(","):
        part = part.strip()
        if not part:
            continue
        scale = {"k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6}.get(part[-1], 1.0)
        out.append(float(part[:-1] if scale != 1.0 else part) * scale)
    return tuple(out)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Throughput and latency of a liverank worker against a like-for-like naive "
        "loop, Quix Streams, a plain naive loop and the bare Kafka pipe, measured from the output "
        "records; the levels are interleaved across systems and repeated.",
    )
    p.add_argument(
        "--quick", action="store_true", help="10,000 items, max/300/1000, 2 rounds: < 5 min"
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="every system, 1,000 items, 50 events/s for seconds: checks the benchmark runs "
        "(scripts/test does), measures nothing",
    )
    p.add_argument("--catalogs", help="catalog sizes (default: 10000,1000000; quick: 10000)")
    p.add_argument("--rates", help="open-loop rates, events/s (default: 300,1000,2000)")
    p.add_argument("--pipe-rates", help="rates for the pipe (default: as --rates; quick fewer)")
    p.add_argument("--duration", type=float, help="measured seconds per rate (10; quick 5)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds before each (3; quick 1)")
    p.add_argument("--max-duration", type=float, help="measured seconds at max load (10; quick 5)")
    p.add_argument(
        "--max-warmup", type=float, help="unmeasured seconds before max, to settle (6; quick 3)"
    )
    p.add_argument(
        "--repeats", type=int, help="rounds of every level on every system (3; quick 2; smoke 1)"
    )
    p.add_argument("--users", type=int, help="synthetic users (20,000; quick 10,000)")
    p.add_argument("--templates", type=int, help="pre-encoded events, sent round-robin")
    p.add_argument("--skip-naive", action="store_true", help="no plain naive baseline")
    p.add_argument("--skip-naive-full", action="store_true", help="no like-for-like naive baseline")
    p.add_argument("--skip-quix", action="store_true", help="no Quix Streams baseline")
    p.add_argument(
        "--quix-python",
        type=Path,
        default=QUIX_PYTHON,
        help="the interpreter of the virtualenv with liverank and quixstreams (.venv-quix)",
    )
    p.add_argument("--skip-pipe", action="store_true", help="no pipe-limit measurement")
    p.add_argument("--skip-worker", action="store_true", help="no liverank worker")
    p.add_argument(
        "--two-processes",
        action="store_true",
        help="also a worker with PROCESSES=2 (liverank-2p): the scaling from one process to two",
    )
    p.add_argument(
        "--shadow",
        action="store_true",
        help="also a worker with a shadow model (liverank-shadow): the serving package under "
        "another version, announced as shadow, so every batch is ranked twice: what shadow "
        "scoring costs",
    )
    p.add_argument(
        "--naive-catalogs", help="catalog sizes the naive baseline runs on (default: all)"
    )
    p.add_argument(
        "--naive-variant",
        choices=["fp32", "int8", "fp16"],
        help="the plain naive baseline's ranker (default: the one the settings ask for)",
    )
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a worker setting, e.g. BATCH_MAX_EVENTS=128 (LIVERANK_ prefix optional; repeatable)",
    )
    p.add_argument(
        "--proc-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for the worker and the baseline, verbatim "
        "(e.g. OPENBLAS_NUM_THREADS=1; repeatable)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / ".liverank-data" / "bench",
        help="results go to OUT/<time>/ and OUT/latest/ (default: .liverank-data/bench)",
    )
    p.add_argument(
        "--attach-pid",
        type=int,
        help="measure this running worker instead of starting one: its topics are the "
        "LIVERANK_* settings in the environment, its catalog is read from its catalog topic",
    )
    p.add_argument("--broker-pid-file", type=Path, help="the broker's pid file, for its CPU")
    p.add_argument("--broker-label", default=None, help="how the report names the broker")
    return p


def build_config(args: argparse.Namespace, work_dir: Path) -> BenchConfig:
    preset = SMOKE if args.smoke else QUICK if args.quick else FULL
    catalogs = tuple(int(n) for n in _numbers(args.catalogs or preset.catalogs))
    rates = _numbers(args.rates or preset.rates)
    pipe_rates = _numbers(args.pipe_rates or args.rates or preset.pipe_rates)
    skips = (
        (WORKER, args.skip_worker),
        (WORKER_2P, not args.two_processes),
        (WORKER_SHADOW, not args.shadow),
        (NAIVE_FULL, args.skip_naive_full),
        (QUIX, args.skip_quix),
        (NAIVE, args.skip_naive),
        (PIPE, args.skip_pipe),
    )
    systems = tuple(name for name, skip in skips if not skip)
    broker_pid = None
    if args.broker_pid_file is not None and args.broker_pid_file.exists():
        broker_pid = int(args.broker_pid_file.read_text().strip())
    return BenchConfig(
        catalogs=catalogs,
        rates=rates,
        duration_s=args.duration or preset.duration_s,
        warmup_s=args.warmup if args.warmup is not None else preset.warmup_s,
        max_duration_s=args.max_duration or preset.max_duration_s,
        systems=systems,
        pipe_rates=pipe_rates,
        naive_catalogs=tuple(int(n) for n in _numbers(args.naive_catalogs))
        if args.naive_catalogs
        else None,
        users=args.users or preset.users,
        templates=args.templates or preset.templates,
        naive_variant=args.naive_variant,
        work_dir=work_dir,
        quick=args.quick,
        broker_pid=broker_pid,
        broker_label=args.broker_label or "given",
        worker_env=parse_env_pairs(args.worker_env),
        proc_env=dict(_pair(p) for p in args.proc_env),
        attach_pid=args.attach_pid,
        repeats=max(1, args.repeats or preset.repeats),
        max_warmup_s=args.max_warmup if args.max_warmup is not None else preset.max_warmup_s,
        quix_python=args.quix_python,
        skip_above=preset.skip_above,
    )


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def base_settings(environ: dict[str, str], worker_env: dict[str, str]) -> Settings:
    """The environment's settings plus ``--worker-env``; the deadline's cheap path is off
    (throughput is measured on the full path) unless set explicitly."""
    settings = apply_env(Settings.from_env(environ), worker_env)
    names = {f.name for f in fields(Settings)}
    explicit = {*environ, *worker_env}
    if "deadline_ms" in names and f"{ENV_PREFIX}DEADLINE_MS" not in explicit:
        settings = settings.replace(deadline_ms=0.0)
    if not settings.model_path.is_absolute():
        settings = settings.replace(model_path=ROOT / settings.model_path)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir: Path = args.out / stamp
    try:
        config = build_config(args, out_dir / "work")
        # With the CLI's, the one other place the environment is read: the bench is an edge.
        settings = base_settings(dict(os.environ), config.worker_env)
    except (SettingsError, ValueError) as exc:
        print(f"scripts/bench: {exc}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{n:,}" for n in config.catalogs)
    if config.attach_pid is not None:
        sizes = f"that of the worker with pid {config.attach_pid}"
    say(
        f"broker {settings.bootstrap_servers}; catalogs {sizes}; systems "
        f"{', '.join(config.systems)}; results in {out_dir}"
    )
    results = Bench(settings, config).run()
    written = write_all(results, out_dir, latest=args.out / "latest")
    print(render_markdown(results), flush=True)
    for path in written:
        say(f"wrote {path}")
    say(f"copies in {args.out / 'latest'}; took {results.wall_s / 60:.1f} min")
    return 1 if any(s.error for s in results.systems) else 0


if __name__ == "__main__":
    sys.exit(main())
