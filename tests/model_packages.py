"""Model packages for tests: a good package one version on, and ways to break one."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from app.core.scoring.package import MANIFEST
from tests.conftest import MODEL

# The version of the package in models/ (the one a fresh worker serves).
SHIPPED = json.loads((MODEL / MANIFEST).read_text())["version"]


def manifest_of(package: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((package / MANIFEST).read_text())
    return manifest


def write_manifest(package: Path, manifest: dict[str, Any]) -> None:
    (package / MANIFEST).write_text(json.dumps(manifest, indent=2))


def rehash(package: Path, name: str) -> None:
    """Update the manifest's sha256 as a packager would: only the ONNX checks can catch it."""
    manifest = manifest_of(package)
    manifest["sha256"][name] = hashlib.sha256((package / name).read_bytes()).hexdigest()
    write_manifest(package, manifest)


def edit_onnx(package: Path, name: str, edit: Callable[[onnx.ModelProto], None]) -> None:
    model = onnx.load(package / name)
    edit(model)
    onnx.save(model, package / name)
    rehash(package, name)


def stamp(version: str) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        meta = {p.key: p.value for p in model.metadata_props}
        onnx.helper.set_model_props(model, {**meta, "liverank.model_version": version})

    return edit


def after(
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


def versioned_copy(destination: Path, version: str, source: Path = MODEL) -> Path:
    """A copy of ``source`` whose manifest and every ONNX file's stamp say ``version``."""
    shutil.copytree(source, destination)
    manifest = manifest_of(destination)
    manifest["version"] = version
    write_manifest(destination, manifest)
    for name in (manifest["files"]["item_encoder"], *manifest["files"]["ranker"].values()):
        edit_onnx(destination, name, stamp(version))
    return destination


def nan_scores(package: Path, variant_file: str = "ranker.onnx") -> None:
    """Scores times NaN: loads, passes the contract and the zero-input warm-up."""
    mul = onnx.helper.make_node("Mul", ["raw", "nan"], ["scores"])
    edit_onnx(package, variant_file, after("scores", mul, constants={"nan": float("nan")}))


def negated_scores(package: Path) -> None:
    """Every ranker variant's scores turned around: a model that passes every check and ranks
    the serving model's best candidates last (a shadow known to be worse)."""
    manifest = manifest_of(package)
    for name in manifest["files"]["ranker"].values():
        neg = onnx.helper.make_node("Neg", ["raw"], ["scores"])
        edit_onnx(package, name, after("scores", neg))
