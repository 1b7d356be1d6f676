"""Restamp a package's ONNX files with another model version (needs onnx: the train and dev
extras; nothing here imports torch, so the bench can use it)."""

from __future__ import annotations

from pathlib import Path


def restamp(path: Path, version: str) -> None:
    """Set an ONNX file's ``liverank.model_version`` metadata, keeping the rest."""
    import onnx

    model = onnx.load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    onnx.helper.set_model_props(model, {**meta, "liverank.model_version": version})
    onnx.save(model, path)
