"""Offline check of the Kubernetes manifests: render every overlay, validate, cross-check the app.

Run by ``scripts/validate-k8s`` and ``tests/unit/test_k8s_manifests.py``. No cluster, no network:
``kubectl kustomize`` renders (else ``kustomize build``; ``scripts/k8s-tools`` builds one into
``.tools/bin/`` where neither is installed); built-in kinds are validated against the JSON schemas
bundled in the ``kubernetes-validate`` package (strict: unknown fields are errors); custom
resources against the CRDs kept in ``deploy/schemas/``; then the manifests are checked against the
app itself (settings, topics, probe paths).
"""

from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, validate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.core.settings import Settings, SettingsError  # noqa: E402, F401 - path set first (run as a script)
from app.kafka.topics import topic_specs  # noqa: E402

OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
# The partition migration Job, rendered with the base it shares settings and Secrets with.
MIGRATE = ROOT / "deploy" / "k8s" / "migrate"
# Where scripts/k8s-tools builds kustomize when the machine has neither kubectl nor kustomize.
TOOLS_BIN = ROOT / ".tools" / "bin"
SCHEMAS = ROOT / "deploy" / "schemas"
# The oldest Kubernetes minor the manifests promise to work on (StatefulSet's
# persistentVolumeClaimRetentionPolicy is GA in 1.32).
KUBERNETES_VERSION = "1.32"
# What app/ops/health.py serves.
SERVED_PATHS = {"/healthz", "/livez", "/readyz", "/metrics"}

Obj = dict[str, Any]


class NoRendererError(RuntimeError):
    """Neither kubectl nor kustomize is at hand to render the overlays."""


