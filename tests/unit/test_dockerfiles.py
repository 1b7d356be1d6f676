"""The Dockerfiles, checked offline: user, entrypoint, settings, build context, onnxruntime, bases.

No Docker engine builds them here or in CI, so each property a build or a pod would find out is
read from the parsed Dockerfile (the official Go parser, via ``dockerfile``) and checked against
the app, ``pyproject.toml``, ``.dockerignore`` and the StatefulSet. Every check returns its
problems as sentences, and the tests at the bottom feed the same checks broken Dockerfiles.
"""

from __future__ import annotations

import contextlib
import functools
import io
import itertools
import posixpath
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import dockerfile
import pytest
import yaml
from docker.utils.build import exclude_paths
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from app.cli import _parser
from app.core.scoring.base import ModelContractError
from app.core.scoring.package import read_spec
from app.core.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")
STATEFULSET = ROOT / "deploy" / "k8s" / "base" / "statefulset.yaml"
ORT_CPU, ORT_GPU = "onnxruntime", "onnxruntime-gpu"
# Which onnxruntime build each image must end up with, alone.
ORT_WANTED = {"Dockerfile": ORT_CPU, "Dockerfile.gpu": ORT_GPU}


# --- the parsed Dockerfile -------------------------------------------------------------------

_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand(word: str, scope: Mapping[str, str]) -> str:
    """A Dockerfile word with its quotes removed and known ``$VAR``s substituted.

    Unknown variables (``$PATH`` from the base image) are left as written.

    >>> expand('"/opt/venv/bin:$PATH"', {})
    '/opt/venv/bin:$PATH'
    """
    if len(word) >= 2 and word[0] == word[-1] == "'":
        return word[1:-1]
    if len(word) >= 2 and word[0] == word[-1] == '"':
        word = word[1:-1]
    return _VAR.sub(lambda m: scope.get(m[1] or m[2], m[0]), word)


@dataclass(frozen=True)
class Step:
    """One instruction with the working directory and variables in effect where it runs."""

    command: Any  # dockerfile.Command (the library ships no types)
    workdir: str
    scope: Mapping[str, str]

    @property
    def cmd(self) -> str:
        return str(self.command.cmd)

    def flag(self, name: str) -> str | None:
        for flag in self.command.flags:
            key, _, value = str(flag).partition("=")
            if key == f"--{name}":
                return value
        return None

    def words(self) -> list[str]:
        if self.command.json:  # exec form: Docker substitutes no variables
            return [str(w) for w in self.command.value]
        return [expand(str(w), self.scope) for w in self.command.value]

    def pairs(self) -> dict[str, str]:
        """ENV's variables (both ``ENV k=v ...`` and ``ENV k v`` parse to key, value pairs)."""
        words = self.words()
        return dict(zip(words[::2], words[1::2], strict=True))


@dataclass(frozen=True)
class Stage:
    """One FROM and the instructions up to the next."""

    name: str | None
    base: str
    parent: Stage | None  # the earlier stage this one is built FROM, if any
    commands: tuple[Any, ...]


@dataclass(frozen=True)
class Image:
    """A parsed Dockerfile; the image it builds is its last stage."""

    path: Path
    stages: tuple[Stage, ...]
    global_args: Mapping[str, str] = field(default_factory=dict)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name.lower()), None)

    def chain(self, stage: Stage | None = None) -> list[Stage]:
        """The stage and the stages it is built FROM, oldest first."""
        stages: list[Stage] = []
        current: Stage | None = stage or self.final
        while current is not None:
            stages.insert(0, current)
            current = current.parent
        return stages

    def steps(self, stage: Stage | None = None) -> Iterator[Step]:
        workdir = "/"
        env: dict[str, str] = {}
        args: dict[str, str] = {}
        for s in self.chain(stage):
            for command in s.commands:
                scope = {**args, **env}
                step = Step(command, workdir, scope)
                yield step
                if step.cmd == "ENV":
                    env |= step.pairs()
                elif step.cmd == "ARG":
                    for word in command.value:
                        key, _, default = str(word).partition("=")
                        args[key] = (
                            expand(default, scope) if default else self.global_args.get(key, "")
                        )
                elif step.cmd == "WORKDIR":
                    workdir = posixpath.join(workdir, step.words()[0])

    def last(self, cmd: str, stage: Stage | None = None) -> Step | None:
        found = [s for s in self.steps(stage) if s.cmd == cmd]
        return found[-1] if found else None

    def env(self, stage: Stage | None = None) -> dict[str, str]:
        env: dict[str, str] = {}
        for step in self.steps(stage):
            if step.cmd == "ENV":
                env |= step.pairs()
        return env

    def exposed(self) -> set[int]:
        ports = set()
        for step in self.steps():
            if step.cmd == "EXPOSE":
                ports |= {int(w.split("/")[0]) for w in step.words()}
        return ports

    def copies(self, stage: Stage | None = None) -> list[Step]:
        """COPY and ADD from the build context (not ``--from`` another stage or image)."""
        return [
            s
            for s in self.steps(stage)
            if s.cmd in ("COPY", "ADD") and s.flag("from") is None and not s.command.heredocs
        ]


