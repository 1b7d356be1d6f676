"""The model gate: broken or contract-breaking packages never replace the serving model."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from numpy.typing import NDArray

from app.scoring.base import RankInputs
from app.scoring.gate import ModelRejected, ModelSlot, ReloadResult, check_candidate
from app.scoring.package import MANIFEST, LoadedModel
from tests.conftest import MODEL

NEXT = "1.1.0"


def _manifest(package: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((package / MANIFEST).read_text())
    return manifest


def _write_manifest(package: Path, manifest: dict[str, Any]) -> None:
    (package / MANIFEST).write_text(json.dumps(manifest, indent=2))


def _rehash(package: Path, name: str) -> None:
    """Update the manifest's sha256 as a packager would: only the ONNX checks can catch it."""
    manifest = _manifest(package)
    manifest["sha256"][name] = hashlib.sha256((package / name).read_bytes()).hexdigest()
    _write_manifest(package, manifest)


def _edit_onnx(package: Path, name: str, edit: Callable[[onnx.ModelProto], None]) -> None:
    model = onnx.load(package / name)
    edit(model)
    onnx.save(model, package / name)
    _rehash(package, name)


def _stamp(version: str) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        meta = {p.key: p.value for p in model.metadata_props}
        onnx.helper.set_model_props(model, {**meta, "liverank.model_version": version})

    return edit


def _after(
    output: str, *nodes: onnx.NodeProto, constants: dict[str, float] | None = None
) -> Callable[[onnx.ModelProto], None]:
    """An edit that feeds ``output`` through ``nodes`` (which read ``raw`` and write ``output``),
    keeping the graph's output name."""

    def edit(model: onnx.ModelProto) -> None:
        for node in model.graph.node:
            node.output[:] = ["raw" if o == output else o for o in node.output]
        for name, value in (constants or {}).items():
            model.graph.initializer.append(
                onnx.helper.make_tensor(name, onnx.TensorProto.FLOAT, [], [value])
            )
        model.graph.node.extend(nodes)

    return edit


def _offer(slot: ModelSlot, package: Path) -> ReloadResult:
    # The FP32 file the tests edit, whatever a GPU on the test machine would make auto pick.
    return slot.offer(package, variant="fp32", device="cpu")


@pytest.fixture(scope="module")
def next_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good package one version on: manifest and every ONNX file's stamp say 1.1.0."""
    package = tmp_path_factory.mktemp("next") / "seqrank"
    shutil.copytree(MODEL, package)
    manifest = _manifest(package)
    manifest["version"] = NEXT
    _write_manifest(package, manifest)
    for name in (manifest["files"]["item_encoder"], *manifest["files"]["ranker"].values()):
        _edit_onnx(package, name, _stamp(NEXT))
    return package


@pytest.fixture
def candidate(next_version: Path, tmp_path: Path) -> Path:
    package = tmp_path / "candidate"
    shutil.copytree(next_version, package)
    return package


def _inputs(model: LoadedModel) -> RankInputs:
    rng = np.random.default_rng(3)
    inputs = RankInputs.zeros(model.spec, 4, 30)
    inputs.history_vectors[:] = rng.standard_normal(inputs.history_vectors.shape)
    inputs.history_mask[:, -10:] = 1.0
    inputs.history_types[:, -10:] = 2
    inputs.candidate_vectors[:] = rng.standard_normal(inputs.candidate_vectors.shape)
    inputs.candidate_features[:] = rng.random(inputs.candidate_features.shape)
    return inputs


@pytest.fixture(scope="module")
def reference(model: LoadedModel) -> NDArray[np.float32]:
    return model.ranker.score(_inputs(model))


