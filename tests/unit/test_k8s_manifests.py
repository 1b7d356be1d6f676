"""The Kubernetes manifests render, validate offline and agree with the app."""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("kubernetes_validate", reason="the dev extra installs kubernetes-validate")
# No skip without a renderer: a machine without kubectl fails here (run scripts/k8s-tools) rather
# than passing these checks by not running them.

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (ROOT / "deploy" / "k8s" / "overlays").iterdir())


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("validate_k8s", ROOT / "deploy/validate_k8s.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


v = _load()


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: v.render(ROOT / "deploy/k8s/overlays" / name) for name in OVERLAYS}


def test_a_renderer_is_at_hand() -> None:
    try:
        v.renderer()
    except v.NoRendererError as exc:
        pytest.fail(str(exc))


def test_both_overlays_exist() -> None:
    assert OVERLAYS == ["cpu", "gpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_and_agrees_with_the_app(overlay: str) -> None:
    count, errors = v.check_overlay(ROOT / "deploy/k8s/overlays" / overlay)
    assert errors == []
    assert count >= 15


def test_gpu_overlay_asks_for_a_gpu(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def worker(name: str) -> dict[str, Any]:
        sts = next(o for o in rendered[name] if o["kind"] == "StatefulSet")
        return sts["spec"]["template"]["spec"]  # type: ignore[no-any-return]

    gpu, cpu = worker("gpu"), worker("cpu")
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
    assert gpu["containers"][0]["image"].endswith("-gpu")
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]
    assert v.settings_of(rendered["gpu"]).model_device == "cuda"


def _first(kind: str) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    return lambda objs: next(o for o in objs if o["kind"] == kind)


# Each breakage must be caught: the validator is only worth its green if it can go red.
BREAKAGES: dict[str, tuple[str, Callable[[dict[str, Any]], None], str]] = {
    "unknown StatefulSet field": (
        "StatefulSet",
        lambda o: o["spec"].update(replica=2),
        "'replica' was unexpected",
    ),
    "KEDA beyond the partitions": (
        "ScaledObject",
        lambda o: o["spec"].update(maxReplicaCount=8),
        "maxReplicaCount 8",
    ),
    "KEDA field of the wrong type": (
        "ScaledObject",
        lambda o: o["spec"].update(maxReplicaCount="4"),
        "not of type",
    ),
    "KafkaTopic typo": (
        "KafkaTopic",
        lambda o: o["spec"].update(partitons=4),
        "'partitons' was unexpected",
    ),
    "KafkaTopic partitions": ("KafkaTopic", lambda o: o["spec"].update(partitions=3), "app wants"),
    "ServiceMonitor typo": (
        "ServiceMonitor",
        lambda o: o["spec"]["endpoints"][0].update(intervall="1s"),
        "'intervall' was unexpected",
    ),
    "probe path the app does not serve": (
        "StatefulSet",
        lambda o: o["spec"]["template"]["spec"]["containers"][0]["readinessProbe"][
            "httpGet"
        ].update(path="/ready"),
        "readinessProbe",
    ),
    "unknown setting": (
        "ConfigMap",
        lambda o: o["data"].update(LIVERANK_PARTITION="4"),
        "unknown setting",
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_breakage_is_caught(case: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    kind, breaks, message = BREAKAGES[case]
    objs = copy.deepcopy(rendered["cpu"])
    breaks(_first(kind)(objs))
    try:
        errors = v.validate_schemas(objs, v.load_crd_schemas()) or v.cross_check(objs)
    except v.SettingsError as exc:
        errors = [str(exc)]
    assert any(message in e for e in errors), errors


def test_a_missing_topic_is_caught(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = [
        o
        for o in rendered["cpu"]
        if not (o["kind"] == "KafkaTopic" and o["metadata"]["name"] == "liverank.catalog.v1")
    ]
    assert any("liverank.catalog.v1" in e for e in v.cross_check(objs))


def test_the_migration_job_validates_and_matches_the_workers() -> None:
    count, errors = v.check_overlay(v.MIGRATE)
    assert errors == []
    objs = v.render(v.MIGRATE)
    job = next(o for o in objs if o["kind"] == "Job")
    sts = next(o for o in objs if o["kind"] == "StatefulSet")
    assert "replicas" not in sts["spec"]  # applying it never scales the paused workers up
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["partitions", "migrate", "--to"]
    assert container["envFrom"] == sts["spec"]["template"]["spec"]["containers"][0]["envFrom"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(args=["partitions", "migrate", "--to", "4"]), "is not more than"),
        (lambda c: c.update(args=["partitions", "migrate", "--to"]), "args should be"),
        (lambda c: c.update(image="liverank:other"), "is not the workers'"),
        (lambda c: c.update(envFrom=[]), "envFrom differs"),
        (lambda c: c.update(volumeMounts=c["volumeMounts"][:1]), "is not mounted"),
    ],
)
def test_a_broken_migration_job_is_caught(
    change: Callable[[dict[str, Any]], None], message: str
) -> None:
    objs = v.render(v.MIGRATE)
    job = next(o for o in objs if o["kind"] == "Job")
    change(job["spec"]["template"]["spec"]["containers"][0])
    errors = v.cross_check(objs)
    assert any(message in e for e in errors), errors