def parse(path: Path) -> Image:
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    current: tuple[str | None, str, Stage | None] | None = None
    commands: list[Any] = []
    for command in dockerfile.parse_file(str(path)):
        if command.cmd == "FROM":
            if current is not None:
                stages.append(Stage(*current, commands=tuple(commands)))
            words = [str(w) for w in command.value]
            base = expand(words[0], global_args)
            name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
            parent = next((s for s in stages if s.name == base.lower()), None)
            current, commands = (name, base, parent), []
        elif current is None:
            if command.cmd == "ARG":
                for word in command.value:
                    key, _, default = str(word).partition("=")
                    global_args[key] = default
        else:
            commands.append(command)
    assert current is not None, f"{path}: no FROM"
    stages.append(Stage(*current, commands=tuple(commands)))
    return Image(path, tuple(stages), global_args)


# --- what the image is checked against -------------------------------------------------------


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@functools.cache
def worker_container() -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, worker container) of the base StatefulSet."""
    sts = yaml.safe_load(STATEFULSET.read_text(encoding="utf-8"))
    pod = sts["spec"]["template"]["spec"]
    return pod, next(c for c in pod["containers"] if c["name"] == "worker")


def ignore_patterns(dockerfile_path: Path, root: Path = ROOT) -> list[str]:
    """The .dockerignore patterns a build of this Dockerfile uses.

    BuildKit prefers ``<Dockerfile>.dockerignore`` beside the Dockerfile, then the context's.
    Comments and blank lines are dropped, as the Docker SDK and the engine do.
    """
    own = dockerfile_path.with_name(dockerfile_path.name + ".dockerignore")
    file = own if own.is_file() else root / ".dockerignore"
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


@functools.cache
def _context(root: Path, patterns: tuple[str, ...], dockerfile_name: str) -> frozenset[str]:
    # The Docker SDK's port of the engine's .dockerignore matcher (Go filepath.Match with **,
    # ! exceptions, last match wins), and the file walk `docker build` sends.
    return frozenset(exclude_paths(str(root), list(patterns), dockerfile=dockerfile_name))


def build_context(patterns: list[str], root: Path = ROOT, name: str = "Dockerfile") -> set[str]:
    """Paths (relative, '/'-separated) that a build sends to the builder."""
    return set(_context(root, tuple(patterns), name))


@functools.cache
def tracked_files() -> tuple[str, ...]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.decode()
    return tuple(p for p in out.split("\0") if p and (ROOT / p).is_file())


def tracked_under(rel: str) -> list[str]:
    return [p for p in tracked_files() if p == rel or p.startswith(rel.rstrip("/") + "/")]


def _python(word: str) -> bool:
    return re.fullmatch(r"python(3(\.\d+)?)?", PurePosixPath(word).name) is not None


def _shell_commands(step: Step) -> list[list[str]]:
    """The simple commands of a RUN, split on && || ; | and newlines (good enough for pip)."""
    if step.command.json:
        return [step.words()]
    commands = []
    for segment in re.split(r"&&|\|\||;|\||\n", str(step.command.value[0])):
        lexer = shlex.shlex(segment, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        try:
            words = list(lexer)
        except ValueError:
            words = segment.split()
        # An unquoted > or < is a redirection: `pip install x>=1` installs x and writes "=1".
        argv = list(itertools.takewhile(lambda w: not set(w) <= set("<>&|();"), words))
        if argv:
            commands.append([expand(w, step.scope) if "$" in w else w for w in argv])
    return commands


def venvs(image: Image, stage: Stage | None = None) -> dict[str, Stage]:
    """Virtual environments in the stage's filesystem: path -> the stage whose base made it."""
    found: dict[str, Stage] = {}
    for s in image.chain(stage):
        for command in s.commands:
            step = Step(command, "/", {})
            if step.cmd == "RUN":
                for argv in _shell_commands(step):
                    # python -m venv [options] DIR
                    for i in range(1, len(argv) - 2):
                        if _python(argv[i - 1]) and argv[i : i + 2] == ["-m", "venv"]:
                            dirs = [w for w in argv[i + 2 :] if not w.startswith("-")]
                            found |= {d: image.chain(s)[0] for d in dirs}
    for step in image.steps(stage):
        source = step.flag("from")
        if step.cmd == "COPY" and source and (other := image.stage(source)) is not None:
            *sources, dest = step.words()
            for src in sources:
                if src in (made := venvs(image, other)):
                    found[dest] = made[src]
    return found


