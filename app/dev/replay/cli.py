"""``python -m app.dev.replay``: parse options, run the replay, print and write the report."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from app.core.settings import Settings, SettingsError
from app.dev.bench.systems import ROOT, StartError, apply_env, parse_env_pairs
from app.dev.replay.data import DEFAULT_CACHE, parse_spec
from app.dev.replay.pacing import MAX, RATE, THINK, Pace
from app.dev.replay.report import render_markdown, write_all
from app.dev.replay.run import ReplayConfig, run_replay, say

DEFAULT_RATE = 300.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/replay",
        description="Stream a data set through a live worker on the real broker, every "
        "interaction a click in global time order, and score its recommendations online "
        "(HR@10, NDCG@10: each event against the list answering the user's previous one) "
        "against streaming co-occurrence and running popularity.",
    )
    p.add_argument(
        "--data",
        default="ml-100k",
        help="ml-100k (default) or synthetic:USERS:ITEMS",
    )
    pace = p.add_mutually_exclusive_group()
    pace.add_argument(
        "--pace",
        choices=[MAX],
        help="max: publish everything at once (a backlog; the worker's own pace)",
    )
    pace.add_argument(
        "--rate",
        type=float,
        help=f"publish at this many events/s, open loop (default: {DEFAULT_RATE:g})",
    )
    pace.add_argument(
        "--think-time",
        type=float,
        metavar="S",
        help="closed loop: each user's next event S seconds after the worker's answer to "
        "their previous one arrived (0: at once)",
    )
    p.add_argument("--limit-users", type=int, metavar="N", help="only the data set's first N users")
    p.add_argument(
        "--last-events", type=int, metavar="N", help="only each user's last N interactions"
    )
    p.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a worker setting, e.g. DEADLINE_MS=0 (LIVERANK_ prefix optional; repeatable); "
        "the worker otherwise runs its defaults",
    )
    p.add_argument(
        "--output",
        type=Path,
        help="write replay.md and replay.json here (default: .liverank-data/replay/<time>/)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="stop waiting for answers after S seconds without a new one (default 120)",
    )
    p.add_argument(
        "--answer-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="closed loop: a user goes on after S seconds without an answer (default 30)",
    )
    p.add_argument("--seed", type=int, default=0, help="synthetic data's seed (default 0)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="data set cache")
    p.add_argument("--keep-topics", action="store_true", help="leave the run's topics behind")
    p.add_argument("--broker-label", default="given", help="how the report names the broker")
    return p


def pace_of(args: argparse.Namespace) -> Pace:
    if args.pace == MAX:
        return Pace(MAX)
    if args.think_time is not None:
        return Pace(THINK, args.think_time)
    return Pace(RATE, DEFAULT_RATE if args.rate is None else args.rate)


def _as_typed(argv: Sequence[str]) -> list[str]:
    """The arguments without the ``--broker-label`` that scripts/replay adds itself.

    >>> _as_typed(["--broker-label", "local", "--rate", "300", "--broker-label=x"])
    ['--rate', '300']
    """
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--broker-label":
            skip = True
        elif not arg.startswith("--broker-label="):
            out.append(arg)
    return out


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{name} must be at least 1")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(args_list)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir: Path = args.output or ROOT / ".liverank-data" / "replay" / stamp
    try:
        parse_spec(args.data)
        _positive("--limit-users", args.limit_users)
        _positive("--last-events", args.last_events)
        config = ReplayConfig(
            data=args.data,
            pace=pace_of(args),
            limit_users=args.limit_users,
            last_events=args.last_events,
            worker_env=parse_env_pairs(args.worker_env),
            work_dir=out_dir / "work",
            cache=args.cache,
            seed=args.seed,
            idle_timeout_s=args.timeout,
            answer_timeout_s=args.answer_timeout,
            keep_topics=args.keep_topics,
            broker_label=args.broker_label,
            command=shlex.join(["scripts/replay", *_as_typed(args_list)]),
        )
        # With the CLI's, the one other place the environment is read: the replay is an edge.
        environ = dict(os.environ)
        base = Settings.from_env(environ)
        apply_env(base, config.worker_env)  # a bad --worker-env fails here, not in the worker
    except (SettingsError, ValueError) as exc:
        print(f"scripts/replay: {exc}", file=sys.stderr)
        return 2
    say(f"broker {base.bootstrap_servers}; results in {out_dir}")
    try:
        result = run_replay(config, base, environ)
    except (StartError, RuntimeError) as exc:
        say(f"FAILED: {exc}")
        return 1
    for path in write_all(result, out_dir):
        say(f"wrote {path}")
    print(render_markdown(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
