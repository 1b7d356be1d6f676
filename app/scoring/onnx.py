"""``OnnxScorer``: ONNX Runtime behind the ``Scorer`` seam, checked against the contract at load."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from app.features import CANDIDATE_FEATURES, USER_FEATURES
from app.scoring.base import ModelContractError

log = logging.getLogger(__name__)

CONTRACT_VERSION = "1"
INPUT_USER = "user_features"
INPUT_CANDIDATES = "candidate_features"
OUTPUT_SCORES = "scores"
META_CONTRACT = "liverank.contract"
META_VERSION = "liverank.model_version"
META_USER = "liverank.user_features"
META_CANDIDATES = "liverank.candidate_features"


def _check(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise ModelContractError(f"{path}: {message} (see 'ONNX model contract' in README.md)")


class OnnxScorer:
    """Loads a model once, validates it, warms it up; ``score`` is then safe on the hot path."""

    def __init__(self, path: Path, *, threads: int = 1, providers: list[str] | None = None) -> None:
        if not path.is_file():
            raise ModelContractError(f"{path}: model file not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        wanted = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise ModelContractError(f"{path}: not a loadable ONNX model: {exc}") from exc
        self.path = path
        self.providers: list[str] = list(self._session.get_providers())
        if "CUDAExecutionProvider" in wanted and "CUDAExecutionProvider" not in self.providers:
            log.info("CUDA execution provider not available; scoring on CPU")
        self._version = self._validate()
        self._warm_up()

    @property
    def model_version(self) -> str:
        return self._version

    def _validate(self) -> str:
        path = self.path
        meta = self._session.get_modelmeta().custom_metadata_map
        _check(
            meta.get(META_CONTRACT) == CONTRACT_VERSION,
            path,
            f"metadata {META_CONTRACT} must be {CONTRACT_VERSION!r}, "
            f"got {meta.get(META_CONTRACT)!r}",
        )
        version = str(meta.get(META_VERSION, ""))
        _check(bool(version), path, f"metadata {META_VERSION} is missing")
        _check(
            tuple(meta.get(META_USER, "").split(",")) == USER_FEATURES,
            path,
            f"metadata {META_USER} must list {','.join(USER_FEATURES)}",
        )
        _check(
            tuple(meta.get(META_CANDIDATES, "").split(",")) == CANDIDATE_FEATURES,
            path,
            f"metadata {META_CANDIDATES} must list {','.join(CANDIDATE_FEATURES)}",
        )
        inputs = {i.name: i for i in self._session.get_inputs()}
        _check(
            set(inputs) == {INPUT_USER, INPUT_CANDIDATES},
            path,
            f"inputs must be {INPUT_USER} and {INPUT_CANDIDATES}, got {sorted(inputs)}",
        )
        user, cand = inputs[INPUT_USER], inputs[INPUT_CANDIDATES]
        _check(user.type == "tensor(float)", path, f"{INPUT_USER} must be float32")
        _check(cand.type == "tensor(float)", path, f"{INPUT_CANDIDATES} must be float32")
        _check(
            len(user.shape) == 2 and user.shape[1] == len(USER_FEATURES),
            path,
            f"{INPUT_USER} must be [batch, {len(USER_FEATURES)}], got {user.shape}",
        )
        _check(
            len(cand.shape) == 3 and cand.shape[2] == len(CANDIDATE_FEATURES),
            path,
            f"{INPUT_CANDIDATES} must be [batch, candidates, {len(CANDIDATE_FEATURES)}], "
            f"got {cand.shape}",
        )
        _check(
            not isinstance(user.shape[0], int) and not isinstance(cand.shape[1], int),
            path,
            "batch and candidate axes must be dynamic",
        )
        outputs = self._session.get_outputs()
        _check(
            len(outputs) == 1 and outputs[0].name == OUTPUT_SCORES,
            path,
            f"the one output must be named {OUTPUT_SCORES}",
        )
        _check(outputs[0].type == "tensor(float)", path, f"{OUTPUT_SCORES} must be float32")
        return version

    def _warm_up(self) -> None:
        """Run a few shapes once so the first real event does not pay for allocation."""
        for batch, cands in ((1, 200), (8, 50), (1, 1)):
            user = np.zeros((batch, len(USER_FEATURES)), dtype=np.float32)
            cand = np.zeros((batch, cands, len(CANDIDATE_FEATURES)), dtype=np.float32)
            scores = self.score(user, cand)
            _check(
                scores.shape == (batch, cands),
                self.path,
                f"{OUTPUT_SCORES} must be [batch, candidates], got {scores.shape}",
            )

    def score(
        self, user: NDArray[np.float32], candidates: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        (scores,) = self._session.run(
            [OUTPUT_SCORES], {INPUT_USER: user, INPUT_CANDIDATES: candidates}
        )
        return np.asarray(scores, dtype=np.float32)