# --- the checks: each returns its problems ---------------------------------------------------


def check_user(image: Image) -> list[str]:
    step = image.last("USER")
    if step is None:
        return ["no USER: the image runs as the base image's user (root)"]
    user = step.words()[0]
    uid, _, gid = user.partition(":")
    problems = []
    # The kubelet can only enforce runAsNonRoot against a numeric USER; a name it cannot check.
    if not uid.isdigit():
        problems.append(f"USER {user}: not a numeric uid")
    elif int(uid) == 0:
        problems.append(f"USER {user}: root")
    if gid and not gid.isdigit():
        problems.append(f"USER {user}: not a numeric gid")
    pod, container = worker_container()
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    if uid.isdigit() and context.get("runAsUser") != int(uid):
        problems.append(
            f"USER {user}, but the StatefulSet's runAsUser is {context.get('runAsUser')}"
        )
    if gid.isdigit() and context.get("runAsGroup", int(gid)) != int(gid):
        problems.append(f"USER {user}, but the StatefulSet's runAsGroup is {context['runAsGroup']}")
    return problems


def _parses_to_worker(argv: list[str]) -> bool:
    # app.cli's own parser, so a renamed or removed subcommand fails here.
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = _parser().parse_args(argv)
    except SystemExit:
        return False
    return bool(args.command == "worker")


def check_entrypoint(image: Image) -> list[str]:
    entrypoint, cmd = image.last("ENTRYPOINT"), image.last("CMD")
    if entrypoint is None:
        return ["no ENTRYPOINT: the StatefulSet's args would replace the whole command"]
    problems = [
        f"{step.cmd} in shell form: /bin/sh -c wraps it, and SIGTERM may stop at the shell"
        for step in (entrypoint, cmd)
        if step is not None and not step.command.json
    ]
    if problems:
        return problems
    argv = entrypoint.words() + (cmd.words() if cmd else [])
    if len(argv) < 3 or not _python(argv[0]) or argv[1:3] != ["-m", "app"]:
        return [f"the command is {argv}, not python -m app ..."]
    if not argv[0].startswith("/"):
        path = image.env().get("PATH", "").split(":")[0]
        if posixpath.dirname(path) not in venvs(image) or posixpath.basename(path) != "bin":
            problems.append(f"{argv[0]} is found on PATH {path!r}, not in the image's venv")
    if not _parses_to_worker(argv[3:]):
        problems.append(f"{argv[3:]} is not app.cli's worker command")
    _, container = worker_container()
    if "command" in container:
        problems.append("the StatefulSet's command replaces the ENTRYPOINT")
    elif not _parses_to_worker(container.get("args", argv[3:])):
        problems.append(f"the StatefulSet runs {argv[:3] + container['args']}")
    return problems


def _settings(image: Image) -> Settings:
    env = {k: v for k, v in image.env().items() if k.startswith("LIVERANK_")}
    return Settings.from_env(env)


def check_settings(image: Image) -> list[str]:
    try:
        settings = _settings(image)
    except SettingsError as exc:
        return [f"ENV: {exc}"]
    problems = []
    if settings.http_port not in image.exposed():
        problems.append(f"LIVERANK_HTTP_PORT={settings.http_port}, EXPOSE {image.exposed()}")
    _, container = worker_container()
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if ports.get("http") != settings.http_port:
        problems.append(f"LIVERANK_HTTP_PORT={settings.http_port}, containerPort {ports}")
    # Probes and the Prometheus scrape come from outside the pod's loopback.
    if settings.http_host.startswith("127.") or settings.http_host in ("localhost", "::1"):
        problems.append(f"LIVERANK_HTTP_HOST={settings.http_host}: unreachable from the kubelet")
    # The root filesystem is read-only in the pod: RocksDB must write to the data volume.
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    if str(settings.data_dir) != mounts.get("data"):
        problems.append(f"LIVERANK_DATA_DIR={settings.data_dir}, data volume at {mounts}")
    return problems


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def check_model(image: Image, patterns: list[str]) -> list[str]:
    try:
        settings = _settings(image)
    except SettingsError as exc:
        return [f"ENV: {exc}"]
    workdir = image.last("WORKDIR")
    cwd = posixpath.join(workdir.workdir, workdir.words()[0]) if workdir else "/"
    model = posixpath.normpath(posixpath.join(cwd, str(settings.model_path)))
    package: Path | None = None
    for step in image.copies():
        *sources, dest = step.words()
        dest = posixpath.normpath(posixpath.join(step.workdir, dest))
        for src in sources:
            if (ROOT / src).is_dir() and PurePosixPath(model).is_relative_to(dest):
                package = ROOT / src / PurePosixPath(model).relative_to(dest)
    if package is None:
        return [f"LIVERANK_MODEL_PATH={model} is not under anything COPY puts in the image"]
    try:
        _, manifest = read_spec(package)
    except ModelContractError as exc:
        return [f"LIVERANK_MODEL_PATH={model} (from {package.relative_to(ROOT)}): {exc}"]
    context = build_context(patterns, name=image.path.name)
    rel = package.relative_to(ROOT).as_posix()
    names = {"manifest.json", *manifest.get("sha256", {}), *_strings(manifest.get("files", {}))}
    names |= {PurePosixPath(p).relative_to(rel).as_posix() for p in tracked_under(rel)}
    left_out = sorted(n for n in names if f"{rel}/{n}" not in context)
    return [f"{rel}/{n} is excluded by .dockerignore" for n in left_out]


