"""Model packages (contract 2): load a versioned folder, check it, and serve it with ONNX Runtime.

A package holds ``manifest.json``, ``item_encoder.onnx`` (item id + text terms -> item vector),
``ranker.onnx`` with its ``.int8`` and ``.fp16`` variants (history + query + user features +
candidates -> scores and the user vector) and ``items.tsv`` (catalog item id -> model index).
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from app.core.features import CANDIDATE_FEATURES, USER_FEATURES
from app.core.scoring.base import ModelContractError, RankInputs
from app.core.transitions import BlendParams, Transitions

log = logging.getLogger(__name__)

CONTRACT_VERSION = 2
MANIFEST = "manifest.json"
RANKER_INPUTS = (
    "history_vectors",
    "history_mask",
    "history_types",
    "query_terms",
    "user_features",
    "candidate_vectors",
    "candidate_features",
)
RANKER_OUTPUTS = ("scores", "user_vector")
ENCODER_INPUTS = ("item_index", "item_terms")
ENCODER_OUTPUT = "item_vectors"
VARIANTS = ("auto", "fp32", "int8", "fp16")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the worker must feed the model, read from the manifest."""

    name: str
    version: str
    dim: int
    max_len: int
    max_query_terms: int
    max_item_terms: int
    n_buckets: int
    item_index: dict[str, int]
    # Item-to-item transitions blended into the ranker's scores (app.core.transitions); None
    # for a package without them (its ranker's scores are served as they are).
    transitions: Transitions | None = field(default=None, compare=False)


def _fail(path: Path, message: str) -> ModelContractError:
    return ModelContractError(f"{path}: {message} (see docs/contracts.md#model-package-contract)")


def read_spec(path: Path) -> tuple[ModelSpec, dict[str, Any]]:
    """Parse and check ``manifest.json`` and the files it names (existence and sha256)."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise _fail(path, f"no {MANIFEST}; a model package is a folder, not a single file")
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise _fail(manifest_path, f"not valid JSON: {exc}") from None
    if manifest.get("contract") != CONTRACT_VERSION:
        raise _fail(path, f"contract must be {CONTRACT_VERSION}, got {manifest.get('contract')!r}")
    features = manifest.get("features", {})
    if tuple(features.get("user", ())) != USER_FEATURES:
        raise _fail(path, f"features.user must be {list(USER_FEATURES)}")
    if tuple(features.get("candidate", ())) != CANDIDATE_FEATURES:
        raise _fail(path, f"features.candidate must be {list(CANDIDATE_FEATURES)}")
    for name, digest in manifest.get("sha256", {}).items():
        file = path / name
        if not file.is_file():
            raise _fail(path, f"{name} is missing")
        if hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            raise _fail(path, f"{name} does not match its sha256 in the manifest")
    model = manifest.get("model", {})
    try:
        items_file = path / manifest["files"]["items"]
        index = {}
        for line in items_file.read_text(encoding="utf-8").splitlines()[1:]:
            idx, item_id = line.split("\t")
            index[item_id] = int(idx)
        spec = ModelSpec(
            name=str(manifest["name"]),
            version=str(manifest["version"]),
            dim=int(model["dim"]),
            max_len=int(model["max_len"]),
            max_query_terms=int(model["max_query_terms"]),
            max_item_terms=int(model["max_item_terms"]),
            n_buckets=int(model["n_buckets"]),
            item_index=index,
            transitions=_transitions(path, manifest, index),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise _fail(path, f"manifest or items file incomplete: {exc!r}") from None
    if not spec.version:
        raise _fail(path, "version is empty")
    return spec, manifest


def _transitions(path: Path, manifest: dict[str, Any], index: dict[str, int]) -> Transitions | None:
    """The package's transition table (``files.transitions`` and ``blend``), if it has one."""
    name = manifest["files"].get("transitions")
    if name is None:
        return None
    if "blend" not in manifest:
        raise _fail(path, "files.transitions needs a blend section (its parameters)")
    try:
        params = BlendParams.from_dict(manifest["blend"])
        table = Transitions.from_bytes((path / name).read_bytes(), params)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise _fail(path, f"{name}: {exc}") from None
    if table.n_items != max(index.values(), default=0):
        raise _fail(path, f"{name} covers {table.n_items} items, items.tsv {len(index)}")
    return table


