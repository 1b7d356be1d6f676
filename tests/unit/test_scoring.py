"""The ONNX seam: the shipped model meets the contract; models that break it are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from app.features import CANDIDATE_FEATURES, USER_FEATURES
from app.scoring.base import ModelContractError
from app.scoring.onnx import META_CANDIDATES, META_VERSION, OnnxScorer
from tests.conftest import MODEL


def test_shipped_model_meets_contract(scorer: OnnxScorer) -> None:
    assert scorer.model_version == "prior-2"
    user = np.zeros((3, len(USER_FEATURES)), dtype=np.float32)
    cands = np.random.default_rng(0).random((3, 17, len(CANDIDATE_FEATURES)), dtype=np.float32)
    scores = scorer.score(user, cands)
    assert scores.shape == (3, 17) and scores.dtype == np.float32
    assert np.all((scores > 0) & (scores < 1))


def test_query_match_dominates_on_search(scorer: OnnxScorer) -> None:
    user = np.array([[1, 0, 0, 0]], dtype=np.float32)  # a search
    cands = np.zeros((1, 2, len(CANDIDATE_FEATURES)), dtype=np.float32)
    cands[0, 0, CANDIDATE_FEATURES.index("query_match")] = 1.0
    cands[0, 1, CANDIDATE_FEATURES.index("category_affinity")] = 1.0
    cands[0, 1, CANDIDATE_FEATURES.index("popularity")] = 1.0
    scores = scorer.score(user, cands)
    assert scores[0, 0] > scores[0, 1]


def _save_with(tmp_path: Path, props: dict[str, str]) -> Path:
    model = onnx.load(MODEL)
    meta = {p.key: p.value for p in model.metadata_props}
    meta.update(props)
    helper.set_model_props(model, meta)
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    return path


def test_missing_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match=META_VERSION):
        OnnxScorer(_save_with(tmp_path, {META_VERSION: ""}))


def test_other_feature_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelContractError, match=META_CANDIDATES):
        OnnxScorer(_save_with(tmp_path, {META_CANDIDATES: "a,b,c"}))


def test_not_onnx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelContractError, match="not a loadable ONNX model"):
        OnnxScorer(path)
    with pytest.raises(ModelContractError, match="not found"):
        OnnxScorer(tmp_path / "missing.onnx")


def test_wrong_input_name_is_refused(tmp_path: Path) -> None:
    model = onnx.load(MODEL)
    old = model.graph.input[0].name
    model.graph.input[0].name = "features"
    for node in model.graph.node:
        node.input[:] = ["features" if i == old else i for i in node.input]
    path = tmp_path / "renamed.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelContractError, match="inputs must be"):
        OnnxScorer(path)


def test_committed_model_is_what_the_script_builds() -> None:
    """models/default/model.onnx is reproducible from scripts/make_prior_model.py."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_prior_model", MODEL.parents[2] / "scripts" / "make_prior_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build().SerializeToString() == MODEL.read_bytes()