def check_copy_sources(image: Image, patterns: list[str]) -> list[str]:
    context = build_context(patterns, name=image.path.name)
    problems = []
    for stage in image.stages:
        for step in image.copies(stage):
            for src in step.words()[:-1]:
                if step.cmd == "ADD" and re.match(r"\w+://|git@", src):
                    continue  # ADD of a URL: not from the context
                rel = posixpath.normpath(src).lstrip("/")
                if rel == ".":
                    continue
                if any(c in rel for c in "*?["):
                    if not [p for p in ROOT.glob(rel) if p.relative_to(ROOT).as_posix() in context]:
                        problems.append(f"{step.cmd} {src}: matches nothing in the build context")
                    continue
                if not (ROOT / rel).exists():
                    problems.append(f"{step.cmd} {src}: no such file or folder in the repo")
                elif rel not in context:
                    problems.append(f"{step.cmd} {src}: excluded by .dockerignore")
                else:
                    missing = [p for p in tracked_under(rel) if p not in context]
                    if missing:
                        problems.append(f"{step.cmd} {src}: .dockerignore drops {missing[:5]}")
    return problems


# Local state, caches and build output: never in a build context, let alone an image.
LOCAL_STATE = (
    ".venv/bin/python",
    ".git/HEAD",
    ".kafka/bin/kafka-server-start.sh",
    ".liverank-data/liverank/v1/tables/CURRENT",
    ".mypy_cache/3.11/app/cli.data.json",
    ".pytest_cache/v/cache/lastfailed",
    ".ruff_cache/0.5.0/123456",
    ".tools/kubectl",
    "app/__pycache__/cli.cpython-311.pyc",
    "app/core/scoring/__pycache__/onnx.cpython-311.pyc",
    "models/seqrank-1/__pycache__/x.cpython-311.pyc",
    "app/stale.pyc",
    "build/lib/app/cli.py",
    "dist/liverank-0.1.0-py3-none-any.whl",
    "liverank.egg-info/PKG-INFO",
    "out/bench.json",
)
# ... and what the images are built from, so that an ignore-everything file cannot pass.
IMAGE_SOURCES = ("pyproject.toml", "README.md", "app/cli.py", "models/seqrank-1/manifest.json")


def check_ignore_keeps_out(patterns: list[str], tree: Path) -> list[str]:
    """Lay out LOCAL_STATE and IMAGE_SOURCES under ``tree`` and see what a build would send."""
    for rel in LOCAL_STATE + IMAGE_SOURCES:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).touch()
    context = build_context(patterns, root=tree)

    def prefixes(rel: str) -> list[str]:
        parts = PurePosixPath(rel).parts
        return ["/".join(parts[: i + 1]) for i in range(len(parts))]

    # Folders that hold image sources go in; nothing else on the way to local state may.
    keep = {p for rel in IMAGE_SOURCES for p in prefixes(rel)} | {"app/core", "app/core/scoring"}
    problems = []
    for rel in LOCAL_STATE:
        leaked = [p for p in prefixes(rel) if p in context and p not in keep]
        if leaked:
            problems.append(f"{leaked[0]} goes into the build context")
    problems += [f"{rel} is left out" for rel in IMAGE_SOURCES if rel not in context]
    return problems


@dataclass
class Ort:
    """The onnxruntime distributions in an environment, and whose files its module holds.

    onnxruntime and onnxruntime-gpu both install the ``onnxruntime`` package folder. With both
    installed, the one written last wins file by file ("mixed"); uninstalling either then deletes
    the shared files the other needs ("broken").
    """

    installed: set[str] = field(default_factory=set)
    module: str | None = None  # a distribution name, "mixed", "broken" or None (no module)

    def write(self, dists: set[str]) -> None:
        if dists:
            self.installed |= dists
            only = len(dists) == 1 and self.installed == dists
            self.module = next(iter(dists)) if only else "mixed"

    def remove(self, dists: set[str]) -> None:
        if dists & self.installed:
            self.installed -= dists
            self.module = "broken" if self.installed else None