def _session(
    path: Path, threads: int, providers: list[str], *, arena: bool = True
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ONNX Runtime's CPU arena keeps the largest run's memory for the session's life.
    options.enable_cpu_mem_arena = arena
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises untyped errors for bad files
        raise _fail(path, f"not a loadable ONNX model: {exc}") from exc


def _check_io(
    path: Path,
    session: ort.InferenceSession,
    inputs: dict[str, tuple[str, tuple[int | None, ...]]],
    outputs: tuple[str, ...],
) -> None:
    """Names, dtypes and fixed dims must match; ``None`` dims must be dynamic (symbolic)."""
    got = {i.name: i for i in session.get_inputs()}
    if set(got) != set(inputs):
        raise _fail(path, f"inputs must be {sorted(inputs)}, got {sorted(got)}")
    for name, (dtype, shape) in inputs.items():
        arg = got[name]
        if arg.type != dtype:
            raise _fail(path, f"input {name} must be {dtype}, got {arg.type}")
        if len(arg.shape) != len(shape):
            raise _fail(path, f"input {name} must have {len(shape)} axes, got {arg.shape}")
        for want, have in zip(shape, arg.shape, strict=True):
            if want is None and isinstance(have, int):
                raise _fail(path, f"input {name} needs dynamic axes where {shape} has None")
            if want is not None and have != want:
                raise _fail(path, f"input {name} must have shape {shape}, got {arg.shape}")
    names = tuple(o.name for o in session.get_outputs())
    if names != outputs:
        raise _fail(path, f"outputs must be {list(outputs)}, got {list(names)}")
    version = session.get_modelmeta().custom_metadata_map.get("liverank.model_version", "")
    if not version:
        raise _fail(path, "metadata liverank.model_version is missing")


class OnnxItemEncoder:
    """Item ids and text terms to item vectors; run when the catalog index is (re)built."""

    def __init__(self, path: Path, spec: ModelSpec, threads: int = 1) -> None:
        self.spec = spec
        # No arena: the encoder runs in catalog builds, thousands of items a run, and an arena
        # would keep a build's peak (about 140 MB for a run of 8,192 items) for good.
        self._session = _session(path, threads, ["CPUExecutionProvider"], arena=False)
        _check_io(
            path,
            self._session,
            {
                "item_index": ("tensor(int64)", (None,)),
                "item_terms": ("tensor(int64)", (None, spec.max_item_terms)),
            },
            (ENCODER_OUTPUT,),
        )

    @property
    def metadata(self) -> dict[str, str]:
        """The ONNX file's metadata (``liverank.model_version``, ``liverank.role``, ...)."""
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def encode(self, index: NDArray[np.int64], terms: NDArray[np.int64]) -> NDArray[np.float32]:
        if index.shape[0] == 0:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        out = []
        for start in range(0, index.shape[0], 65536):  # bounded memory for big catalogs
            (vectors,) = self._session.run(
                [ENCODER_OUTPUT],
                {
                    "item_index": index[start : start + 65536],
                    "item_terms": terms[start : start + 65536],
                },
            )
            out.append(np.asarray(vectors, dtype=np.float32))
        return np.concatenate(out)


def _cuda_available() -> bool:
    return "CUDAExecutionProvider" in ort.get_available_providers()


def resolve_device(device: str) -> str:
    """``cuda`` or ``cpu`` for a requested device; a CUDA request without a usable GPU falls
    back to the CPU, with a warning in the log."""
    if device not in ("auto", "cuda", "cpu"):
        raise ModelContractError(f"model device must be auto, cuda or cpu, got {device!r}")
    if device == "cpu":
        return "cpu"
    if _cuda_available():
        return "cuda"
    if device == "cuda":
        log.warning(
            "model_device=cuda but onnxruntime offers %s (install the gpu extra, "
            "onnxruntime-gpu, on a machine with a GPU); running on the CPU",
            ort.get_available_providers(),
        )
    return "cpu"


class OnnxRanker:
    """The ranker behind the ``Scorer`` seam; the variant picks FP32, INT8 (CPU) or FP16 (GPU).

    On CUDA the inputs are bound with IO binding: each batch is copied to the GPU once and the
    scores come back once, with no intermediate host copies inside ONNX Runtime.
    """

    def __init__(
        self,
        package: Path,
        spec: ModelSpec,
        manifest: dict[str, Any],
        variant: str,
        threads: int,
        device: str = "auto",
    ) -> None:
        if variant not in VARIANTS:
            raise ModelContractError(f"model variant must be one of {VARIANTS}, got {variant!r}")
        device = resolve_device(device)
        if variant == "auto":
            # FP32 on the CPU: INT8's dynamic quantization scales activations per call, so a
            # batch's neighbours would nudge an event's scores; FP32 ranks the same batched
            # or alone (tests/unit/test_batching.py).
            variant = "fp16" if device == "cuda" else "fp32"
        if variant == "fp16" and device == "cpu":
            log.warning("FP16 model requested without CUDA; running it on CPU (slow)")
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if device == "cuda"
            else ["CPUExecutionProvider"]
        )
        path = package / manifest["files"]["ranker"][variant]
        self.spec = spec
        self.variant = variant
        self._session = _session(path, threads, providers)
        self.providers: list[str] = list(self._session.get_providers())
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        if device == "cuda" and self.device != "cuda":
            log.warning("the CUDA provider failed to load; running the ranker on the CPU")
        self._binding = self._session.io_binding() if self.device == "cuda" else None
        n_user, n_cand = len(USER_FEATURES), len(CANDIDATE_FEATURES)
        _check_io(
            path,
            self._session,
            {
                "history_vectors": ("tensor(float)", (None, spec.max_len, spec.dim)),
                "history_mask": ("tensor(float)", (None, spec.max_len)),
                "history_types": ("tensor(int64)", (None, spec.max_len)),
                "query_terms": ("tensor(int64)", (None, spec.max_query_terms)),
                "user_features": ("tensor(float)", (None, n_user)),
                "candidate_vectors": ("tensor(float)", (None, None, spec.dim)),
                "candidate_features": ("tensor(float)", (None, None, n_cand)),
            },
            RANKER_OUTPUTS,
        )

    @property
    def model_version(self) -> str:
        return self.spec.version

    @property
    def metadata(self) -> dict[str, str]:
        """The ONNX file's metadata (``liverank.model_version``, ``liverank.role``, ...)."""
        return dict(self._session.get_modelmeta().custom_metadata_map)

    def score(self, inputs: RankInputs) -> NDArray[np.float32]:
        binding = self._binding
        if binding is None:
            scores, _user = self._session.run(list(RANKER_OUTPUTS), inputs.feed())
            return np.asarray(scores, dtype=np.float32)
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, array in inputs.feed().items():
            binding.bind_cpu_input(name, array)
        for name in RANKER_OUTPUTS:
            binding.bind_output(name, "cuda", 0)
        self._session.run_with_iobinding(binding)
        return np.asarray(binding.get_outputs()[0].numpy(), dtype=np.float32)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1, 16, 64, 256), width: int = 200) -> None:
        """Run typical shapes once so the first events do not pay for allocation (and, on CUDA,
        for kernel selection)."""
        for batch, cands in ((b, width) for b in batch_sizes):
            scores = self.score(RankInputs.zeros(self.spec, batch, cands))
            if scores.shape != (batch, cands):
                raise ModelContractError(
                    f"scores must be [batch, candidates], got {scores.shape} for {(batch, cands)}"
                )
        self.score(RankInputs.zeros(self.spec, 1, 1))


@dataclass(frozen=True, slots=True)
class LoadedModel:
    spec: ModelSpec
    encoder: OnnxItemEncoder
    ranker: OnnxRanker


def load_package(
    path: Path, *, variant: str = "auto", threads: int = 1, device: str = "auto"
) -> LoadedModel:
    """Load, check and warm up a model package; raises ModelContractError saying what is wrong."""
    spec, manifest = read_spec(path)
    encoder = OnnxItemEncoder(path / manifest["files"]["item_encoder"], spec, threads)
    ranker = OnnxRanker(path, spec, manifest, variant, threads, device)
    ranker.warm_up()
    return LoadedModel(spec, encoder, ranker)
