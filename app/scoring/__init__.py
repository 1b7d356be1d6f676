"""The ONNX seam: the ``Scorer`` protocol and its ONNX Runtime implementation."""

from __future__ import annotations

from app.scoring.base import ModelContractError, Scorer

__all__ = ["ModelContractError", "Scorer"]
