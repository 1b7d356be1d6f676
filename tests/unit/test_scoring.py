"""The model package seam: the shipped package meets the contract; broken packages are refused."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from app.core.features import CANDIDATE_FEATURES
from app.core.scoring.base import ModelContractError, RankInputs
from app.core.scoring.package import MANIFEST, LoadedModel, load_package, resolve_device
from tests.conftest import MODEL


def test_shipped_package_meets_contract(model: LoadedModel) -> None:
    assert model.spec.version and model.spec.item_index
    assert model.ranker.variant in {"fp32", "fp16"}  # auto: FP32 on CPU, FP16 on CUDA
    inputs = RankInputs.zeros(model.spec, 3, 17)
    rng = np.random.default_rng(0)
    inputs.candidate_vectors[:] = rng.standard_normal(inputs.candidate_vectors.shape)
    scores = model.ranker.score(inputs)
    assert scores.shape == (3, 17) and scores.dtype == np.float32
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("variant", ["fp32", "int8", "fp16"])
def test_variants_agree_on_ranking(model: LoadedModel, variant: str) -> None:
    other = load_package(MODEL, variant=variant)
    rng = np.random.default_rng(1)
    inputs = RankInputs.zeros(model.spec, 4, 50)
    inputs.history_vectors[:] = rng.standard_normal(inputs.history_vectors.shape)
    inputs.history_mask[:, -20:] = 1.0
    inputs.history_types[:, -20:] = 2
    inputs.candidate_vectors[:] = rng.standard_normal(inputs.candidate_vectors.shape)
    inputs.candidate_features[:] = rng.random(inputs.candidate_features.shape)
    reference = load_package(MODEL, variant="fp32").ranker.score(inputs)
    scores = other.ranker.score(inputs)
    top_ref = np.argsort(-reference, axis=1)[:, :10]
    top = np.argsort(-scores, axis=1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_ref, top, strict=True)])
    assert overlap >= 0.8


def test_query_match_raises_the_score(model: LoadedModel) -> None:
    inputs = RankInputs.zeros(model.spec, 1, 2)
    inputs.user_features[0, 0] = 1.0  # a search
    inputs.candidate_features[0, 0, CANDIDATE_FEATURES.index("query_match")] = 1.0
    scores = model.ranker.score(inputs)
    assert scores[0, 0] > scores[0, 1]


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "package"
    shutil.copytree(MODEL, target)
    return target


def _edit_manifest(package: Path, **changes: object) -> None:
    manifest = json.loads((package / MANIFEST).read_text())
    manifest.update(changes)
    (package / MANIFEST).write_text(json.dumps(manifest))


def test_a_single_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match="manifest.json"):
        load_package(MODEL / "ranker.onnx")


def test_wrong_contract_is_refused(tmp_path: Path) -> None:
    package = _copy(tmp_path)
    _edit_manifest(package, contract=1)
    with pytest.raises(ModelContractError, match="contract must be 2"):
        load_package(package)


def test_other_features_are_refused(tmp_path: Path) -> None:
    package = _copy(tmp_path)
    _edit_manifest(package, features={"user": ["a"], "candidate": list(CANDIDATE_FEATURES)})
    with pytest.raises(ModelContractError, match="features.user"):
        load_package(package)


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    package = _copy(tmp_path)
    with (package / "items.tsv").open("a") as f:
        f.write("999999\tintruder\n")
    with pytest.raises(ModelContractError, match="sha256"):
        load_package(package)


def test_wrong_input_name_is_refused(tmp_path: Path) -> None:
    package = _copy(tmp_path)
    manifest = json.loads((package / MANIFEST).read_text())
    ranker = package / manifest["files"]["ranker"]["fp32"]
    graph = onnx.load(ranker)
    old = graph.graph.input[0].name
    graph.graph.input[0].name = "history"
    for node in graph.graph.node:
        node.input[:] = ["history" if i == old else i for i in node.input]
    onnx.save(graph, ranker)
    manifest["sha256"].pop(ranker.name)  # a re-exported file, hashes updated by its author
    (package / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelContractError, match="inputs must be"):
        load_package(package, variant="fp32")


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ModelContractError, match="variant"):
        load_package(MODEL, variant="int4")


def test_cuda_request_without_a_gpu_falls_back_to_cpu_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is present: the fallback cannot be exercised here")
    with caplog.at_level(logging.WARNING, logger="app.core.scoring.package"):
        model = load_package(MODEL, device="cuda")
    assert model.ranker.device == "cpu"
    assert model.ranker.providers == ["CPUExecutionProvider"]
    assert model.ranker.variant == "fp32"  # auto picks FP16 only on CUDA
    assert any("running on the CPU" in r.getMessage() for r in caplog.records)


def test_unknown_device_is_refused() -> None:
    with pytest.raises(ModelContractError, match="device"):
        resolve_device("tpu")


def test_the_item_encoder_keeps_no_memory_arena(model: LoadedModel) -> None:
    # Catalog builds run the encoder on thousands of items at a time; an arena would keep the
    # largest run's buffers (about 140 MB for 8,192 items) for the worker's whole life.
    session = model.encoder._session
    assert session.get_session_options().enable_cpu_mem_arena is False
