"""Reports on a model package: the metrics table, the model card and the quality/latency plot."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

VARIANTS = ("fp32", "int8", "fp16")


def _num(value: float, spec: str) -> str:
    return "n/a" if value != value else format(value, spec)  # NaN: not measured


def markdown_table(metrics: dict[str, Any]) -> str:
    rows = [
        "| model | HR@10 | NDCG@10 | median ms, 200 candidates, batch 1 | events/s, batch 64 |",
        "|---|---|---|---|---|",
    ]
    for name, m in metrics.items():
        if not isinstance(m, dict) or "hr@10" not in m:
            continue
        median = m.get("latency", {}).get("median_ms", float("nan"))
        rate = m.get("latency_batched", {}).get("events_per_s", float("nan"))
        rows.append(
            f"| {name} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} | {_num(median, '.3f')} "
            f"| {_num(rate, '.0f')} |"
        )
    return "\n".join(rows)


def model_card(manifest: dict[str, Any]) -> str:
    t = manifest["training"]
    return (
        f"# {manifest['name']} {manifest['version']}\n\n"
        f"Created {manifest['created']} by `scripts/train` (seed {t['seed']}).\n\n"
        + _teacher_text(t)
        + "Sequence-aware ranker: "
        f"{_blocks(manifest['model'].get('layers', 2))} of self-attention over the user's last "
        f"{manifest['model']['max_len']} interactions (item vectors = id embedding + hashed text "
        "terms), plus hashed query terms and dense user features, scored against candidate "
        "vectors by a dot product plus a linear head over "
        f"{', '.join(manifest['features']['candidate'])}.\n\n"
        f"Training data: {t['data']} ({t['users']} users, {t['items']} items, "
        f"{t['interactions']} interactions), leave-one-out split, plus "
        f"{t.get('augment', 'no')} sessions over text-only items, {t['epochs_run']} epochs, "
        f"{t['train_seconds']} s on {t['machine']}.\n\n"
        + _blend_text(manifest)
        + "## Metrics\n\n"
        + markdown_table(manifest["metrics"])
        + "\n\n"
        f"Protocol: {manifest['metrics'].get('protocol', '')}.\n\n"
        + _seeds_text(manifest["metrics"].get("seeds"))
        + "## Sizes\n\n"
        + "".join(
            f"- `{name}`: {size / 1024:.0f} KiB\n" for name, size in manifest["sizes_bytes"].items()
        )
        + "\n![quality against latency](quality_latency.png)\n"
    )


def _blocks(layers: int) -> str:
    return "one block" if layers == 1 else f"{layers} blocks"


def _teacher_text(training: dict[str, Any]) -> str:
    teacher = training.get("teacher")
    if not teacher:
        return ""
    cfg = training.get("config", {})
    weight, temperature = cfg.get("distill", "?"), cfg.get("temperature", "?")
    return (
        f"Distilled from the teacher `{teacher}`: loss (1 - {weight}) x cross-entropy + "
        f"{weight} x T^2 x KL(teacher || student) over every item at every position, "
        f"T = {temperature}.\n\n"
    )


def _blend_text(manifest: dict[str, Any]) -> str:
    blend = manifest.get("blend")
    if not blend:
        return ""
    fit = manifest.get("blend_fit", {})
    valid, alone = fit.get("valid", {}), fit.get("ranker_only_valid", {})
    chosen = (
        f" Chosen by {fit['selected_by']} among {fit.get('configurations', '?')} settings: "
        f"NDCG@10 {valid['ndcg@10']:.4f} on validation against {alone['ndcg@10']:.4f} for "
        "the ranker alone."
        if "selected_by" in fit and "ndcg@10" in valid and "ndcg@10" in alone
        else ""
    )
    return (
        "Hybrid: the served score is the ranker's plus "
        f"{blend['alpha']} x log1p(transition signal), the signal summing, over the user's last "
        f"{blend['recent']} items (weights 1, {blend['recent_decay']}, ...), log1p of how often "
        f"each candidate came 1 to {blend['window']} positions after that item in the training "
        f"sequences (`transitions.npz`, the {blend['max_per_item']} strongest successors per "
        f"item; app.core.transitions).{chosen}\n\n"
    )


SEED_ROWS = ("ranker_only_fp32", "onnx_fp32", "onnx_int8", "onnx_fp16")


def seed_summary(
    runs: Mapping[int, Mapping[str, Any]], note: str = "", rows: Sequence[str] = SEED_ROWS
) -> dict[str, Any]:
    """Mean and sample standard deviation of HR@10 and NDCG@10 over evaluations of several
    training seeds (``scripts/evaluate --output`` files, by seed), for the model card."""
    if len(runs) < 2:
        raise ValueError(f"a spread needs at least two seeds, got {len(runs)}")
    present = [row for row in rows if all(row in run for run in runs.values())]
    if not present:
        raise ValueError(f"no row of {list(rows)} is in every evaluation")
    summary: dict[str, Any] = {}
    for row in present:
        summary[row] = {
            key: [
                statistics.mean(float(run[row][key]) for run in runs.values()),
                statistics.stdev(float(run[row][key]) for run in runs.values()),
            ]
            for key in ("hr@10", "ndcg@10")
        }
    return {"seeds": sorted(runs), "rows": summary, "note": note}


def _seeds_text(seeds: dict[str, Any] | None) -> str:
    if not seeds:
        return ""
    rows = [
        f"Over {len(seeds['seeds'])} training seeds ({', '.join(map(str, seeds['seeds']))}), "
        "mean ± standard deviation, same protocol:\n",
        "| model | HR@10 | NDCG@10 |",
        "|---|---|---|",
    ]
    for name, m in seeds["rows"].items():
        rows.append(
            f"| {name} | {m['hr@10'][0]:.4f} ± {m['hr@10'][1]:.4f} "
            f"| {m['ndcg@10'][0]:.4f} ± {m['ndcg@10'][1]:.4f} |"
        )
    return "\n".join(rows) + f"\n\n{seeds.get('note', '')}\n\n"


def plot_quality_latency(metrics: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant in VARIANTS:
        m = metrics.get(f"onnx_{variant}")
        if not m:
            continue
        ax.scatter(m["latency"]["median_ms"], m["ndcg@10"], s=60)
        ax.annotate(
            variant.upper() + (" (on CPU)" if variant == "fp16" else ""),
            (m["latency"]["median_ms"], m["ndcg@10"]),
            textcoords="offset points",
            xytext=(6, 4),
        )
    for name, colour in (("most_popular", "grey"), ("cooccurrence", "black")):
        if name in metrics:
            ax.axhline(
                metrics[name]["ndcg@10"], linestyle="--", linewidth=1, color=colour, label=name
            )
    ax.margins(x=0.25)
    ax.set_xlabel("median ms per event (200 candidates, batch 1, 1 CPU thread)")
    ax.set_ylabel("NDCG@10 (test, full ranking)")
    ax.set_title("Quality against latency by model variant")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_table(models: dict[str, dict[str, Any]]) -> str:
    """One row per model and variant (``scripts/evaluate --output`` files, by label): quality
    and scoring latency, and the ranker alone where the file has it."""
    rows = [
        "| model | variant | HR@10 | NDCG@10 | median ms, 200 candidates, batch 1 "
        "| events/s, batch 64 |",
        "|---|---|---|---|---|---|",
    ]
    for label, metrics in models.items():
        for variant in VARIANTS:
            m = metrics.get(f"onnx_{variant}")
            if not m:
                continue
            median = m.get("latency", {}).get("median_ms", float("nan"))
            rate = m.get("latency_batched", {}).get("events_per_s", float("nan"))
            rows.append(
                f"| {label} | {variant.upper()} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} "
                f"| {_num(median, '.3f')} | {_num(rate, '.0f')} |"
            )
        alone = metrics.get("ranker_only_fp32")
        if alone:
            rows.append(
                f"| {label} | ranker alone, FP32 | {alone['hr@10']:.4f} | {alone['ndcg@10']:.4f} "
                "| n/a | n/a |"
            )
    return "\n".join(rows)


def plot_models(models: dict[str, dict[str, Any]], path: Path) -> None:
    """NDCG@10 against scoring latency for every model and variant on one plot (the teacher,
    the student and the model it would replace, say)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"fp32": "o", "int8": "s", "fp16": "^"}
    for i, (label, metrics) in enumerate(models.items()):
        for variant in VARIANTS:
            m = metrics.get(f"onnx_{variant}")
            if not m:
                continue
            ax.scatter(
                m["latency"]["median_ms"],
                m["ndcg@10"],
                s=60,
                color=f"C{i}",
                marker=markers[variant],
                label=f"{label} {variant.upper()}",
            )
    ax.legend(fontsize=8, loc="best")
    ax.margins(x=0.3, y=0.15)
    ax.set_xlabel("median ms per event (200 candidates, batch 1, 1 CPU thread)")
    ax.set_ylabel("NDCG@10 (test, full ranking, as served)")
    ax.set_title("Teacher and student: quality against latency")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
