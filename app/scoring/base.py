"""The ``Scorer`` protocol: what ranking needs from a model, whatever runs it."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray


class ModelContractError(ValueError):
    """A model file that does not meet the ONNX contract in README.md."""


class Scorer(Protocol):
    """Scores candidates for a batch of events.

    ``user`` is (batch, user features); ``candidates`` is (batch, candidates, candidate features).
    Returns (batch, candidates) float32 scores, higher is better.
    """

    @property
    def model_version(self) -> str: ...

    def score(
        self, user: NDArray[np.float32], candidates: NDArray[np.float32]
    ) -> NDArray[np.float32]: ...
