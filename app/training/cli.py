"""``python -m app.training``: train, export and evaluate the ranking model (extra ``train``)."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.training.evaluate import (
    ALL_SEEN,
    KEPT_SEEN,
    cooccurrence,
    evaluate,
    most_popular,
    recent_cooccurrence,
)
from app.training.exits import RetrainExit
from app.training.model import ModelConfig
from app.training.movielens import fetch_ml100k, load_ml100k
from app.training.report import VARIANTS, markdown_table, model_card, plot_quality_latency
from app.training.sequences import (
    SequenceData,
    Split,
    combine,
    leave_one_out,
    synthetic_sequences,
)

log = logging.getLogger(__name__)
DEFAULT_CACHE = Path.home() / ".cache" / "liverank" / "datasets"


# How the figures are computed (app.training.evaluate): each user's last interaction held out,
# every item ranked, the items the worker would exclude (the seen items its state remembers)
# filtered.
PROTOCOL = (
    f"leave-one-out, full ranking, the last {KEPT_SEEN:,} distinct items seen filtered as served"
)
# The references' protocol (SASRec papers, issue 16's table): every item of the history filtered,
# however long (the same as served wherever no user has more than SEEN_SIZE distinct items).
ALL_SEEN_PROTOCOL = "leave-one-out, full ranking, every item of the history filtered"


def load_data(name: str, cache: Path, seed: int) -> SequenceData:
    if name == "ml-100k":
        return load_ml100k(fetch_ml100k(cache))
    if name.startswith("synthetic"):
        # synthetic[:USERS:ITEMS], e.g. synthetic:300:200 for a quick run
        parts = name.split(":")
        users = int(parts[1]) if len(parts) > 1 else 1000
        items = int(parts[2]) if len(parts) > 2 else 500
        return synthetic_sequences(users, items, seed=seed)
    raise SystemExit(f"unknown data set {name!r}: ml-100k or synthetic[:users:items]")


def baselines(split: Split, k: int, kept: int = KEPT_SEEN) -> dict[str, dict[str, float]]:
    """Most popular, last-item co-occurrence, and the worker's own last-3 co-occurrence scorer
    (weights 1, 0.5, 0.25), by the code that evaluates the model."""
    return {
        name: evaluate(score_fn, split, stage="test", k=k, kept=kept)
        for name, score_fn in (
            ("most_popular", most_popular(split)),
            ("cooccurrence", cooccurrence(split)),
            ("cooccurrence_last3", recent_cooccurrence(split)),
        )
    }


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from app.core.scoring.package import load_package
    from app.training.export import write_package
    from app.training.onnx_eval import onnx_score_fn, package_score_fn, time_scoring
    from app.training.train import TrainConfig, load_torch, save_torch, torch_score_fn, train

    torch.set_num_threads(args.threads)
    data = load_data(args.data, args.cache, args.seed)
    split = leave_one_out(data)
    # Training may add synthetic sessions over items the model only knows by their text, so it
    # learns to rank catalog items it never saw (by text, category and query); evaluation
    # stays on ``data`` alone.
    train_data, train_split, content_only_from = data, split, None
    if args.augment != "none":
        extra = load_data(args.augment, args.cache, args.seed + 1)
        train_data = combine(data, extra)
        train_split = leave_one_out(train_data)
        content_only_from = data.n_items + 1
    cfg = ModelConfig(
        n_items=train_data.n_items,
        dim=args.dim,
        max_len=args.max_len,
        layers=args.layers,
        heads=args.heads,
        ffn=args.ffn,
        dropout=args.dropout,
    )
    teacher = load_torch(args.teacher) if args.teacher is not None else None
    init = load_torch(args.init) if args.init is not None else None
    if init is not None and init.cfg != cfg:
        raise SystemExit(f"--init {args.init} has another configuration: {init.cfg}")
    if teacher is not None and teacher.cfg.n_items != cfg.n_items:
        raise SystemExit(f"the teacher knows {teacher.cfg.n_items} items, the data {cfg.n_items}")
    tc = TrainConfig(
        epochs=args.epochs,
        seed=args.seed,
        lr=args.lr,
        weight_decay=args.weight_decay,
        progress=not args.quiet,
        distill=args.distill if teacher is not None else 0.0,
        temperature=args.temperature,
    )
    started = time.perf_counter()
    result = train(
        train_data,
        train_split,
        cfg,
        tc,
        eval_split=split,
        content_only_from=content_only_from,
        teacher=teacher,
        init=init,
    )
    if args.save_torch is not None:
        save_torch(result.model, args.save_torch)
    train_s = time.perf_counter() - started
    k = 10
    metrics: dict[str, Any] = {"protocol": f"{PROTOCOL}, k={k}, {args.data}"}
    n = data.n_items
    metrics["torch_fp32"] = evaluate(torch_score_fn(result.model, result.tables, n), split, k=k)
    metrics.update(baselines(split, k))
    training = {
        "data": args.data,
        "augment": args.augment,
        "users": len(data.sequences),
        "items": data.n_items,
        "interactions": int(sum(len(s) for s in data.sequences)),
        "seed": args.seed,
        "epochs_run": len(result.history),
        "best_valid": result.best_valid,
        "train_seconds": round(train_s, 1),
        "config": asdict(tc),
        "teacher": str(args.teacher) if args.teacher is not None else None,
        "machine": f"{platform.machine()} {platform.processor() or ''} threads={args.threads}",
    }
    write_package(
        result.model,
        data,
        args.out,
        name=args.name,
        version=args.version,
        training=training,
        metrics={},
    )
    if not args.no_blend:
        fit_transitions(args.out, split, result.tables, version=None)
    ranker = load_package(args.out, variant="fp32")
    metrics["ranker_only_fp32"] = evaluate(onnx_score_fn(ranker, result.tables, n), split, k=k)
    for variant in VARIANTS:
        package = load_package(args.out, variant=variant)
        scorer = package_score_fn(package, result.tables, n_items=n)
        metrics[f"onnx_{variant}"] = evaluate(scorer, split, k=k)
        metrics[f"onnx_{variant}"]["latency"] = time_scoring(
            args.out, variant, repeats=args.timing_repeats
        )
        metrics[f"onnx_{variant}"]["latency_batched"] = time_scoring(
            args.out, variant, batch=64, repeats=args.timing_repeats
        )
    _finish_package(args.out, metrics)
    print(markdown_table(metrics))
    return 0


def fit_transitions(package: Path, split: Split, tables: Any, *, version: str | None) -> None:
    """Count the training sequences' transitions, choose the blend on validation (the worker's
    own hybrid score, app.training.blend) and add both to ``package``; with ``version``, the
    package is restamped as that version."""
    import numpy as np

    from app.core.scoring.package import load_package
    from app.training.blend import attach, cached_scores, fit_blend
    from app.training.onnx_eval import onnx_score_fn

    model = load_package(package, variant="fp32")
    n_model = max(model.spec.item_index.values())
    model_index = np.arange(split.n_items + 1, dtype=np.int64)
    model_index[model_index > n_model] = 0
    started = time.perf_counter()
    valid = cached_scores(onnx_score_fn(model, tables, split.n_items), split, "valid")
    fitted = fit_blend(valid, split, model_index, n_model)
    took = round(time.perf_counter() - started, 1)
    attach(
        package,
        fitted.table,
        version=version,
        fit={
            "selected_by": "validation NDCG@10 (the test split is not read)",
            "valid": fitted.valid,
            "ranker_only_valid": fitted.model_valid,
            "configurations": len(fitted.tried),
            "seconds": took,
        },
    )
    chosen = fitted.params
    print(
        f"blend: window {chosen.window}, last {chosen.recent} items (decay {chosen.recent_decay}),"
        f" alpha {chosen.alpha}; validation NDCG@10 {fitted.valid['ndcg@10']:.4f} "
        f"(ranker alone {fitted.model_valid['ndcg@10']:.4f}), HR@10 {fitted.valid['hr@10']:.4f} "
        f"({fitted.model_valid['hr@10']:.4f}); {len(fitted.tried)} configurations, {took} s"
    )


# SASRec's figures, trained and tested by this code (python -m app.training sasrec), which
# ``evaluate`` prints beside the baselines it computes itself (training it takes minutes).
SASREC_RESULTS = Path("docs/baselines/sasrec-ml100k.json")


def cmd_sasrec(args: argparse.Namespace) -> int:
    import torch

    from app.training.sasrec import SasrecConfig, tune_and_test

    torch.set_num_threads(args.threads)
    data = load_data(args.data, args.cache, args.seeds[0])
    split = leave_one_out(data)
    started = time.perf_counter()
    found = tune_and_test(
        split, args.dropouts, args.seeds, SasrecConfig(epochs=args.epochs, max_len=args.max_len)
    )
    found["protocol"] = f"{PROTOCOL}, k=10, {args.data}"
    found["seconds"] = round(time.perf_counter() - started, 1)
    found["machine"] = f"{platform.machine()} threads={args.threads}"
    found["evaluated"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    print(sasrec_row(found))
    return 0


def sasrec_row(found: dict[str, Any]) -> str:
    hr, ndcg = found["test_mean_std"]["hr@10"], found["test_mean_std"]["ndcg@10"]
    seeds = ", ".join(str(r["seed"]) for r in found["runs"])
    return (
        f"| sasrec (dropout {found['config']['dropout']}, seeds {seeds}) "
        f"| {hr[0]:.4f} ± {hr[1]:.4f} | {ndcg[0]:.4f} ± {ndcg[1]:.4f} |"
    )


def cmd_compare(args: argparse.Namespace) -> int:
    from app.training.report import compare_table, plot_models

    models: dict[str, dict[str, Any]] = {}
    for spec in args.models:
        label, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"expected LABEL=EVALUATION.json, got {spec!r}")
        models[label] = json.loads(Path(path).read_text(encoding="utf-8"))
    print(compare_table(models))
    if args.plot is not None:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_models(models, args.plot)
        print(f"\nplot: {args.plot}")
    return 0


def _package_data(args: argparse.Namespace) -> tuple[SequenceData, Split, Any]:
    """The data set, its split and the item tables the package at ``args.package`` reads."""
    from app.training.train import item_tables

    data = load_data(args.data, args.cache, args.seed)
    split = leave_one_out(data)
    manifest = json.loads((args.package / "manifest.json").read_text(encoding="utf-8"))
    cfg = ModelConfig(
        n_items=data.n_items, **{k: v for k, v in manifest["model"].items() if k != "n_items"}
    )
    return data, split, item_tables(data, split.train, cfg)


def cmd_blend(args: argparse.Namespace) -> int:
    _data, split, tables = _package_data(args)
    fit_transitions(args.package, split, tables, version=args.version)
    return 0


def _finish_package(out: Path, metrics: dict[str, Any]) -> None:
    """Add metrics to the manifest (re-hashing nothing: metrics are not a checked file)."""
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["metrics"] = metrics
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(model_card(manifest), encoding="utf-8")
    plot_quality_latency(metrics, out / "quality_latency.png")


def cmd_seeds(args: argparse.Namespace) -> int:
    """Put the mean ± std over several seeds' evaluations into a package's metrics and card."""
    from app.training.report import seed_summary

    runs: dict[int, dict[str, Any]] = {}
    for spec in args.evaluations:
        seed, _, path = spec.partition("=")
        if not path or not seed.isdigit():
            raise SystemExit(f"expected SEED=EVALUATION.json, got {spec!r}")
        runs[int(seed)] = json.loads(Path(path).read_text(encoding="utf-8"))
    manifest = json.loads((args.package / "manifest.json").read_text(encoding="utf-8"))
    metrics = dict(manifest.get("metrics") or {})
    try:
        metrics["seeds"] = seed_summary(runs, note=args.note)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    _finish_package(args.package, metrics)
    print((args.package / "MODEL_CARD.md").read_text(encoding="utf-8"))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from app.core.scoring.package import load_package
    from app.training.onnx_eval import onnx_score_fn, package_score_fn, time_scoring

    _data, split, tables = _package_data(args)
    metrics: dict[str, Any] = {"protocol": f"{PROTOCOL}, k=10, {args.data}"}
    ranker = load_package(args.package, variant="fp32")
    if ranker.spec.transitions is not None:
        # The package's ranker without its transitions: what the blend adds.
        metrics["ranker_only_fp32"] = evaluate(
            onnx_score_fn(ranker, tables), split, k=10, progress=not args.quiet
        )
    for variant in VARIANTS:
        package = load_package(args.package, variant=variant)
        metrics[f"onnx_{variant}"] = evaluate(
            package_score_fn(package, tables), split, k=10, progress=not args.quiet
        )
        metrics[f"onnx_{variant}"]["latency"] = time_scoring(
            args.package, variant, repeats=args.timing_repeats
        )
        metrics[f"onnx_{variant}"]["latency_batched"] = time_scoring(
            args.package, variant, batch=64, repeats=args.timing_repeats
        )
    metrics.update(baselines(split, 10))
    seen: dict[str, Any] = {"protocol": f"{ALL_SEEN_PROTOCOL}, k=10, {args.data}"}
    seen["onnx_fp32"] = evaluate(
        package_score_fn(ranker, tables),
        split,
        k=10,
        kept=ALL_SEEN,
        progress=not args.quiet,
    )
    seen.update(baselines(split, 10, kept=ALL_SEEN))
    metrics["all_seen_filtered"] = seen
    metrics["evaluated"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        plot_quality_latency(metrics, args.output.with_suffix(".png"))
    print(f"As served ({PROTOCOL}):\n")
    print(markdown_table(metrics))
    print(f"\nThe references' protocol ({ALL_SEEN_PROTOCOL}):\n")
    print(markdown_table(seen))
    if args.sasrec.is_file():
        found = json.loads(args.sasrec.read_text(encoding="utf-8"))
        print(
            f"\nSASRec, trained and tested by this code ({args.sasrec}, from "
            f"`python -m app.training sasrec`; {found['protocol']}):\n\n"
            "| model | HR@10 | NDCG@10 |\n|---|---|---|\n" + sasrec_row(found)
        )
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """Train a new version on what the stream holds, evaluate it against the serving one on
    each user's most recent interaction, and announce it only if it is better."""
    import os

    import torch

    from app.core.scoring.package import load_package
    from app.core.settings import Settings
    from app.streams.model_publish import publish_model
    from app.training.export import write_package
    from app.training.onnx_eval import package_score_fn
    from app.training.stream import (
        better,
        next_version,
        read_stream_data,
        serving_ids,
        serving_package,
    )
    from app.training.train import TrainConfig, train

    torch.set_num_threads(args.threads)
    settings = Settings.from_env(os.environ)  # the worker's topics and connection
    serving_path = args.serving or serving_package(settings)
    serving = load_package(serving_path, variant="fp32", device="cpu")
    since = (
        None if args.recent_s is None else time.time_ns() // 1_000_000 - int(args.recent_s * 1000)
    )
    data = read_stream_data(settings, since_ms=since)
    split = leave_one_out(data)
    evaluated = int(split.evaluated.sum())
    log.info(
        "stream data: %d users (%d evaluated), %d items, %d interactions",
        data.n_users,
        evaluated,
        data.n_items,
        data.n_interactions,
    )
    if evaluated < args.min_users:
        print(f"not enough data: {evaluated} users with 3+ interactions (need {args.min_users})")
        return RetrainExit.TOO_LITTLE_DATA
    cfg = ModelConfig(
        n_items=data.n_items,
        dim=serving.spec.dim,
        max_len=serving.spec.max_len,
        layers=args.layers,
        dropout=args.dropout,
    )
    tc = TrainConfig(epochs=args.epochs, seed=args.seed, lr=args.lr, progress=not args.quiet)
    started = time.perf_counter()
    result = train(data, split, cfg, tc)
    version = args.version or next_version(serving.spec.version)
    # Under .liverank-data (ignored by git); the workers load it from wherever this path is.
    out = args.out or Path(".liverank-data") / "models" / f"{serving.spec.name}-{version}"
    k = 10
    write_package(
        result.model,
        data,
        out,
        name=serving.spec.name,
        version=version,
        training={
            "data": f"stream: {settings.topic_feedback} + {settings.topic_catalog}",
            "users": data.n_users,
            "items": data.n_items,
            "interactions": data.n_interactions,
            "seed": args.seed,
            "epochs_run": len(result.history),
            "train_seconds": round(time.perf_counter() - started, 1),
        },
        metrics={},
    )
    fit_transitions(out, split, result.tables, version=None)
    candidate = load_package(out, variant="fp32", device="cpu")
    scores = {
        f"candidate {version}": evaluate(package_score_fn(candidate, result.tables), split, k=k),
        f"serving {serving.spec.version}": evaluate(
            package_score_fn(serving, result.tables, ids=serving_ids(serving, data)), split, k=k
        ),
        "most_popular": evaluate(most_popular(split), split, k=k),
    }
    print("| model | HR@10 | NDCG@10 |\n|---|---|---|")
    for name, m in scores.items():
        print(f"| {name} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} |")
    cand, serv = scores[f"candidate {version}"], scores[f"serving {serving.spec.version}"]
    if not better(cand, serv, args.min_gain):
        print(f"not published: {version} does not beat {serving.spec.version} by {args.min_gain}")
        return RetrainExit.NOT_BETTER
    if args.no_publish:
        print(f"better, not published (--no-publish): {out}")
        return RetrainExit.BETTER
    note = f"retrained on the stream: HR@10 {cand['hr@10']:.4f} vs {serv['hr@10']:.4f}"
    update = publish_model(settings, out, note=note)
    print(f"published {update.name} {update.version} ({update.path})")
    return RetrainExit.BETTER


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m app.training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("--data", default="ml-100k", help="ml-100k or synthetic[:users:items]")
        p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument(
            "--timing-repeats", type=int, default=300, help="timed scoring calls per variant"
        )
    train_p = sub.choices["train"]
    train_p.add_argument("--out", type=Path, default=Path("models/seqrank-1"))
    train_p.add_argument("--name", default="seqrank")
    train_p.add_argument("--version", default="1.2.0")
    train_p.add_argument("--epochs", type=int, default=200)
    train_p.add_argument("--lr", type=float, default=1e-3)
    train_p.add_argument("--dim", type=int, default=64)
    train_p.add_argument("--max-len", type=int, default=50)
    train_p.add_argument("--layers", type=int, default=2)
    train_p.add_argument("--dropout", type=float, default=0.3)
    train_p.add_argument("--heads", type=int, default=2)
    train_p.add_argument("--ffn", type=int, default=128)
    train_p.add_argument(
        "--save-torch", type=Path, default=None, help="also save the torch model (to teach)"
    )
    train_p.add_argument(
        "--teacher", type=Path, default=None, help="distil from this torch model (--save-torch)"
    )
    train_p.add_argument("--distill", type=float, default=0.5, help="weight of the teacher's loss")
    train_p.add_argument(
        "--init", type=Path, default=None, help="start from this torch model (--save-torch)"
    )
    train_p.add_argument("--temperature", type=float, default=2.0)
    train_p.add_argument(
        "--augment",
        default="synthetic:1000:400",
        help="extra training sessions over text-only items (synthetic:USERS:ITEMS) or none",
    )
    train_p.add_argument("--weight-decay", type=float, default=0.0)
    train_p.add_argument("--threads", type=int, default=2)
    train_p.add_argument(
        "--no-blend", action="store_true", help="no transition table: the ranker's scores alone"
    )
    eval_p = sub.choices["evaluate"]
    eval_p.add_argument("--package", type=Path, default=Path("models/seqrank-1"))
    eval_p.add_argument("--output", type=Path, default=None, help="JSON file (and .png plot)")
    eval_p.add_argument("--sasrec", type=Path, default=SASREC_RESULTS, help="SASRec's figures")
    compare = sub.add_parser(
        "compare", help="models side by side (scripts/evaluate --output files) and one plot"
    )
    compare.add_argument("models", nargs="+", help="LABEL=EVALUATION.json")
    compare.add_argument("--plot", type=Path, default=None)
    sas = sub.add_parser("sasrec", help="train SASRec by this code: dropout chosen on validation")
    sas.add_argument("--data", default="ml-100k")
    sas.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    sas.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[42, 43, 44])
    sas.add_argument(
        "--dropouts", type=lambda v: [float(x) for x in v.split(",")], default=[0.2, 0.5]
    )
    sas.add_argument("--epochs", type=int, default=400)
    sas.add_argument("--max-len", type=int, default=50)
    sas.add_argument("--threads", type=int, default=1)
    sas.add_argument("--output", type=Path, default=SASREC_RESULTS)
    blend_p = sub.add_parser(
        "blend",
        help="fit a package's transition table and blend on validation and add them to it",
    )
    blend_p.add_argument("--package", type=Path, default=Path("models/seqrank-1"))
    blend_p.add_argument("--data", default="ml-100k", help="the data the package was trained on")
    blend_p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    blend_p.add_argument("--seed", type=int, default=42)
    blend_p.add_argument(
        "--version", default=None, help="restamp the package as this version (needs onnx)"
    )
    seeds_p = sub.add_parser(
        "seeds", help="mean ± std over several seeds' evaluations, into a package's model card"
    )
    seeds_p.add_argument("evaluations", nargs="+", help="SEED=EVALUATION.json (scripts/evaluate)")
    seeds_p.add_argument("--package", type=Path, default=Path("models/seqrank-1"))
    seeds_p.add_argument("--note", default="", help="how each seed was made, for the card")
    retrain = sub.add_parser(
        "retrain", help="train on the stream, compare with the serving model, publish if better"
    )
    retrain.add_argument(
        "--serving", type=Path, default=None, help="default: the newest announced, else MODEL_PATH"
    )
    retrain.add_argument(
        "--recent-s", type=float, default=None, help="train on the last N seconds of events only"
    )
    retrain.add_argument("--out", type=Path, default=None)
    retrain.add_argument("--version", default=None, help="default: the next minor version")
    retrain.add_argument("--epochs", type=int, default=40)
    retrain.add_argument("--lr", type=float, default=1e-3)
    retrain.add_argument("--layers", type=int, default=2)
    retrain.add_argument("--dropout", type=float, default=0.2)
    retrain.add_argument("--seed", type=int, default=42)
    retrain.add_argument("--threads", type=int, default=2)
    retrain.add_argument("--min-gain", type=float, default=0.005, help="HR@10, absolute")
    retrain.add_argument("--min-users", type=int, default=50)
    retrain.add_argument("--no-publish", action="store_true")
    retrain.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "retrain":
        return cmd_retrain(args)
    if args.command == "blend":
        return cmd_blend(args)
    if args.command == "sasrec":
        return cmd_sasrec(args)
    if args.command == "compare":
        return cmd_compare(args)
    if args.command == "seeds":
        return cmd_seeds(args)
    return cmd_train(args) if args.command == "train" else cmd_evaluate(args)


if __name__ == "__main__":
    sys.exit(main())
