"""Write the hand-set "prior" ranking model to ONNX, following the contract in README.md.

It is a two-layer network whose weights encode plain ranking sense (query matches first on a
search, then category and tag affinity, similarity to recent items, popularity; items just seen
are pushed down). It is the default until a trained model replaces it. Needs the `onnx` package
(extra `dev` or `train`); the worker itself only needs onnxruntime.

    .venv/bin/python scripts/make_prior_model.py models/default/model.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.features import CANDIDATE_FEATURES, USER_FEATURES
from app.scoring.onnx import (
    CONTRACT_VERSION,
    INPUT_CANDIDATES,
    INPUT_USER,
    META_CANDIDATES,
    META_CONTRACT,
    META_USER,
    META_VERSION,
    OUTPUT_SCORES,
)

MODEL_VERSION = "prior-2"
HIDDEN = 8


def weights() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    c = {name: i for i, name in enumerate(CANDIDATE_FEATURES)}
    u = {name: i for i, name in enumerate(USER_FEATURES)}
    w_cand = np.zeros((len(CANDIDATE_FEATURES), HIDDEN), dtype=np.float32)
    w_user = np.zeros((len(USER_FEATURES), HIDDEN), dtype=np.float32)
    bias = np.zeros(HIDDEN, dtype=np.float32)
    w_cand[c["similarity"], 0] = 1.0
    w_cand[c["category_affinity"], 1] = 1.0
    w_cand[c["tag_affinity"], 2] = 1.0
    w_cand[c["query_match"], 3] = 1.0
    # Unit 4 fires only when the event is a search AND the item matches the query.
    w_cand[c["query_match"], 4] = 1.0
    w_user[u["is_search"], 4] = 1.0
    bias[4] = -1.0
    w_cand[c["popularity"], 5] = 1.0
    w_cand[c["seen"], 6] = 1.0
    w_cand[c["similarity"], 7] = -1.0
    w_out = np.array([[1.5], [2.0], [1.0], [1.0], [4.0], [0.6], [-0.8], [-0.5]], dtype=np.float32)
    # Temperature and offset keep the sigmoid out of saturation, so scores stay readable.
    return w_cand, w_user, bias, w_out * np.float32(0.35)


OUTPUT_BIAS = -1.0


def build() -> onnx.ModelProto:
    w_cand, w_user, bias, w_out = weights()
    inits = [
        numpy_helper.from_array(w_cand, "w_cand"),
        numpy_helper.from_array(w_user, "w_user"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(w_out, "w_out"),
        numpy_helper.from_array(np.array([OUTPUT_BIAS], dtype=np.float32), "b_out"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
    ]
    nodes = [
        helper.make_node("MatMul", [INPUT_CANDIDATES, "w_cand"], ["cand_h"]),  # [B,C,H]
        helper.make_node("MatMul", [INPUT_USER, "w_user"], ["user_h"]),  # [B,H]: once per event
        helper.make_node("Unsqueeze", ["user_h", "axis1"], ["user_h3"]),  # [B,1,H]
        helper.make_node("Add", ["cand_h", "user_h3"], ["pre0"]),
        helper.make_node("Add", ["pre0", "bias"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "w_out"], ["logit3"]),  # [B,C,1]
        helper.make_node("Squeeze", ["logit3", "axis2"], ["logit0"]),
        helper.make_node("Add", ["logit0", "b_out"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], [OUTPUT_SCORES]),
    ]
    graph = helper.make_graph(
        nodes,
        "liverank_prior",
        [
            helper.make_tensor_value_info(
                INPUT_USER, TensorProto.FLOAT, ["batch", len(USER_FEATURES)]
            ),
            helper.make_tensor_value_info(
                INPUT_CANDIDATES,
                TensorProto.FLOAT,
                ["batch", "candidates", len(CANDIDATE_FEATURES)],
            ),
        ],
        [helper.make_tensor_value_info(OUTPUT_SCORES, TensorProto.FLOAT, ["batch", "candidates"])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.producer_name = "liverank/scripts/make_prior_model.py"
    helper.set_model_props(
        model,
        {
            META_CONTRACT: CONTRACT_VERSION,
            META_VERSION: MODEL_VERSION,
            META_USER: ",".join(USER_FEATURES),
            META_CANDIDATES: ",".join(CANDIDATE_FEATURES),
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, nargs="?", default=Path("models/default/model.onnx"))
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build(), args.output)
    print(f"wrote {args.output} (model_version {MODEL_VERSION})")


if __name__ == "__main__":
    main()
