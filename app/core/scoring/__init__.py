"""The ONNX seam: ``Scorer``/``ItemEncoder`` protocols and their ONNX Runtime implementations."""

from __future__ import annotations

from app.core.scoring.base import ItemEncoder, ModelContractError, RankInputs, Scorer

__all__ = ["ItemEncoder", "ModelContractError", "RankInputs", "Scorer"]
