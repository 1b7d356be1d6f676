"""The ``Scorer`` seam: what ranking needs from a model, whatever runs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from app.core.scoring.package import ModelSpec


class ModelContractError(ValueError):
    """A model package that does not meet the contract in docs/contracts.md."""


@dataclass(frozen=True, slots=True)
class RankInputs:
    """One model call: a batch of events, each with its history, query, user and candidates."""

    history_vectors: NDArray[np.float32]  # (batch, max_len, dim), newest last
    history_mask: NDArray[np.float32]  # (batch, max_len), 1 where there is an interaction
    history_types: NDArray[np.int64]  # (batch, max_len), 1 view .. 4 purchase, 0 pad
    query_terms: NDArray[np.int64]  # (batch, max_query_terms), hashed, 0 pad
    user_features: NDArray[np.float32]  # (batch, len(USER_FEATURES))
    candidate_vectors: NDArray[np.float32]  # (batch, candidates, dim)
    candidate_features: NDArray[np.float32]  # (batch, candidates, len(CANDIDATE_FEATURES))

    def feed(self) -> dict[str, NDArray[np.float32] | NDArray[np.int64]]:
        return {
            "history_vectors": self.history_vectors,
            "history_mask": self.history_mask,
            "history_types": self.history_types,
            "query_terms": self.query_terms,
            "user_features": self.user_features,
            "candidate_vectors": self.candidate_vectors,
            "candidate_features": self.candidate_features,
        }

    @classmethod
    def zeros(cls, spec: ModelSpec, batch: int, candidates: int) -> RankInputs:
        from app.core.features import CANDIDATE_FEATURES, USER_FEATURES

        return cls(
            history_vectors=np.zeros((batch, spec.max_len, spec.dim), dtype=np.float32),
            history_mask=np.zeros((batch, spec.max_len), dtype=np.float32),
            history_types=np.zeros((batch, spec.max_len), dtype=np.int64),
            query_terms=np.zeros((batch, spec.max_query_terms), dtype=np.int64),
            user_features=np.zeros((batch, len(USER_FEATURES)), dtype=np.float32),
            candidate_vectors=np.zeros((batch, candidates, spec.dim), dtype=np.float32),
            candidate_features=np.zeros(
                (batch, candidates, len(CANDIDATE_FEATURES)), dtype=np.float32
            ),
        )


class Scorer(Protocol):
    """Scores candidates for a batch of events: (batch, candidates) float32, higher is better."""

    @property
    def model_version(self) -> str: ...

    def score(self, inputs: RankInputs) -> NDArray[np.float32]: ...


class ItemEncoder(Protocol):
    """Turns model item indices (0 = unknown) and hashed text terms into item vectors."""

    def encode(self, index: NDArray[np.int64], terms: NDArray[np.int64]) -> NDArray[np.float32]: ...
