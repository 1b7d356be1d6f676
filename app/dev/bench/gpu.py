"""The ranker on the GPU, in process: events per second at batch 256 and latency at batch 1 of
the FP16 ranker on ONNX Runtime's CUDA provider with IO binding, on real ranker inputs
(``scripts/gpu-bench``). Without CUDA it runs the CPU provider, and the table says so."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from app.core.catalog import Catalog, index_options
from app.core.processor import Processor
from app.core.ranking import model_vectorizer
from app.core.records import Source
from app.core.scoring.base import RankInputs
from app.core.scoring.package import RANKER_OUTPUTS, load_package, read_spec
from app.core.settings import Settings
from app.dev.bench.paths import START_MS, records
from app.dev.synthetic import make_catalog

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _inputs(arrays: dict[str, NDArray[Any]]) -> RankInputs:
    return RankInputs(
        history_vectors=arrays["history_vectors"],
        history_mask=arrays["history_mask"],
        history_types=arrays["history_types"],
        query_terms=arrays["query_terms"],
        user_features=arrays["user_features"],
        candidate_vectors=arrays["candidate_vectors"],
        candidate_features=arrays["candidate_features"],
    )


class _Recorder:
    """A ``Scorer`` that keeps a copy of every input it is given (the processor reuses its
    arrays between batches) and scores with the real ranker."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.calls: list[RankInputs] = []

    @property
    def model_version(self) -> str:
        return str(self._inner.model_version)  # type: ignore[attr-defined]

    def score(self, inputs: RankInputs) -> NDArray[np.float32]:
        self.calls.append(_inputs({k: v.copy() for k, v in inputs.feed().items()}))
        return self._inner.score(inputs)  # type: ignore[attr-defined, no-any-return]


def real_inputs(model_path: Path, n_items: int, n_events: int, seed: int = 3) -> list[RankInputs]:
    """The ranker inputs the worker's processor builds for synthetic traffic (batches of 256
    records), one per model call, in order."""
    settings = Settings(model_path=model_path, deadline_ms=0.0)
    model = load_package(model_path, threads=1, variant="fp32", device="cpu")
    catalog = Catalog(model_vectorizer(model.encoder, model.spec), index_options(settings))
    for item in make_catalog(n_items, seed=1):
        catalog.upsert(item)
    catalog.publish()
    recorder = _Recorder(model.ranker)
    # As app.dev.bench.paths: the clock and the records' Kafka timestamps just after the events.
    clock_ms = START_MS + 10**9
    processor = Processor(catalog, recorder, model.spec, settings, clock=lambda: clock_ms)
    store: dict[bytes, bytes] = {}
    data = [
        (value, Source(s.topic, s.partition, s.offset, s.key, clock_ms))
        for value, s in records(n_items, n_events, seed)
    ]
    for start in range(0, len(data), 256):
        result = processor.handle_batch(data[start : start + 256], store.get)
        for outcome in result.outcomes:
            if outcome.state is not None and outcome.user_id is not None:
                store[outcome.user_id.encode()] = outcome.state
    return recorder.calls


def batch_of(calls: Sequence[RankInputs], size: int) -> RankInputs:
    """``size`` events' inputs, taken in order from ``calls`` (repeated if there are fewer),
    candidates padded with zeros to the widest call (as a short candidate list is)."""
    width = max(c.candidate_vectors.shape[1] for c in calls)
    rows: dict[str, list[NDArray[Any]]] = {k: [] for k in calls[0].feed()}
    taken = 0
    while taken < size:
        for call in calls:
            for name, given in call.feed().items():
                array: NDArray[Any] = given
                if name.startswith("candidate_") and array.shape[1] < width:
                    pad = [(0, 0)] * array.ndim
                    pad[1] = (0, width - array.shape[1])
                    array = np.pad(array, pad)
                rows[name].append(array)
            taken += call.history_mask.shape[0]
            if taken >= size:
                break
    return _inputs({k: np.concatenate(v)[:size] for k, v in rows.items()})


@dataclass(frozen=True, slots=True)
class Row:
    provider: str
    precision: str
    batch: int
    events_per_s: float
    p50_ms: float
    p99_ms: float
    note: str


def measure(
    path: Path, inputs: RankInputs, provider: str, threads: int, repeats: int, warmup: int = 3
) -> tuple[list[float], str]:
    """Seconds per call over ``repeats`` calls with IO binding: inputs copied to the provider's
    device once (OrtValue), outputs left there; the provider that actually ran."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = [provider, CPU] if provider == CUDA else [CPU]
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    used = session.get_providers()[0]
    device = "cuda" if used == CUDA else "cpu"
    binding = session.io_binding()
    for name, array in inputs.feed().items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, device, 0))
    for name in RANKER_OUTPUTS:
        binding.bind_output(name, device, 0)
    for _ in range(warmup):
        session.run_with_iobinding(binding)
    binding.synchronize_outputs()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        times.append(time.perf_counter() - started)
    return times, used


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.0
    """
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(np.ceil(q / 100 * len(ordered))) - 1))]


def run(
    model_path: Path,
    variants: Sequence[str],
    batches: Sequence[int],
    repeats: int,
    threads: int,
    n_items: int,
    n_events: int,
) -> list[Row]:
    cuda = CUDA in ort.get_available_providers()
    provider = CUDA if cuda else CPU
    _, manifest = read_spec(model_path)
    calls = real_inputs(model_path, n_items, n_events)
    out = []
    for variant in variants:
        path = model_path / manifest["files"]["ranker"][variant]
        for size in batches:
            times, used = measure(path, batch_of(calls, size), provider, threads, repeats)
            note = "IO binding on the GPU" if used == CUDA else "CPU fallback: no CUDA provider"
            if provider == CUDA and used != CUDA:
                note = "CPU fallback: the CUDA provider failed to load"
            out.append(
                Row(
                    used,
                    variant,
                    size,
                    size / statistics.median(times),
                    1000 * percentile(times, 50),
                    1000 * percentile(times, 99),
                    note,
                )
            )
    return out


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| provider | precision | batch | events/s (median) | p50 ms | p99 ms | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r.provider} | {r.precision} | {r.batch} | {r.events_per_s:,.0f} | "
        f"{r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.note} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=Path("models/seqrank-1"))
    parser.add_argument(
        "--variants",
        default=None,
        help="ranker variants, comma-separated (default: fp16,fp32 with CUDA, fp32 without)",
    )
    parser.add_argument("--batches", default="256,1", help="batch sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per row")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--items", type=int, default=10_000, help="synthetic catalog size")
    parser.add_argument("--events", type=int, default=1_024, help="synthetic events for inputs")
    args = parser.parse_args(argv)
    cuda = CUDA in ort.get_available_providers()
    variants = (args.variants or ("fp16,fp32" if cuda else "fp32")).split(",")
    print(f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}")
    if not cuda:
        print("no CUDA provider: CPU fallback (these rows measure the CPU, not a GPU)")
    rows = run(
        args.model,
        [v.strip() for v in variants if v.strip()],
        [int(b) for b in args.batches.split(",") if b.strip()],
        args.repeats,
        args.threads,
        args.items,
        args.events,
    )
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
