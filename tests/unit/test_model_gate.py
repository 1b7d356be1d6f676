"""The model gate: broken or contract-breaking packages never replace the serving model."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from numpy.typing import NDArray

from app.core.scoring.base import RankInputs
from app.core.scoring.gate import ModelRejected, ModelSlot, ReloadResult, check_candidate
from app.core.scoring.package import LoadedModel
from app.training.stream import next_version as minor_after
from tests.conftest import MODEL
from tests.model_packages import (
    SHIPPED,
    after,
    edit_onnx,
    manifest_of,
    rehash,
    stamp,
    versioned_copy,
    write_manifest,
)

NEXT = minor_after(SHIPPED)


def _offer(slot: ModelSlot, package: Path) -> ReloadResult:
    # The FP32 file the tests edit, whatever a GPU on the test machine would make auto pick.
    return slot.offer(package, variant="fp32", device="cpu")


@pytest.fixture(scope="module")
def next_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A good package one version on: manifest and every ONNX file's stamp say NEXT."""
    return versioned_copy(tmp_path_factory.mktemp("next") / "seqrank", NEXT)


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
    rehash(package, "ranker.onnx")


def random_bytes(package: Path) -> None:
    (package / "ranker.onnx").write_bytes(np.random.default_rng(0).bytes(100_000))
    rehash(package, "ranker.onnx")


def nan_scores(package: Path) -> None:
    mul = onnx.helper.make_node("Mul", ["raw", "nan"], ["scores"])
    edit_onnx(package, "ranker.onnx", after("scores", mul, constants={"nan": float("nan")}))


def infinite_scores(package: Path) -> None:
    div = onnx.helper.make_node("Div", ["raw", "zero"], ["scores"])
    edit_onnx(package, "ranker.onnx", after("scores", div, constants={"zero": 0.0}))


def constant_scores(package: Path) -> None:
    mul = onnx.helper.make_node("Mul", ["raw", "zero"], ["scores"])
    edit_onnx(package, "ranker.onnx", after("scores", mul, constants={"zero": 0.0}))


def batch_dependent_scores(package: Path) -> None:
    """Scores centred on the whole batch's mean: finite, varied, right shape, and useless."""
    mean = onnx.helper.make_node("ReduceMean", ["raw"], ["mean"], keepdims=0)
    sub = onnx.helper.make_node("Sub", ["raw", "mean"], ["scores"])
    edit_onnx(package, "ranker.onnx", after("scores", mean, sub))


def wrong_input_name(package: Path) -> None:
    def edit(model: onnx.ModelProto) -> None:
        old = model.graph.input[0].name
        model.graph.input[0].name = "history"
        for node in model.graph.node:
            node.input[:] = ["history" if i == old else i for i in node.input]

    edit_onnx(package, "ranker.onnx", edit)


def wrong_output_shape(package: Path) -> None:
    """Scores as [batch, candidates, 1], declared so: an exporter that kept a trailing axis."""
    axes = onnx.helper.make_tensor("axes", onnx.TensorProto.INT64, [1], [2])
    unsqueeze = onnx.helper.make_node("Unsqueeze", ["raw", "axes"], ["scores"])

    def edit(model: onnx.ModelProto) -> None:
        after("scores", unsqueeze)(model)
        model.graph.initializer.append(axes)
        (scores,) = (o for o in model.graph.output if o.name == "scores")
        scores.type.tensor_type.shape.dim.add().dim_value = 1

    edit_onnx(package, "ranker.onnx", edit)


def missing_file(package: Path) -> None:
    (package / "ranker.onnx").unlink()


def nan_item_vectors(package: Path) -> None:
    mul = onnx.helper.make_node("Mul", ["raw", "nan"], ["item_vectors"])
    edit_onnx(
        package, "item_encoder.onnx", after("item_vectors", mul, constants={"nan": float("nan")})
    )


def mixed_builds(package: Path) -> None:
    edit_onnx(package, "item_encoder.onnx", stamp("0.9.0"))


def other_family(package: Path) -> None:
    write_manifest(package, {**manifest_of(package), "name": "otherrank"})


def items_is_a_folder(package: Path) -> None:
    """read_spec lets the OSError through: the slot must still catch it."""
    (package / "items").mkdir()
    manifest = manifest_of(package)
    manifest["files"]["items"] = "items"
    write_manifest(package, manifest)


def variant_not_in_package(package: Path) -> None:
    """A KeyError from deep in the loader, not a ModelContractError."""
    manifest = manifest_of(package)
    del manifest["files"]["ranker"]["fp32"]
    write_manifest(package, manifest)


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
    (mixed_builds, f"different builds: manifest version {NEXT}, item encoder stamped 0.9.0"),
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
    with caplog.at_level(logging.INFO, logger="app.core.scoring"):
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
    with caplog.at_level(logging.INFO, logger="app.core.scoring"):
        result = _offer(slot, MODEL)
    assert not result.accepted and "already serving" in result.reason
    assert (slot.accepted, slot.rejected, slot.unchanged) == (0, 0, 1)
    assert slot.current is model
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_check_candidate_refuses_the_serving_version(model: LoadedModel) -> None:
    with pytest.raises(ModelRejected, match=f"{MODEL}: version {SHIPPED} is already serving"):
        check_candidate(MODEL, serving=model.spec)


@pytest.mark.parametrize("variant", ["fp32", "int8", "fp16"])
def test_every_shipped_variant_passes_the_probe(variant: str) -> None:
    """INT8 is not batch-invariant (dynamic quantization); the gate must not mistake that for
    a broken model."""
    assert check_candidate(MODEL, variant=variant).ranker.variant == variant