_PIP_VALUE_OPTIONS = {
    "-i", "--index-url", "--extra-index-url", "-f", "--find-links", "-t", "--target", "--prefix",
    "--root", "--src", "--upgrade-strategy", "--platform", "--python-version", "--abi",
    "--implementation", "--only-binary", "--no-binary", "--progress-bar", "--report", "--log",
    "--cache-dir", "--trusted-host", "-C", "--config-settings",
}  # fmt: skip


@dataclass(frozen=True)
class PipCall:
    action: str  # install or uninstall
    requirements: tuple[str, ...]
    flags: frozenset[str]


def pip_calls(step: Step) -> Iterator[PipCall]:
    """pip install and uninstall commands in a RUN, in order."""
    for argv in _shell_commands(step):
        for i, word in enumerate(argv):
            if re.fullmatch(r"pip(3(\.\d+)?)?", PurePosixPath(word).name):
                rest = argv[i + 1 :]
            elif word == "-m" and 0 < i < len(argv) - 1 and argv[i + 1] == "pip":
                rest = argv[i + 2 :]
            else:
                continue
            if rest and rest[0] in ("install", "uninstall"):
                reqs, flags, skip = [], set(), False
                for arg in rest[1:]:
                    if skip:
                        skip = False
                    elif arg in ("-r", "--requirement", "-c", "--constraint"):
                        raise ValueError(f"{step.command.original!r}: requirement files unread")
                    elif arg in ("-e", "--editable"):
                        continue
                    elif arg in _PIP_VALUE_OPTIONS:
                        skip = True
                    elif arg.startswith("-"):
                        flags.add(arg.split("=")[0])
                    else:
                        reqs.append(arg)
                yield PipCall(rest[0], tuple(reqs), frozenset(flags))
            break


_LOCAL = re.compile(r"[./~][^\[]*(?:\[(?P<extras>.*)\])?")


def _extras(requirement: str) -> set[str] | None:
    """The extras of a local project requirement (``.[gpu]``); None if it is not local."""
    local = _LOCAL.fullmatch(requirement)
    if local is None:
        return None
    return {e.strip() for e in (local["extras"] or "").split(",") if e.strip()}


def _dists(requirement: str, deps: bool) -> set[str]:
    """The onnxruntime distributions one pip requirement brings in.

    A local path is this project: its dependencies and the extras named (unless --no-deps).
    """
    extras = _extras(requirement)
    if extras is None:
        names = {canonicalize_name(Requirement(requirement).name)}
    elif not deps:
        return set()
    else:
        project = pyproject()["project"]
        specs = list(project["dependencies"])
        for extra in extras:
            specs += project["optional-dependencies"][extra]
        names = {canonicalize_name(Requirement(s).name) for s in specs}
    return {str(n) for n in names} & {ORT_CPU, ORT_GPU}


def onnxruntime_in(image: Image, stage: Stage | None = None) -> Ort:
    """Follow pip through the stage (and what it COPYs from other stages)."""
    ort = Ort()
    for step in image.steps(stage):
        source = step.flag("from")
        if step.cmd == "COPY" and source and (other := image.stage(source)) is not None:
            # A venv or site-packages copied from a build stage brings its onnxruntime along.
            made = venvs(image, other)
            if any(src in made or "site-packages" in src for src in step.words()[:-1]):
                copied = onnxruntime_in(image, other)
                if copied.installed and ort.installed:
                    ort.installed |= copied.installed
                    ort.module = "mixed"
                elif copied.installed:
                    ort = Ort(set(copied.installed), copied.module)
            continue
        if step.cmd != "RUN":
            continue
        for call in pip_calls(step):
            deps = "--no-deps" not in call.flags
            brought = set().union(*(_dists(r, deps) for r in call.requirements))
            if call.action == "uninstall":
                ort.remove({canonicalize_name(r) for r in call.requirements})
            elif {"--force-reinstall", "-I", "--ignore-installed"} & call.flags:
                ort.write(brought)
            else:
                ort.write(brought - ort.installed)
    return ort


def check_onnxruntime(image: Image, wanted: str) -> list[str]:
    try:
        ort = onnxruntime_in(image)
    except ValueError as exc:
        return [str(exc)]
    if ort.installed == {wanted} and ort.module == wanted:
        return []
    return [
        f"the image ends with {sorted(ort.installed) or 'no onnxruntime'} installed and the "
        f"onnxruntime module from {ort.module}; it needs {wanted} alone"
    ]