def truncated(package: Path) -> None:
    data = (package / "ranker.onnx").read_bytes()
    (package / "ranker.onnx").write_bytes(data[: len(data) // 2])
    _rehash(package, "ranker.onnx")


def random_bytes(package: Path) -> None:
    (package / "ranker.onnx").write_bytes(np.random.default_rng(0).bytes(100_000))
    _rehash(package, "ranker.onnx")


def nan_scores(package: Path) -> None:
    mul = onnx.helper.make_node("Mul", ["raw", "nan"], ["scores"])
    _edit_onnx(package, "ranker.onnx", _after("scores", mul, constants={"nan": float("nan")}))


def infinite_scores(package: Path) -> None:
    div = onnx.helper.make_node("Div", ["raw", "zero"], ["scores"])
    _edit_onnx(package, "ranker.onnx", _after("scores", div, constants={"zero": 0.0}))


def constant_scores(package: Path) -> None:
    mul = onnx.helper.make_node("Mul", ["raw", "zero"], ["scores"])
    _edit_onnx(package, "ranker.onnx", _after("scores", mul, constants={"zero": 0.0}))


def batch_dependent_scores(package: Path) -> None:
    """Scores centred on the whole batch's mean: finite, varied, right shape, and useless."""
    mean = onnx.helper.make_node("ReduceMean", ["raw"], ["mean"], keepdims=0)
    sub = onnx.helper.make_node("Sub", ["raw", "mean"], ["scores"])
    _edit_onnx(package, "ranker.onnx", _after("scores", mean, sub))


def wrong_input_name(package: Path) -> None:
    def edit(model: onnx.ModelProto) -> None:
        old = model.graph.input[0].name
        model.graph.input[0].name = "history"
        for node in model.graph.node:
            node.input[:] = ["history" if i == old else i for i in node.input]

    _edit_onnx(package, "ranker.onnx", edit)


def wrong_output_shape(package: Path) -> None:
    """Scores as [batch, candidates, 1], declared so: an exporter that kept a trailing axis."""
    axes = onnx.helper.make_tensor("axes", onnx.TensorProto.INT64, [1], [2])
    unsqueeze = onnx.helper.make_node("Unsqueeze", ["raw", "axes"], ["scores"])

    def edit(model: onnx.ModelProto) -> None:
        _after("scores", unsqueeze)(model)
        model.graph.initializer.append(axes)
        (scores,) = (o for o in model.graph.output if o.name == "scores")
        scores.type.tensor_type.shape.dim.add().dim_value = 1

    _edit_onnx(package, "ranker.onnx", edit)


def missing_file(package: Path) -> None:
    (package / "ranker.onnx").unlink()


def nan_item_vectors(package: Path) -> None:
    mul = onnx.helper.make_node("Mul", ["raw", "nan"], ["item_vectors"])
    after = _after("item_vectors", mul, constants={"nan": float("nan")})
    _edit_onnx(package, "item_encoder.onnx", after)


def mixed_builds(package: Path) -> None:
    _edit_onnx(package, "item_encoder.onnx", _stamp("0.9.0"))


def other_family(package: Path) -> None:
    _write_manifest(package, {**_manifest(package), "name": "otherrank"})


def items_is_a_folder(package: Path) -> None:
    """read_spec lets the OSError through: the slot must still catch it."""
    (package / "items").mkdir()
    manifest = _manifest(package)
    manifest["files"]["items"] = "items"
    _write_manifest(package, manifest)


def variant_not_in_package(package: Path) -> None:
    """A KeyError from deep in the loader, not a ModelContractError."""
    manifest = _manifest(package)
    del manifest["files"]["ranker"]["fp32"]
    _write_manifest(package, manifest)


BROKEN = [
    (truncated, "not a loadable ONNX model"),
    (random_bytes, "not a loadable ONNX model"),
    (nan_scores, r"not finite \(NaN or Inf\)"),
    (infinite_scores, r"not finite \(NaN or Inf\)"),
    (constant_scores, "the same score for every candidate"),
    (batch_dependent_scores, "differently alone"),
    (wrong_input_name, "inputs must be"),
    (wrong_output_shape, r"scores must be \[batch, candidates\]"),
    (missing_file, "ranker.onnx is missing"),
    (nan_item_vectors, "item encoder gives vectors that are not finite"),
    (mixed_builds, "different builds: manifest version 1.1.0, item encoder stamped 0.9.0"),
    (other_family, "'otherrank' cannot replace 'seqrank'"),
    (items_is_a_folder, "IsADirectoryError"),
    (variant_not_in_package, "KeyError: 'fp32'"),
]


@pytest.mark.parametrize(("breaks", "reason"), BROKEN, ids=[b.__name__ for b, _ in BROKEN])
def test_a_broken_candidate_is_rejected_and_the_old_model_keeps_serving(
    model: LoadedModel,
    reference: NDArray[np.float32],
    candidate: Path,
    caplog: pytest.LogCaptureFixture,
    breaks: Callable[[Path], None],
    reason: str,
) -> None:
    breaks(candidate)
    slot = ModelSlot(model)
    with caplog.at_level(logging.INFO, logger="app.scoring"):
        result = _offer(slot, candidate)
    assert not result.accepted
    assert str(candidate) in result.reason
    assert re.search(reason, result.reason), result.reason
    assert (slot.accepted, slot.rejected, slot.unchanged) == (0, 1, 0)
    assert slot.current is model
    np.testing.assert_array_equal(slot.current.ranker.score(_inputs(model)), reference)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and result.reason in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()


def test_a_good_new_version_is_swapped_in(
    model: LoadedModel, reference: NDArray[np.float32], candidate: Path
) -> None:
    slot = ModelSlot(model)
    result = _offer(slot, candidate)
    assert result.accepted, result.reason
    assert result.version == NEXT and result.seconds > 0
    assert (slot.accepted, slot.rejected, slot.unchanged) == (1, 0, 0)
    assert slot.current is not model and slot.current.spec.version == NEXT
    # The same weights under a new version: the new model scores exactly as the old one did.
    np.testing.assert_allclose(slot.current.ranker.score(_inputs(model)), reference, rtol=1e-5)


def test_the_serving_version_again_is_a_no_op(
    model: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    slot = ModelSlot(model)
    with caplog.at_level(logging.INFO, logger="app.scoring"):
        result = _offer(slot, MODEL)
    assert not result.accepted and "already serving" in result.reason
    assert (slot.accepted, slot.rejected, slot.unchanged) == (0, 0, 1)
    assert slot.current is model
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_check_candidate_refuses_the_serving_version(model: LoadedModel) -> None:
    with pytest.raises(ModelRejected, match=f"{MODEL}: version 1.0.0 is already serving"):
        check_candidate(MODEL, serving=model.spec)


@pytest.mark.parametrize("variant", ["fp32", "int8", "fp16"])
def test_every_shipped_variant_passes_the_probe(variant: str) -> None:
    """INT8 is not batch-invariant (dynamic quantization); the gate must not mistake that for
    a broken model."""
    assert check_candidate(MODEL, variant=variant).ranker.variant == variant
