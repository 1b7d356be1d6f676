"""The shadow model of the ``liverank-shadow`` system: the serving package under another
version, announced as shadow on that worker's model-updates topic, so the worker ranks every
batch twice (what shadow scoring costs, with the shadow as expensive as the serving model)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import urllib.request
from pathlib import Path

from app.core.codec import SHADOW
from app.core.scoring.package import MANIFEST
from app.core.settings import Settings
from app.streams.model_publish import publish_model
from app.training.stamp import restamp

SHADOW_SUFFIX = "-shadow"


def restamped_copy(source: Path, destination: Path, version: str) -> Path:
    """A copy of the package at ``source`` whose manifest and ONNX files say ``version`` (the
    checksums updated as a packager would). Needs ``onnx`` (the dev extra)."""
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(source, destination)
    manifest = json.loads((destination / MANIFEST).read_text())
    manifest["version"] = version
    names = [manifest["files"]["item_encoder"], *manifest["files"]["ranker"].values()]
    for name in names:
        restamp(destination / name, version)
        manifest["sha256"][name] = hashlib.sha256((destination / name).read_bytes()).hexdigest()
    (destination / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return destination


def shadow_events(settings: Settings) -> dict[str, float] | None:
    """The worker's ``liverank_shadow_events_total`` by outcome (None when it does not
    answer), and ``loaded``: 1 while a shadow model is loaded."""
    url = f"http://{settings.http_host}:{settings.http_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback probe
            text = resp.read().decode()
    except OSError:
        return None
    found: dict[str, float] = {"loaded": 0.0}
    for line in text.splitlines():
        if line.startswith("liverank_shadow_events_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            found[outcome] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("liverank_shadow_model_info{") and line.endswith(" 1.0"):
            found["loaded"] = 1.0
    return found


def announce_shadow(settings: Settings, work_dir: Path, timeout_s: float = 120.0) -> str:
    """Announce a restamped copy of the serving package as the shadow and wait until the worker
    has loaded it; returns its version."""
    version = f"{_serving_version(settings.model_path)}{SHADOW_SUFFIX}"
    package = restamped_copy(settings.model_path, work_dir / "shadow-model", version)
    publish_model(settings, package, note="scripts/bench: the cost of shadow scoring", role=SHADOW)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = shadow_events(settings)
        if events is not None and events["loaded"]:
            return version
        time.sleep(0.25)
    raise RuntimeError(f"the shadow model {version} was not loaded within {timeout_s:g} s")


def _serving_version(package: Path) -> str:
    return str(json.loads((package / MANIFEST).read_text())["version"])