def check_gpu_requirement(image: Image) -> list[str]:
    """onnxruntime-gpu is installed as the ``gpu`` extra asks, so the two cannot drift."""
    gpu = [Requirement(r) for r in pyproject()["project"]["optional-dependencies"]["gpu"]]
    extra = next(r for r in gpu if canonicalize_name(r.name) == ORT_GPU)
    for step in image.steps():
        if step.cmd != "RUN":
            continue
        for call in pip_calls(step):
            for requirement in call.requirements if call.action == "install" else ():
                extras = _extras(requirement)
                if extras is not None and "gpu" in extras:
                    return []
                if extras is None and canonicalize_name(Requirement(requirement).name) == ORT_GPU:
                    if Requirement(requirement).specifier == extra.specifier:
                        return []
                    return [f"installs {requirement}; the gpu extra says {extra}"]
    return ["onnxruntime-gpu is never installed"]


def check_base_images(image: Image) -> list[str]:
    problems = []
    for stage in image.stages:
        base = stage.base
        if stage.parent is not None or base == "scratch":
            continue
        if "$" in base:
            problems.append(f"FROM {base}: a variable without a default")
        elif "@sha256:" in base:
            continue
        elif ":" not in base.rsplit("/", 1)[-1]:
            problems.append(f"FROM {base}: no tag (latest)")
        elif base.rsplit(":", 1)[-1] == "latest":
            problems.append(f"FROM {base}: latest moves")
    return problems


def check_venv_base(image: Image) -> list[str]:
    """A venv links to its base interpreter: copied into another base image, python dangles."""
    final_base = image.chain()[0].base
    return [
        f"{path} was made on {made.base} but runs on {final_base}"
        for path, made in venvs(image).items()
        if made.base != final_base
    ]


# --- the real Dockerfiles --------------------------------------------------------------------


@pytest.fixture(params=DOCKERFILES)
def image(request: pytest.FixtureRequest) -> Image:
    return parse(ROOT / request.param)


def test_final_stage_runs_as_the_statefulsets_non_root_numeric_user(image: Image) -> None:
    assert check_user(image) == []


def test_python_m_app_worker_in_exec_form_from_the_venv(image: Image) -> None:
    assert check_entrypoint(image) == []
    assert check_venv_base(image) == []


def test_liverank_env_is_valid_settings_and_agrees_with_the_statefulset(image: Image) -> None:
    assert check_settings(image) == []


def test_model_path_is_the_baked_in_package(image: Image) -> None:
    assert check_model(image, ignore_patterns(image.path)) == []


def test_copy_sources_exist_and_are_in_the_build_context(image: Image) -> None:
    assert check_copy_sources(image, ignore_patterns(image.path)) == []


def test_onnxruntime_is_the_images_own_build_alone(image: Image) -> None:
    assert check_onnxruntime(image, ORT_WANTED[image.path.name]) == []


def test_gpu_image_installs_onnxruntime_gpu_as_the_gpu_extra_says() -> None:
    assert check_gpu_requirement(parse(ROOT / "Dockerfile.gpu")) == []


def test_base_images_are_pinned_to_a_tag(image: Image) -> None:
    assert check_base_images(image) == []


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerignore_keeps_local_state_out(name: str, tmp_path: Path) -> None:
    assert check_ignore_keeps_out(ignore_patterns(ROOT / name), tmp_path) == []


# --- the same checks on broken Dockerfiles ---------------------------------------------------


def variant(tmp_path: Path, name: str, old: str, new: str) -> Image:
    """The repo's Dockerfile ``name`` with ``old`` (which must be there) replaced by ``new``."""
    text = (ROOT / name).read_text(encoding="utf-8")
    assert old in text, f"{name} no longer contains {old!r}: update this test"
    path = tmp_path / name
    path.write_text(text.replace(old, new), encoding="utf-8")
    return parse(path)


def _broken(check: str, image: Image) -> list[str]:
    patterns = ignore_patterns(ROOT / image.path.name)
    return {
        "user": lambda: check_user(image),
        "entrypoint": lambda: check_entrypoint(image),
        "settings": lambda: check_settings(image),
        "model": lambda: check_model(image, patterns),
        "copy": lambda: check_copy_sources(image, patterns),
        "base": lambda: check_base_images(image),
        "venv": lambda: check_venv_base(image),
        "gpu": lambda: check_gpu_requirement(image),
    }[check]()