def renderer() -> list[str]:
    """The command that renders an overlay (its folder goes last): ``kubectl kustomize`` when
    kubectl is on PATH, else ``kustomize build`` from ``.tools/bin/`` or PATH."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    tools = TOOLS_BIN / "kustomize"
    kustomize = str(tools) if tools.is_file() else shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build"]
    raise NoRendererError(
        "neither kubectl nor kustomize to render deploy/k8s: run scripts/k8s-tools "
        "(builds kustomize into .tools/bin/ with Go)"
    )


def render(overlay: Path, command: list[str] | None = None) -> list[Obj]:
    """Render an overlay offline (with ``command``, default ``renderer()``) and parse the stream
    of objects."""
    out = subprocess.run(  # noqa: S603 - no shell; the renderer's own path
        [*(command or renderer()), str(overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _structural_to_json_schema(node: Any) -> Any:
    """An openAPIV3Schema as JSON Schema, read the way the API server reads it.

    int-or-string, nullable and preserve-unknown-fields become JSON Schema; an object with
    declared properties takes no others (the API server prunes them; ``--validate=strict``
    rejects them, and so does this).
    """
    if isinstance(node, list):
        return [_structural_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: _structural_to_json_schema(v)
        for k, v in node.items()
        if not k.startswith("x-kubernetes-") and k != "nullable"
    }
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    # Descriptions are long and tell the validator nothing.
    out.pop("description", None)
    return out


def load_crd_schemas(root: Path = SCHEMAS) -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) -> JSON schema, for every served version of every CRD kept in ``root``."""
    schemas: dict[tuple[str, str], Obj] = {}
    for path in sorted(root.rglob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served", True):
                    continue
                schema = _structural_to_json_schema(version["schema"]["openAPIV3Schema"])
                # metadata is the API server's: checked as ObjectMeta, not by the CRD.
                schema["properties"]["metadata"] = {"type": "object"}
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def name_of(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')} ({obj.get('apiVersion')})"


def validate_schemas(objs: list[Obj], crds: dict[tuple[str, str], Obj]) -> list[str]:
    """Every object against its schema: the CRD's if it is a custom resource, else Kubernetes'."""
    errors = []
    for obj in objs:
        key = (obj.get("apiVersion", ""), obj.get("kind", ""))
        if key in crds:
            validator = jsonschema.Draft7Validator(crds[key])
            errors += [
                f"{name_of(obj)}: {e.json_path}: {e.message}" for e in validator.iter_errors(obj)
            ]
            continue
        try:
            validate(copy.deepcopy(obj), KUBERNETES_VERSION, strict=True)
        except SchemaNotFoundError:
            errors.append(f"{name_of(obj)}: no schema (neither Kubernetes nor deploy/schemas/)")
        except ValidationError as e:
            errors.append(f"{name_of(obj)}: {e.json_path}: {e.message}")
    return errors


def _one(objs: list[Obj], kind: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}, found {len(found)}")
    return found[0]


def settings_of(objs: list[Obj]) -> Settings:
    """The worker's settings as the pod will see them, through ``Settings.from_env`` (an unknown
    ``LIVERANK_*`` name or a bad value is an error there too): the ConfigMap, then the container's
    own ``env``, where a value taken from a Secret stands as a placeholder."""
    environ = dict(_one(objs, "ConfigMap")["data"])
    container = _one(objs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    for var in container.get("env", []):
        environ[var["name"]] = var.get("value", "<from a Secret>")
    return Settings.from_env(environ)


def _cpu_limit(container: Obj) -> int | None:
    """Whole CPUs of the container's limit ("2", "2500m"), at least 1; None without a limit."""
    raw = str(container.get("resources", {}).get("limits", {}).get("cpu", "") or "")
    if not raw:
        return None
    cpus = float(raw[:-1]) / 1000 if raw.endswith("m") else float(raw)
    return max(1, int(cpus))


def cross_check(objs: list[Obj]) -> list[str]:
    """The manifests against the app: settings, topics, consumer group, probes, ports."""
    errors: list[str] = []
    settings = settings_of(objs)
    sts = _one(objs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "worker")

    # Every topic the app uses has a KafkaTopic with its partitions and configs.
    topics = {
        o["spec"].get("topicName", o["metadata"]["name"]): o["spec"]
        for o in objs
        if o["kind"] == "KafkaTopic"
    }
    for spec in topic_specs(settings):
        kt = topics.get(spec.name)
        if kt is None:
            errors.append(f"topic {spec.name} ({spec.role}) has no KafkaTopic")
            continue
        if kt.get("partitions") != spec.partitions:
            errors.append(
                f"KafkaTopic {spec.name}: {kt.get('partitions')} partitions, app wants "
                f"{spec.partitions}"
            )
        if (kt.get("replicas") or 0) < settings.replication_factor:
            errors.append(f"KafkaTopic {spec.name}: fewer replicas than REPLICATION_FACTOR")
        config = {k: str(v) for k, v in (kt.get("config") or {}).items()}
        for key, want in spec.config.items():
            if config.get(key) != want:
                errors.append(f"KafkaTopic {spec.name}: {key}={config.get(key)!r}, want {want!r}")
        if config.get("cleanup.policy", "delete") != spec.config.get("cleanup.policy", "delete"):
            errors.append(f"KafkaTopic {spec.name}: cleanup.policy differs from the app's")
    extra = set(topics) - {s.name for s in topic_specs(settings)}
    errors += [f"KafkaTopic {t} is not a topic the app uses" for t in sorted(extra)]

    # Autoscaling: lag of the app's consumer group on the events topic, never more workers than
    # events partitions.
    for so in (o for o in objs if o["kind"] == "ScaledObject"):
        target = so["spec"]["scaleTargetRef"]
        if (target.get("kind"), target["name"]) != ("StatefulSet", sts["metadata"]["name"]):
            errors.append("ScaledObject does not scale the worker StatefulSet")
        # Each pod runs PROCESSES consumer-group members (0: one per CPU of its limit).
        per_pod = settings.processes or _cpu_limit(container)
        if per_pod is None:
            errors.append("LIVERANK_PROCESSES=0 needs a CPU limit on the worker container")
            per_pod = 1
        if so["spec"].get("maxReplicaCount", 100) * per_pod > settings.partitions:
            errors.append(
                f"ScaledObject maxReplicaCount {so['spec'].get('maxReplicaCount')} x "
                f"{per_pod} processes per pod > events partitions {settings.partitions}"
            )
        for trigger in so["spec"]["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] != "kafka":
                continue
            if meta.get("consumerGroup") != settings.app_id:
                errors.append(f"KEDA consumerGroup {meta.get('consumerGroup')} != APP_ID")
            if meta.get("topic") != settings.topic_events:
                errors.append(f"KEDA topic {meta.get('topic')} != TOPIC_EVENTS")
            if meta.get("bootstrapServers") != settings.bootstrap_servers:
                errors.append("KEDA bootstrapServers differ from BOOTSTRAP_SERVERS")

    # Probes hit paths the app serves, on its HTTP port, which listens beyond loopback.
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    for probe_name, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe_name, {}).get("httpGet")
        if get is None or get["path"] != want or get["path"] not in SERVED_PATHS:
            errors.append(f"{probe_name} should GET {want}")
            continue
        port = ports.get(get["port"], get["port"])
        if port != settings.http_port:
            errors.append(f"{probe_name} port {port} != HTTP_PORT {settings.http_port}")
    if settings.http_host in ("127.0.0.1", "localhost", "::1"):
        errors.append("HTTP_HOST is loopback: probes and scrapes cannot reach it")

    # State on the per-pod volume; the password from a mounted Secret file.
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    if mounts.get(str(settings.data_dir)) not in claims:
        errors.append(f"DATA_DIR {settings.data_dir} is not on a volumeClaimTemplate")
    if settings.sasl_password.get():
        errors.append("LIVERANK_SASL_PASSWORD in a ConfigMap: use SASL_PASSWORD_FILE")
    if settings.uses_sasl:
        secret_dirs = {
            path: name
            for path, name in mounts.items()
            if any(v["name"] == name and "secret" in v for v in pod.get("volumes", []))
        }
        if str(Path(settings.sasl_password_file).parent) not in secret_dirs:
            errors.append("SASL_PASSWORD_FILE is not in a mounted Secret")
    if pod.get("terminationGracePeriodSeconds", 30) < 2 * settings.commit_interval_s + 30:
        errors.append("terminationGracePeriodSeconds too short to flush, commit and leave")
    for job in (o for o in objs if o["kind"] == "Job"):
        errors += _job_errors(job, container, settings)
    return errors


def _job_errors(job: Obj, worker: Obj, settings: Settings) -> list[str]:
    """A one-off Job (the partition migration) runs the workers' image with their settings,
    credentials and CA, and asks for more partitions than the settings have."""
    name = f"Job/{job['metadata']['name']}"
    errors = []
    (container,) = job["spec"]["template"]["spec"]["containers"]
    if container["image"] != worker["image"]:
        errors.append(f"{name}: image {container['image']} is not the workers' {worker['image']}")
    for field in ("envFrom", "env"):
        if container.get(field) != worker.get(field):
            errors.append(f"{name}: {field} differs from the workers'")
    worker_mounts = {m["mountPath"] for m in worker.get("volumeMounts", [])}
    for mount in container.get("volumeMounts", []):
        if mount["mountPath"] not in worker_mounts:
            errors.append(f"{name}: mounts {mount['mountPath']}, which the workers do not")
    for path in (settings.sasl_password_file, settings.ssl_ca_file):
        if path and not any(
            str(Path(path).parent) == m["mountPath"] for m in container.get("volumeMounts", [])
        ):
            errors.append(f"{name}: {path} is not mounted")
    args = container.get("args", [])
    if args[:3] != ["partitions", "migrate", "--to"] or not args[3:4] or not args[3].isdigit():
        errors.append(f"{name}: args should be partitions migrate --to M, not {args}")
    elif int(args[3]) <= settings.partitions:
        errors.append(
            f"{name}: --to {args[3]} is not more than LIVERANK_PARTITIONS={settings.partitions}"
        )
    return errors


def check_overlay(overlay: Path) -> tuple[int, list[str]]:
    objs = render(overlay)
    errors = validate_schemas(objs, load_crd_schemas())
    # The cross-checks read fields whose types the schemas vouch for.
    return len(objs), errors or cross_check(objs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("overlays", nargs="*", type=Path, help="default: every overlay")
    args = parser.parse_args(argv)
    overlays = args.overlays or [*sorted(p for p in OVERLAYS.iterdir() if p.is_dir()), MIGRATE]
    failed = False
    for overlay in overlays:
        count, errors = check_overlay(overlay)
        status = "ok" if not errors else f"{len(errors)} error(s)"
        shown = overlay.relative_to(ROOT) if overlay.is_absolute() else overlay
        print(f"{shown}: {count} objects, {status}")
        for error in errors:
            print(f"  {error}")
        failed = failed or bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
