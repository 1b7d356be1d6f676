"""Export a trained ranker to a model package: ONNX (FP32, INT8, FP16), item index, manifest."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16

from app.core.features import CANDIDATE_FEATURES, USER_FEATURES
from app.core.scoring.package import (
    CONTRACT_VERSION,
    ENCODER_INPUTS,
    ENCODER_OUTPUT,
    MANIFEST,
    RANKER_INPUTS,
    RANKER_OUTPUTS,
)
from app.training.model import ExportItemEncoder, ExportRanker, SequenceRanker
from app.training.sequences import SequenceData


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stamp(path: Path, version: str, role: str) -> None:
    model = onnx.load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update(
        {
            "liverank.contract": str(CONTRACT_VERSION),
            "liverank.model_version": version,
            "liverank.role": role,
        }
    )
    onnx.helper.set_model_props(model, meta)
    onnx.save(model, path)


def export_onnx(model: SequenceRanker, out: Path, version: str) -> dict[str, Path]:
    """Write item_encoder.onnx, ranker.onnx, ranker.int8.onnx and ranker.fp16.onnx into ``out``."""
    cfg = model.cfg
    model.eval()
    b, c = 2, 7
    ranker_args = (
        torch.zeros(b, cfg.max_len, cfg.dim),
        torch.ones(b, cfg.max_len),
        torch.full((b, cfg.max_len), 2, dtype=torch.int64),
        torch.zeros(b, cfg.max_query_terms, dtype=torch.int64),
        torch.zeros(b, cfg.user_features),
        torch.zeros(b, c, cfg.dim),
        torch.zeros(b, c, cfg.candidate_features),
    )
    batch_axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in RANKER_INPUTS}
    for name in ("candidate_vectors", "candidate_features"):
        batch_axes[name] = {0: "batch", 1: "candidates"}
    batch_axes["scores"] = {0: "batch", 1: "candidates"}
    batch_axes["user_vector"] = {0: "batch"}
    paths = {
        "ranker": out / "ranker.onnx",
        "item_encoder": out / "item_encoder.onnx",
        "ranker_int8": out / "ranker.int8.onnx",
        "ranker_fp16": out / "ranker.fp16.onnx",
    }
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, which needs the
        # extra onnxscript package; it still handles this plain graph and its dynamic axes.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            ExportRanker(model).eval(),
            ranker_args,
            str(paths["ranker"]),
            input_names=list(RANKER_INPUTS),
            output_names=list(RANKER_OUTPUTS),
            dynamic_axes=batch_axes,
            opset_version=17,
            dynamo=False,
        )
        torch.onnx.export(
            ExportItemEncoder(model).eval(),
            (
                torch.ones(3, dtype=torch.int64),
                torch.ones(3, cfg.max_item_terms, dtype=torch.int64),
            ),
            str(paths["item_encoder"]),
            input_names=list(ENCODER_INPUTS),
            output_names=[ENCODER_OUTPUT],
            dynamic_axes={
                ENCODER_INPUTS[0]: {0: "items"},
                ENCODER_INPUTS[1]: {0: "items"},
                ENCODER_OUTPUT: {0: "items"},
            },
            opset_version=17,
            dynamo=False,
        )
    model.eval()  # the exporter restores training mode on the wrappers' children
    quantize_dynamic(paths["ranker"], paths["ranker_int8"], weight_type=QuantType.QInt8)
    fp16 = convert_float_to_float16(onnx.load(paths["ranker"]), keep_io_types=True)
    onnx.save(fp16, paths["ranker_fp16"])
    for role, path in paths.items():
        _stamp(path, version, role)
    return paths


def write_package(
    model: SequenceRanker,
    data: SequenceData,
    out: Path,
    *,
    name: str,
    version: str,
    training: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Everything the worker needs in one folder; replaces ``out`` if it exists."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    paths = export_onnx(model, out, version)
    items = out / "items.tsv"
    items.write_text(
        "index\titem_id\n"
        + "".join(f"{i}\t{data.item_tokens[i]}\n" for i in range(1, data.n_items + 1)),
        encoding="utf-8",
    )
    files = {
        "item_encoder": paths["item_encoder"].name,
        "ranker": {
            "fp32": paths["ranker"].name,
            "int8": paths["ranker_int8"].name,
            "fp16": paths["ranker_fp16"].name,
        },
        "items": items.name,
    }
    sizes = {p.name: p.stat().st_size for p in [*paths.values(), items]}
    manifest = {
        "name": name,
        "version": version,
        "contract": CONTRACT_VERSION,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": files,
        "sha256": {p.name: _sha256(p) for p in [*paths.values(), items]},
        "sizes_bytes": sizes,
        "features": {"user": list(USER_FEATURES), "candidate": list(CANDIDATE_FEATURES)},
        "model": model.cfg.as_dict(),
        "training": training,
        "metrics": metrics,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out