BROKEN = [
    ("user", "Dockerfile", "USER 10001:10001", "USER root", "root"),
    ("user", "Dockerfile", "USER 10001:10001", "USER liverank", "not a numeric uid"),
    ("user", "Dockerfile.gpu", "USER 10001:10001", "USER 0:0", "root"),
    ("user", "Dockerfile", "USER 10001:10001", "USER 1000:1000", "runAsUser is 10001"),
    ("user", "Dockerfile", "USER 10001:10001\n", "", "no USER"),
    (
        "entrypoint",
        "Dockerfile",
        'ENTRYPOINT ["python", "-m", "app"]',
        "ENTRYPOINT python -m app",
        "shell form",
    ),
    ("entrypoint", "Dockerfile.gpu", 'CMD ["worker"]', "CMD worker", "shell form"),
    (
        "entrypoint",
        "Dockerfile",
        'ENTRYPOINT ["python", "-m", "app"]\nCMD ["worker"]',
        'CMD ["python", "-m", "app", "worker"]',
        "no ENTRYPOINT",
    ),
    ("entrypoint", "Dockerfile", 'CMD ["worker"]', 'CMD ["serve"]', "not app.cli's worker"),
    ("entrypoint", "Dockerfile", '"-m", "app"]', '"-m", "liverank"]', "not python -m app"),
    (
        "entrypoint",
        "Dockerfile",
        "PATH=/opt/venv/bin:$PATH",
        "PATH=$PATH",
        "not in the image's venv",
    ),
    (
        "venv",
        "Dockerfile",
        "FROM python:3.11-slim-bookworm\n",
        "FROM debian:bookworm-slim\n",
        "was made on",
    ),
    ("settings", "Dockerfile", "LIVERANK_HTTP_PORT=8080", "LIVERANK_HTTP_PORT=80", "EXPOSE"),
    ("settings", "Dockerfile", "EXPOSE 8080", "EXPOSE 8000", "EXPOSE"),
    (
        "settings",
        "Dockerfile.gpu",
        "LIVERANK_DATA_DIR=",
        "LIVERANK_DATA_DIRECTORY=",
        "unknown setting",
    ),
    (
        "settings",
        "Dockerfile.gpu",
        "LIVERANK_MODEL_DEVICE=cuda",
        "LIVERANK_MODEL_DEVICE=gpu",
        "model_device",
    ),
    (
        "settings",
        "Dockerfile",
        "LIVERANK_HTTP_PORT=8080",
        "LIVERANK_HTTP_PORT=http",
        "LIVERANK_HTTP_PORT",
    ),
    (
        "settings",
        "Dockerfile",
        "LIVERANK_HTTP_HOST=0.0.0.0",
        "LIVERANK_HTTP_HOST=127.0.0.1",
        "kubelet",
    ),
    (
        "settings",
        "Dockerfile",
        "LIVERANK_DATA_DIR=/var/lib/liverank",
        "LIVERANK_DATA_DIR=/data",
        "data volume",
    ),
    ("model", "Dockerfile", "models/seqrank-1 \\", "models/seqrank-2 \\", "no manifest.json"),
    (
        "model",
        "Dockerfile.gpu",
        "=/app/models/seqrank-1",
        "=/opt/seqrank-1",
        "not under anything COPY",
    ),
    (
        "model",
        "Dockerfile",
        "COPY models /app/models",
        "COPY models/seqrank-1 /srv/model",
        "not under",
    ),
    ("copy", "Dockerfile", "COPY app ./app", "COPY src ./src", "no such file"),
    ("copy", "Dockerfile.gpu", "COPY app ./app", "COPY app tests ./", "tests: excluded"),
    ("copy", "Dockerfile", "COPY pyproject.toml README.md ./", "COPY *.cfg ./", "matches nothing"),
    (
        "base",
        "Dockerfile",
        "FROM python:3.11-slim-bookworm AS build",
        "FROM python AS build",
        "no tag",
    ),
    (
        "base",
        "Dockerfile.gpu",
        "FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04",
        "FROM nvidia/cuda:latest",
        "latest",
    ),
    (
        "gpu",
        "Dockerfile.gpu",
        '"onnxruntime-gpu>=1.18"',
        '"onnxruntime-gpu>=1.20"',
        "gpu extra says",
    ),
    # Unquoted, the shell reads >= as a redirection: pip installs the newest, unconstrained.
    ("gpu", "Dockerfile.gpu", '"onnxruntime-gpu>=1.18"', "onnxruntime-gpu>=1.18", "gpu extra says"),
    ("gpu", "Dockerfile.gpu", '"onnxruntime-gpu>=1.18"', "onnxruntime", "never installed"),
]


@pytest.mark.parametrize(
    ("check", "name", "old", "new", "problem"),
    BROKEN,
    ids=[f"{b[0]}-{b[1]}-{(b[3].strip() or 'without ' + b[2].strip())[:30]}" for b in BROKEN],
)
def test_checks_fail_on_broken_dockerfiles(
    check: str, name: str, old: str, new: str, problem: str, tmp_path: Path
) -> None:
    problems = _broken(check, variant(tmp_path, name, old, new))
    assert any(problem in p for p in problems), problems


def test_copy_check_fails_on_a_source_the_dockerignore_drops(tmp_path: Path) -> None:
    image = parse(ROOT / "Dockerfile")
    patterns = [*ignore_patterns(image.path), "app/core/scoring"]
    assert any("drops ['app/core/scoring/" in p for p in check_copy_sources(image, patterns)), (
        patterns
    )


def test_model_check_fails_when_the_dockerignore_drops_model_files() -> None:
    image = parse(ROOT / "Dockerfile.gpu")
    patterns = [*ignore_patterns(image.path), "models/**/*.fp16.onnx"]
    assert check_model(image, patterns) == [
        "models/seqrank-1/ranker.fp16.onnx is excluded by .dockerignore"
    ]


@pytest.mark.parametrize(
    "patterns",
    [
        ["**/__pycache__", "**/*.pyc"],  # no catch-all: .venv, .git, .kafka, ... all go in
        ["*", "!*", "**/__pycache__"],  # everything back
        ["*", "!pyproject.toml", "!README.md", "!app/", "!models/"],  # bytecode caches go in
        ["*", "!pyproject.toml", "!app/", "!models/", "**/__pycache__", "**/*.pyc"],  # no README
    ],
)
def test_dockerignore_check_fails_on_leaky_or_greedy_files(
    patterns: list[str], tmp_path: Path
) -> None:
    assert check_ignore_keeps_out(patterns, tmp_path) != []


_GPU_RUN = re.compile(r"RUN python3\.11 -m venv.*?rm -rf /src", re.DOTALL)


def gpu_variant(tmp_path: Path, *pip: str) -> Image:
    """Dockerfile.gpu with its venv RUN doing these pip commands instead."""
    text = (ROOT / "Dockerfile.gpu").read_text(encoding="utf-8")
    assert _GPU_RUN.search(text), "Dockerfile.gpu's venv RUN changed: update this test"
    steps = " && ".join(["python3.11 -m venv /opt/venv", *pip, "rm -rf /src"])
    path = tmp_path / "Dockerfile.gpu"
    path.write_text(_GPU_RUN.sub(lambda _: f"RUN {steps}", text), encoding="utf-8")
    return parse(path)


PIP = "/opt/venv/bin/pip"


@pytest.mark.parametrize(
    ("pip", "ends_with"),
    [
        # Both in one resolve: the file-by-file winner is whichever pip unpacks last.
        ([f"{PIP} install '.[gpu]'"], "mixed"),
        # The GPU build unpacked over the CPU one: both installed, files from both.
        ([f"{PIP} install .", f'{PIP} install "onnxruntime-gpu>=1.18"'], "mixed"),
        # Uninstalling the CPU build after both deletes the GPU build's shared files.
        ([f"{PIP} install '.[gpu]'", f"{PIP} uninstall -y onnxruntime"], "broken"),
        # The GPU build swapped in, then liverank reinstalled: the CPU build is back on top.
        (
            [
                f"{PIP} install .",
                f"{PIP} uninstall -y onnxruntime",
                f"{PIP} install 'onnxruntime-gpu>=1.18'",
                f"{PIP} install --force-reinstall .",
            ],
            "mixed",
        ),
        ([f"{PIP} install --no-deps ."], "None"),
    ],
)
def test_onnxruntime_check_fails_when_the_cpu_build_shadows_the_gpu_build(
    pip: list[str], ends_with: str, tmp_path: Path
) -> None:
    problems = check_onnxruntime(gpu_variant(tmp_path, *pip), ORT_GPU)
    assert len(problems) == 1 and f"module from {ends_with};" in problems[0], problems


@pytest.mark.parametrize(
    "pip",
    [
        # The known repair for both-installed: drop the CPU build, rewrite the GPU build's files.
        [
            f"{PIP} install '.[gpu]'",
            f"{PIP} uninstall -y onnxruntime",
            f"{PIP} install --force-reinstall --no-deps 'onnxruntime-gpu>=1.18'",
        ],
        [f"{PIP} install --no-deps .", f"{PIP} install 'onnxruntime-gpu>=1.18'"],
    ],
)
def test_onnxruntime_check_accepts_sound_swaps(pip: list[str], tmp_path: Path) -> None:
    assert check_onnxruntime(gpu_variant(tmp_path, *pip), ORT_GPU) == []


def test_cpu_image_with_the_gpu_extra_fails(tmp_path: Path) -> None:
    image = variant(tmp_path, "Dockerfile", "pip install .", "pip install '.[gpu]'")
    assert check_onnxruntime(image, ORT_CPU) != []
