"""Fetch, format, start and stop a real single-node Apache Kafka (KRaft) broker on loopback."""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, MappingProxyType, TracebackType

__all__ = [
    "DEFAULT_JVM_OPTIONS",
    "DEFAULT_VERSION",
    "LOOPBACK",
    "SASL_MECHANISMS",
    "BrokerSecurity",
    "LocalKafka",
    "LocalKafkaError",
    "classpath_cache_key",
    "default_cache_dir",
    "fetch_classpath",
    "generate_cluster_id",
    "main",
    "maven_artifacts",
    "pick_free_ports",
    "port_is_free",
    "render_log4j_properties",
    "render_pom",
    "render_server_properties",
]

DEFAULT_VERSION = "3.9.1"
SCALA_VERSION = "2.13"
# Kafka 3.9 is built against slf4j 1.7.36 and ships reload4j 1.2.25 as its log4j 1.x backend.
SLF4J_VERSION = "1.7.36"
RELOAD4J_VERSION = "1.2.25"
# Pinned so the result does not depend on whatever plugin version the local Maven defaults to.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

LOOPBACK = "127.0.0.1"
NODE_ID = 1

# Tuned for a fast start on a small (2-core) box; later options override earlier ones,
# so e.g. extra_jvm_options=["-XX:TieredStopAtLevel=4"] restores the C2 JIT for benchmarks.
DEFAULT_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_CACHE_HEADER = "# liverank localkafka classpath key="
_PROGRESS_EVERY_S = 15.0
_MAVEN_TIMEOUT_S = 1800.0

_DATA_DIR_MARKERS = ("server.properties", "log4j.properties", "kafka.log", "logs")

ProgressFn = Callable[[str], None]


class LocalKafkaError(RuntimeError):
    """Raised when the local broker cannot be fetched, started or stopped."""


def _stderr_progress(message: str) -> None:
    print(f"[localkafka] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- fetching


def default_cache_dir() -> Path:
    """Per-user cache for resolved classpaths (jars themselves stay in Maven's ~/.m2)."""
    return Path.home() / ".cache" / "liverank" / "kafka"


def maven_artifacts(version: str = DEFAULT_VERSION) -> tuple[str, ...]:
    """Maven coordinates (group:artifact:version) that make up the broker classpath."""
    return (
        f"org.apache.kafka:kafka_{SCALA_VERSION}:{version}",
        f"org.slf4j:slf4j-reload4j:{SLF4J_VERSION}",
        f"ch.qos.reload4j:reload4j:{RELOAD4J_VERSION}",
    )


def render_pom(version: str = DEFAULT_VERSION) -> str:
    """A throwaway pom whose only purpose is resolving the broker's runtime classpath."""
    deps = []
    for coord in maven_artifacts(version):
        group, artifact, ver = coord.split(":")
        deps.append(
            "    <dependency>\n"
            f"      <groupId>{group}</groupId>\n"
            f"      <artifactId>{artifact}</artifactId>\n"
            f"      <version>{ver}</version>\n"
            "    </dependency>\n"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<project xmlns="http://maven.apache.org/POM/4.0.0"\n'
        '         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"\n'
        '         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 '
        'https://maven.apache.org/xsd/maven-4.0.0.xsd">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>liverank.localkafka</groupId>\n"
        f"  <artifactId>kafka-broker-classpath-{version}</artifactId>\n"
        "  <version>0</version>\n"
        "  <packaging>pom</packaging>\n"
        "  <dependencies>\n"
        f"{''.join(deps)}"
        "  </dependencies>\n"
        "</project>\n"
    )


def classpath_cache_key(version: str = DEFAULT_VERSION) -> str:
    """Stable key of everything that determines the resolved classpath."""
    material = f"{render_pom(version)}\n{DEPENDENCY_PLUGIN}\nincludeScope=runtime\n"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


def _classpath_file(cache_dir: Path, version: str) -> Path:
    return cache_dir / version / "classpath.txt"


def _load_cached_classpath(path: Path, key: str) -> list[Path] | None:
    """The cached jar list if the file matches ``key`` and every jar still exists."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    if len(lines) < 2 or lines[0] != f"{_CACHE_HEADER}{key}":
        return None
    jars = [Path(p) for p in lines[1].split(os.pathsep) if p]
    if not jars or not all(j.is_file() for j in jars):
        return None
    return jars


def _write_cached_classpath(path: Path, key: str, jars: Sequence[Path]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    cp = os.pathsep.join(str(j) for j in jars)
    tmp.write_text(f"{_CACHE_HEADER}{key}\n{cp}\n", encoding="utf-8")
    tmp.replace(path)  # atomic: concurrent fetchers never see a half-written file


def _run_with_heartbeat(
    cmd: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    timeout: float,
    progress: ProgressFn,
    what: str,
) -> int:
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv built from trusted values, no shell
            list(cmd),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        while True:
            try:
                return proc.wait(timeout=_PROGRESS_EVERY_S)
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                if elapsed > timeout:
                    proc.kill()
                    proc.wait()
                    raise LocalKafkaError(
                        f"{what} timed out after {elapsed:.0f}s; see {log_path}"
                    ) from None
                progress(f"{what}: still running ({elapsed:.0f}s)...")


def fetch_classpath(
    version: str = DEFAULT_VERSION,
    cache_dir: Path | None = None,
    *,
    mvn: str = "mvn",
    progress: ProgressFn = _stderr_progress,
) -> list[Path]:
    """Resolve (downloading on first use) the broker jars; cached after the first call."""
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    key = classpath_cache_key(version)
    cp_file = _classpath_file(cache_dir, version)
    cached = _load_cached_classpath(cp_file, key)
    if cached is not None:
        return cached

    mvn_path = shutil.which(mvn)
    if mvn_path is None:
        raise LocalKafkaError(
            f"Maven ({mvn!r}) is not on PATH; it is needed once to download Kafka {version}"
        )
    cp_file.parent.mkdir(parents=True, exist_ok=True)
    log_path = cp_file.parent / "maven.log"
    progress(
        f"resolving Kafka {version} jars with Maven (first run downloads ~70 MB "
        f"into ~/.m2; log: {log_path})"
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="localkafka-mvn-") as tmp:
        work = Path(tmp)
        (work / "pom.xml").write_text(render_pom(version), encoding="utf-8")
        out = work / "classpath.out"
        cmd = [
            mvn_path,
            "-B",
            "--no-transfer-progress",
            "-f",
            str(work / "pom.xml"),
            f"{DEPENDENCY_PLUGIN}:build-classpath",
            f"-Dmdep.outputFile={out}",
            "-Dmdep.includeScope=runtime",
            f"-Dmdep.pathSeparator={os.pathsep}",
        ]
        rc = _run_with_heartbeat(
            cmd,
            cwd=work,
            log_path=log_path,
            timeout=_MAVEN_TIMEOUT_S,
            progress=progress,
            what="maven",
        )
        if rc != 0 or not out.is_file():
            raise LocalKafkaError(
                f"Maven failed (exit {rc}) resolving Kafka {version}:\n{_tail(log_path, 40)}"
            )
        jars = [Path(p) for p in out.read_text(encoding="utf-8").strip().split(os.pathsep) if p]
    if not any(j.name.startswith(f"kafka_{SCALA_VERSION}-{version}") for j in jars):
        raise LocalKafkaError(f"Maven classpath lacks kafka_{SCALA_VERSION}-{version}.jar")
    _write_cached_classpath(cp_file, key, jars)
    progress(f"resolved {len(jars)} jars in {time.monotonic() - started:.1f}s; cached in {cp_file}")
    return jars


# --------------------------------------------------------------------------- configuration


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether a server socket could bind ``host:port`` now (SO_REUSEADDR, as the JVM does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_free_ports(count: int = 1, host: str = LOOPBACK, exclude: Sequence[int] = ()) -> list[int]:
    """``count`` distinct ports the OS considers free right now (all held open while picking)."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
            if port not in exclude and port not in ports:
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def generate_cluster_id() -> str:
    """A random KRaft cluster id: a 22-char URL-safe base64 UUID, as ``random-uuid`` prints."""
    while True:
        raw = uuid.uuid4().bytes
        cid = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
        # Kafka's Uuid.randomUuid() rejects ids starting with '-' (they look like CLI flags).
        if not cid.startswith("-"):
            return cid


# --------------------------------------------------------------------------- SASL_SSL

SASL_MECHANISMS: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SCRAM_DIGESTS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
# Kafka's minimum for both SCRAM mechanisms; more only slows every client's first connect.
_SCRAM_ITERATIONS = 4096
# A user name ends up in a JAAS option key (user_<name>) and in a StorageTool --add-scram
# argument; neither has an escape syntax, so only names that need no escaping are accepted.
_USERNAME_RE = re.compile(r"[A-Za-z0-9._-]+")
_PLAIN_LOGIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
_SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_CERT_DAYS = 3650
# Regenerate certificates that would expire within a day rather than fail mid-test.
_CERT_MIN_VALIDITY_S = 86400

_OPENSSL_CONFIG = """\
# Generated by app/dev/localkafka.py; self-contained so the system openssl.cnf plays no part.
[req]
distinguished_name = dn
prompt = no

[dn]
CN = liverank localkafka throwaway CA

[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[v3_server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


@dataclasses.dataclass(frozen=True, repr=False)
class BrokerSecurity:
    """Users of the optional SASL_SSL listener, as ``{name: password}`` per mechanism family.

    ``plain_users`` log in with SASL/PLAIN, ``scram_users`` with SCRAM-SHA-256 and
    SCRAM-SHA-512. SCRAM credentials are written when a data dir is formatted, so they stay
    fixed for its life (``wipe()`` to change them); PLAIN users are re-read on every start.
    """

    plain_users: Mapping[str, str] = dataclasses.field(default_factory=dict)
    scram_users: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (*self.plain_users, *self.scram_users):
            if not _USERNAME_RE.fullmatch(name):
                raise ValueError(f"user name {name!r} must match {_USERNAME_RE.pattern}")
        # Read-only copies, so a caller's dict changing later cannot drift from the broker.
        object.__setattr__(self, "plain_users", MappingProxyType(dict(self.plain_users)))
        object.__setattr__(self, "scram_users", MappingProxyType(dict(self.scram_users)))

    def __repr__(self) -> str:
        # Names only: this object shows up in tracebacks and test ids, passwords must not.
        return (
            f"BrokerSecurity(plain_users={sorted(self.plain_users)}, "
            f"scram_users={sorted(self.scram_users)})"
        )


def _jaas_quote(value: str) -> str:
    r"""``value`` as a JAAS double-quoted string.

    Kafka parses JAAS text with java.io.StreamTokenizer: a backslash escapes the next
    character and a raw line break ends the string.

    >>> print(_jaas_quote('say "hi" \\o/'))
    "say \"hi\" \\o/"
    """
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def _properties_escape(value: str) -> str:
    r"""``value`` as a java.util.Properties value.

    Kafka loads server.properties from a byte stream, i.e. as ISO-8859-1 with backslash
    escapes, so everything outside printable ASCII becomes a ``\uXXXX`` escape.

    >>> print(_properties_escape(" a\\bé"))
    \ a\\b\u00e9
    """
    out: list[str] = []
    for index, char in enumerate(value):
        if char == "\\":
            out.append("\\\\")
        elif char == " " and index == 0:
            out.append("\\ ")  # Properties.load drops leading whitespace
        elif " " <= char <= "~":
            out.append(char)
        else:
            units = char.encode("utf-16-be")
            out.extend(
                f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2)
            )
    return "".join(out)


def _sasl_ssl_properties(security: BrokerSecurity, keystore_path: Path) -> list[tuple[str, str]]:
    prefix = "listener.name.sasl_ssl."
    plain_options = "".join(
        f" user_{name}={_jaas_quote(password)}"
        for name, password in sorted(security.plain_users.items())
    )
    scram_jaas = f"{_SCRAM_LOGIN_MODULE} required;"
    return [
        ("sasl.enabled.mechanisms", ",".join(SASL_MECHANISMS)),
        # A PEM keystore (PKCS#8 key, then the chain) needs no keytool; Kafka >= 3.2 accepts
        # an unencrypted key there as long as ssl.key.password is not set (KAFKA-12703).
        (f"{prefix}ssl.keystore.type", "PEM"),
        (f"{prefix}ssl.keystore.location", str(keystore_path)),
        (f"{prefix}ssl.client.auth", "none"),
        (f"{prefix}plain.sasl.jaas.config", f"{_PLAIN_LOGIN_MODULE} required{plain_options};"),
        (f"{prefix}scram-sha-256.sasl.jaas.config", scram_jaas),
        (f"{prefix}scram-sha-512.sasl.jaas.config", scram_jaas),
    ]


def _scram_format_arguments(users: Mapping[str, str]) -> list[str]:
    """``--add-scram`` arguments for ``StorageTool format``, one per user and mechanism.

    The tool splits its argument on ``,`` with no escaping, so rather than ``password=`` we
    hand it SCRAM's SaltedPassword (PBKDF2-HMAC, RFC 5802 ``Hi``), which is plain base64.
    """
    args: list[str] = []
    for name, password in sorted(users.items()):
        for mechanism, digest in _SCRAM_DIGESTS.items():
            salt = secrets.token_bytes(16)
            salted = hashlib.pbkdf2_hmac(digest, password.encode("utf-8"), salt, _SCRAM_ITERATIONS)
            args += [
                "--add-scram",
                f"{mechanism}=[name={name},salt={base64.b64encode(salt).decode('ascii')},"
                f"saltedpassword={base64.b64encode(salted).decode('ascii')},"
                f"iterations={_SCRAM_ITERATIONS}]",
            ]
    return args


def _scram_fingerprint(users: Mapping[str, str], key: bytes) -> str:
    material = json.dumps(sorted(users.items()), ensure_ascii=False).encode("utf-8")
    return hmac.new(key, material, hashlib.sha256).hexdigest()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (it holds test passwords or keys)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already existed
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def _openssl(openssl: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(  # noqa: S603 - fixed argv built from trusted values, no shell
        [openssl, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=False,
    )


def _openssl_checked(openssl: str, cwd: Path, *args: str) -> None:
    result = _openssl(openssl, cwd, *args)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
        raise LocalKafkaError(f"openssl {args[0]} failed (exit {result.returncode}):\n{output}")


def _cert_usable(openssl: str, path: Path) -> bool:
    """Whether ``path`` holds a certificate valid for at least another day."""
    if not path.is_file():
        return False
    check = f"x509 -noout -checkend {_CERT_MIN_VALIDITY_S} -in".split()
    return _openssl(openssl, path.parent, *check, path.name).returncode == 0


def _generate_tls(tls_dir: Path, openssl: str) -> None:
    """A throwaway CA (``ca.pem``) and a loopback server keystore (``server.pem``) in ``tls_dir``.

    Built in a sibling directory and renamed into place, so an interrupted run never leaves
    a CA that does not match the keystore.
    """
    work = tls_dir.with_name(f"{tls_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700, parents=True)
    try:
        (work / "openssl.cnf").write_text(_OPENSSL_CONFIG, encoding="ascii")
        rsa = "-algorithm RSA -pkeyopt rsa_keygen_bits:2048"
        signing = f"-sha256 -days {_CERT_DAYS}"
        serial = secrets.randbits(63) + 1
        steps = (  # every token is free of spaces, so each step splits into its argv
            f"genpkey {rsa} -out ca.key",
            f"req -config openssl.cnf -new -x509 -key ca.key {signing} -extensions v3_ca "
            "-out ca.pem",
            f"genpkey {rsa} -out server.key",
            "req -config openssl.cnf -new -key server.key -subj /CN=localhost -out server.csr",
            f"x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial {serial} {signing} "
            "-extfile openssl.cnf -extensions v3_server -out server.crt",
        )
        for step in steps:
            _openssl_checked(openssl, work, *step.split())
        key = (work / "server.key").read_text(encoding="ascii")
        if not key.startswith("-----BEGIN PRIVATE KEY-----"):
            # Kafka's PEM keystore reads PKCS#8 only, not OpenSSL's traditional RSA format.
            raise LocalKafkaError("openssl genpkey did not write an unencrypted PKCS#8 key")
        chain = (work / "server.crt").read_text(encoding="ascii")
        chain += (work / "ca.pem").read_text(encoding="ascii")
        _write_private(work / "server.pem", key + chain)
        for name in ("ca.key", "server.key", "server.csr", "server.crt", "openssl.cnf"):
            (work / name).unlink()
        if tls_dir.exists():
            shutil.rmtree(tls_dir)
        work.rename(tls_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def render_server_properties(
    *,
    port: int,
    controller_port: int,
    log_dir: Path,
    sasl_ssl_port: int | None = None,
    security: BrokerSecurity | None = None,
    keystore_path: Path | None = None,
) -> str:
    """server.properties for a combined broker+controller node listening on loopback only.

    With ``sasl_ssl_port``, ``security`` and ``keystore_path`` (all or none) the broker also
    listens with SASL_SSL; PLAINTEXT stays for inter-broker traffic and admin use.
    """
    extra = (sasl_ssl_port, security, keystore_path)
    if any(v is None for v in extra) and any(v is not None for v in extra):
        raise ValueError("sasl_ssl_port, security and keystore_path go together")
    listeners = f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}"
    advertised = f"PLAINTEXT://{LOOPBACK}:{port}"
    protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    if sasl_ssl_port is not None:
        listeners += f",SASL_SSL://{LOOPBACK}:{sasl_ssl_port}"
        advertised += f",SASL_SSL://{LOOPBACK}:{sasl_ssl_port}"
        protocols += ",SASL_SSL:SASL_SSL"
    props: list[tuple[str, str]] = [
        ("process.roles", "broker,controller"),
        ("node.id", str(NODE_ID)),
        ("controller.quorum.voters", f"{NODE_ID}@{LOOPBACK}:{controller_port}"),
        ("listeners", listeners),
        ("advertised.listeners", advertised),
        ("controller.listener.names", "CONTROLLER"),
        ("inter.broker.listener.name", "PLAINTEXT"),
        ("listener.security.protocol.map", protocols),
        ("log.dirs", str(log_dir)),
        ("num.partitions", "1"),
        ("default.replication.factor", "1"),
        ("min.insync.replicas", "1"),
        ("offsets.topic.replication.factor", "1"),
        ("offsets.topic.num.partitions", "4"),
        ("transaction.state.log.replication.factor", "1"),
        ("transaction.state.log.min.isr", "1"),
        ("transaction.state.log.num.partitions", "4"),
        ("share.coordinator.state.topic.replication.factor", "1"),
        ("share.coordinator.state.topic.min.isr", "1"),
        ("group.initial.rebalance.delay.ms", "0"),
        ("auto.create.topics.enable", "true"),
        ("delete.topic.enable", "true"),
        ("num.network.threads", "2"),
        ("num.io.threads", "4"),
        ("num.recovery.threads.per.data.dir", "1"),
        ("log.retention.hours", "24"),
        ("log.retention.bytes", str(1024**3)),
        ("log.segment.bytes", str(64 * 1024**2)),
        ("log.retention.check.interval.ms", "60000"),
        ("log.cleaner.dedupe.buffer.size", str(16 * 1024**2)),
        ("log.cleaner.threads", "1"),
        ("log.index.size.max.bytes", str(1024**2)),
        ("controlled.shutdown.enable", "true"),
    ]
    if security is not None and keystore_path is not None:
        props += _sasl_ssl_properties(security, keystore_path)
    body = "".join(f"{k}={_properties_escape(v)}\n" for k, v in props)
    return "# Generated by app/dev/localkafka.py; rewritten on every start.\n" + body


def render_log4j_properties(level: str = "INFO") -> str:
    """log4j 1.x (reload4j) config: everything to stdout, which the launcher sends to kafka.log."""
    return (
        "# Generated by app/dev/localkafka.py.\n"
        f"log4j.rootLogger={level}, stdout\n"
        "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        # Per-request and config-dump chatter is useless for tests and demos.
        "log4j.logger.kafka.request.logger=WARN\n"
        "log4j.logger.kafka.network.RequestChannel$=WARN\n"
        "log4j.logger.org.apache.kafka.common.config.AbstractConfig=WARN\n"
        "log4j.logger.kafka.server.KafkaConfig=WARN\n"
        "log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN\n"
        "log4j.logger.kafka.log.LogCleaner=WARN\n"
        "log4j.logger.state.change.logger=WARN\n"
        "log4j.logger.kafka.authorizer.logger=WARN\n"
        "log4j.logger.org.apache.kafka.controller=WARN\n"
        "log4j.logger.org.apache.kafka.storage.internals.log=WARN\n"
        "log4j.logger.kafka.log=WARN\n"
    )


def _parse_previous_ports(props_path: Path) -> dict[str, int] | None:
    """Listener name -> port from a server.properties written by an earlier start.

    None unless both PLAINTEXT and CONTROLLER are there; SASL_SSL only if it was enabled.
    """
    try:
        text = props_path.read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if not line.startswith("listeners="):
            continue
        found: dict[str, int] = {}
        for item in line.split("=", 1)[1].split(","):
            name, _, rest = item.partition("://")
            with contextlib.suppress(ValueError):
                found[name] = int(rest.rsplit(":", 1)[1])
        if "PLAINTEXT" in found and "CONTROLLER" in found:
            return found
    return None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])


# --------------------------------------------------------------------------- processes


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0) but is gone for our purposes
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _pid_runs(pid: int, needle: str) -> bool:
    """Whether ``pid`` is alive and (where /proc exists) its command line mentions ``needle``."""
    if not _pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return not Path("/proc/self").exists()
    return needle in cmdline.split("\0")


def _wait_tcp(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _broker_answers(bootstrap: str, timeout: float = 1.0) -> bool:
    """One metadata round-trip with confluent-kafka (TCP connect if it is not installed)."""
    host, _, port = bootstrap.rpartition(":")
    if not _wait_tcp(host, int(port), timeout):
        return False
    try:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient
    except ImportError:  # pragma: no cover - confluent-kafka is a project dependency
        return True
    quiet = logging.getLogger(f"{__name__}.librdkafka")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    admin = AdminClient({"bootstrap.servers": bootstrap}, logger=quiet)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(metadata.brokers)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class LocalKafka:
    """A single-node KRaft Kafka broker whose state lives in ``data_dir``.

    ``start()`` returns the bootstrap address; the broker runs in its own process group
    and keeps running after this Python process exits unless ``stop()`` is called (the
    context manager does that). A second ``LocalKafka`` on the same ``data_dir`` attaches
    to an already running broker instead of starting another one.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        version: str = DEFAULT_VERSION,
        cache_dir: Path | None = None,
        *,
        java: str = "java",
        mvn: str = "mvn",
        jvm_options: Sequence[str] = DEFAULT_JVM_OPTIONS,
        extra_jvm_options: Sequence[str] = (),
        startup_timeout: float = 60.0,
        stop_timeout: float = 20.0,
        progress: ProgressFn = _stderr_progress,
        security: BrokerSecurity | None = None,
        openssl: str = "openssl",
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.version = version
        self.cache_dir = cache_dir
        self.java = java
        self.mvn = mvn
        self.jvm_options = tuple(jvm_options) + tuple(extra_jvm_options)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._progress = progress
        self._requested_port = port
        self._port: int | None = port
        self._controller_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.security = security
        self.openssl = openssl
        self._sasl_ssl_port: int | None = None

    # -- paths
    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j_path(self) -> Path:
        return self.data_dir / "log4j.properties"

    @property
    def log_path(self) -> Path:
        """Broker stdout/stderr and log4j output."""
        return self.data_dir / "kafka.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def bootstrap_path(self) -> Path:
        return self.data_dir / "bootstrap"

    @property
    def log_dirs(self) -> Path:
        """Kafka's ``log.dirs`` (partition data and KRaft metadata)."""
        return self.data_dir / "logs"

    @property
    def formatted(self) -> bool:
        return (self.log_dirs / "meta.properties").is_file()

    @property
    def tls_dir(self) -> Path:
        """Throwaway CA and server keystore, made on the first start with ``security``."""
        return self.data_dir / "tls"

    @property
    def ca_path(self) -> Path:
        """PEM CA certificate that signs the SASL_SSL listener (a client's ssl.ca.location)."""
        return self.tls_dir / "ca.pem"

    @property
    def keystore_path(self) -> Path:
        """The broker's PEM keystore: unencrypted PKCS#8 key, then the certificate chain."""
        return self.tls_dir / "server.pem"

    @property
    def scram_fingerprint_path(self) -> Path:
        """Keyed hash of the SCRAM users the data dir was formatted with (no passwords)."""
        return self.data_dir / "scram-users.hmac"

    # -- state
    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:<port>`` of this broker (known once started or attached)."""
        if self._port is not None:
            return f"{LOOPBACK}:{self._port}"
        with contextlib.suppress(OSError):
            text = self.bootstrap_path.read_text(encoding="utf-8").strip()
            if text:
                return text
        raise LocalKafkaError(f"no broker started from {self.data_dir}")

    @property
    def sasl_ssl_port(self) -> int | None:
        """Port of the SASL_SSL listener (known once started or attached), else None."""
        return self._sasl_ssl_port

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """``127.0.0.1:<port>`` of the SASL_SSL listener (known once started or attached)."""
        if self._sasl_ssl_port is None:
            raise LocalKafkaError(f"no SASL_SSL listener started from {self.data_dir}")
        return f"{LOOPBACK}:{self._sasl_ssl_port}"

    @property
    def pid(self) -> int | None:
        """PID of the running broker (ours or one started earlier from this data dir)."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            pid = int(self.pid_path.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_runs(pid, str(self.properties_path)) else None

    def is_running(self) -> bool:
        return self.pid is not None

    def is_ready(self, timeout: float = 1.0) -> bool:
        """Running and answering a metadata request."""
        if not self.is_running():
            return False
        try:
            bootstrap = self.bootstrap
        except LocalKafkaError:
            return False
        return _broker_answers(bootstrap, timeout)

    # -- lifecycle
    def fetch(self) -> list[Path]:
        return fetch_classpath(self.version, self.cache_dir, mvn=self.mvn, progress=self._progress)

    def start(self) -> str:
        """Start (or attach to) the broker and wait until it answers; returns the bootstrap."""
        with _locked(self.data_dir / ".lock"):
            existing = self.pid
            if existing is not None:
                self._attach(existing)
                self._wait_ready(existing)
                return self.bootstrap
            self._remove_state_files()
            jars = self.fetch()
            java = shutil.which(self.java)
            if java is None:
                raise LocalKafkaError(f"java ({self.java!r}) is not on PATH; Kafka needs Java 11+")
            self._choose_ports()
            if self.security is not None:
                self._ensure_tls()
            self._write_config()
            classpath = os.pathsep.join(str(j) for j in jars)
            if not self.formatted:
                self._format(java, classpath)
            elif self.security is not None:
                self._check_scram_users(self.security)
            proc = self._launch(java, classpath)
            try:
                self._wait_ready(proc.pid)
            except BaseException:
                self._kill_now()
                raise
            self.bootstrap_path.write_text(f"{self.bootstrap}\n", encoding="utf-8")
            return self.bootstrap

    def stop(self) -> None:
        """SIGTERM the broker's process group, SIGKILL after ``stop_timeout``. Idempotent."""
        if not self.data_dir.is_dir():
            return
        with _locked(self.data_dir / ".lock"):
            pid = self.pid
            if pid is not None:
                self._progress(f"stopping broker pid {pid}")
                self._signal_group(pid, signal.SIGTERM)
                if not self._wait_exit(pid, self.stop_timeout):
                    self._progress(f"broker pid {pid} ignored SIGTERM for {self.stop_timeout}s")
                    self._signal_group(pid, signal.SIGKILL)
                    self._wait_exit(pid, 10.0)
            self._reap()
            self._remove_state_files()

    def wipe(self) -> None:
        """Stop the broker and delete its data dir (refuses directories it did not create)."""
        self.stop()
        if not self.data_dir.exists():
            return
        entries = {p.name for p in self.data_dir.iterdir()} - {".lock"}
        if entries and not entries & set(_DATA_DIR_MARKERS):
            raise LocalKafkaError(f"refusing to wipe {self.data_dir}: not a localkafka data dir")
        shutil.rmtree(self.data_dir)

    def detach(self) -> None:
        """Let the broker outlive this object (CLI ``start``); ``stop()`` still finds it."""
        if self._proc is not None:
            # Popen warns when collected while its child runs. The broker is meant to keep
            # running and init reaps it once we exit, so mark the handle as finished.
            self._proc.returncode = 0
            self._proc = None

    def wait(self) -> int | None:
        """Block until the broker exits (only for a broker this object launched)."""
        if self._proc is None:
            raise LocalKafkaError("wait() needs a broker launched by this object")
        return self._proc.wait()

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalKafka(data_dir={str(self.data_dir)!r}, port={self._port}, pid={self.pid})"

    # -- internals
    def _attach(self, pid: int) -> None:
        previous = _parse_previous_ports(self.properties_path)
        if previous is not None:
            if self._requested_port not in (None, previous["PLAINTEXT"]):
                self._progress(
                    f"broker from {self.data_dir} already runs on port {previous['PLAINTEXT']} "
                    f"(pid {pid}); ignoring requested port {self._requested_port}"
                )
            self._port, self._controller_port = previous["PLAINTEXT"], previous["CONTROLLER"]
            self._sasl_ssl_port = previous.get("SASL_SSL")
            if self.security is not None and self._sasl_ssl_port is None:
                self._progress(f"broker pid {pid} runs without SASL_SSL; stop it to add one")

    def _choose_ports(self) -> None:
        # Every listener keeps its previous port where that is still free, so clients (and a
        # test that restarts the broker mid-stream) see the same addresses after a restart.
        previous = _parse_previous_ports(self.properties_path) or {}
        port = self._requested_port
        if port is None and "PLAINTEXT" in previous and port_is_free(previous["PLAINTEXT"]):
            port = previous["PLAINTEXT"]
        if port is not None and not port_is_free(port):
            raise LocalKafkaError(f"port {LOOPBACK}:{port} is already in use")
        taken = [p for p in (port,) if p is not None]

        def reuse(name: str) -> int | None:
            old = previous.get(name)
            if old is None or old in taken or not port_is_free(old):
                return None
            taken.append(old)
            return old

        cport = reuse("CONTROLLER")
        sport = reuse("SASL_SSL") if self.security is not None else None
        if port is None:
            port = pick_free_ports(1, exclude=taken)[0]
            taken.append(port)
        if cport is None:
            cport = pick_free_ports(1, exclude=taken)[0]
            taken.append(cport)
        if self.security is not None and sport is None:
            sport = pick_free_ports(1, exclude=taken)[0]
        self._port, self._controller_port, self._sasl_ssl_port = port, cport, sport

    def _ensure_tls(self) -> None:
        """Make the CA and keystore unless usable ones exist (they are kept across restarts)."""
        openssl = shutil.which(self.openssl)
        if openssl is None:
            raise LocalKafkaError(f"openssl ({self.openssl!r}) is not on PATH; SASL_SSL needs it")
        if all(_cert_usable(openssl, path) for path in (self.ca_path, self.keystore_path)):
            return
        self._progress(f"generating a throwaway CA and server certificate in {self.tls_dir}")
        _generate_tls(self.tls_dir, openssl)

    def _check_scram_users(self, security: BrokerSecurity) -> None:
        """Fail fast when SCRAM users differ from those the data dir was formatted with."""
        try:
            key_hex, digest = self.scram_fingerprint_path.read_text(encoding="ascii").split()
            key = bytes.fromhex(key_hex)
        except (OSError, ValueError):
            key, digest = b"", _scram_fingerprint({}, b"")
        if not hmac.compare_digest(digest, _scram_fingerprint(security.scram_users, key)):
            raise LocalKafkaError(
                f"SCRAM users are stored when {self.data_dir} is formatted and these differ "
                "from that; wipe the data dir (or use another) to change them"
            )

    def _write_config(self) -> None:
        if self._port is None or self._controller_port is None:
            raise LocalKafkaError("ports must be chosen before writing the config")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dirs.mkdir(parents=True, exist_ok=True)
        secure = self.security is not None and self._sasl_ssl_port is not None
        # 0600: with SASL users the file holds their PLAIN passwords (JAAS config).
        _write_private(
            self.properties_path,
            render_server_properties(
                port=self._port,
                controller_port=self._controller_port,
                log_dir=self.log_dirs,
                sasl_ssl_port=self._sasl_ssl_port if secure else None,
                security=self.security if secure else None,
                keystore_path=self.keystore_path if secure else None,
            ),
        )
        self.log4j_path.write_text(render_log4j_properties(), encoding="utf-8")

    def _java_base(self, java: str, classpath: str) -> list[str]:
        return [
            java,
            *self.jvm_options,
            f"-Dlog4j.configuration={self.log4j_path.as_uri()}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            classpath,
        ]

    def _format(self, java: str, classpath: str) -> None:
        cluster_id = generate_cluster_id()
        self._progress(f"formatting {self.log_dirs} (cluster id {cluster_id})")
        cmd = [
            *self._java_base(java, classpath),
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            "-t",
            cluster_id,
            "-c",
            str(self.properties_path),
        ]
        if self.security is not None:
            # KRaft keeps SCRAM credentials in the metadata log, so they are seeded here
            # (the broker has no other bootstrap path short of an admin call after start).
            cmd += _scram_format_arguments(self.security.scram_users)
        result = subprocess.run(  # noqa: S603 - fixed argv built from trusted values, no shell
            cmd,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )
        with self.log_path.open("ab") as log:
            log.write(result.stdout + result.stderr)
        if result.returncode != 0 or not self.formatted:
            output = (result.stdout + result.stderr).decode("utf-8", errors="replace")
            raise LocalKafkaError(
                f"kafka-storage format failed (exit {result.returncode}):\n{output[-4000:]}"
            )
        if self.security is not None:
            key = secrets.token_bytes(16)
            digest = _scram_fingerprint(self.security.scram_users, key)
            _write_private(self.scram_fingerprint_path, f"{key.hex()} {digest}\n")

    def _launch(self, java: str, classpath: str) -> subprocess.Popen[bytes]:
        cmd = [*self._java_base(java, classpath), "kafka.Kafka", str(self.properties_path)]
        self._progress(f"starting Kafka {self.version} on {self.bootstrap} (data: {self.data_dir})")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv built from trusted values
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: survives Ctrl-C / parent exit
            )
        self.pid_path.write_text(f"{self._proc.pid}\n", encoding="ascii")
        return self._proc

    def _wait_ready(self, pid: int) -> None:
        started = time.monotonic()
        deadline = started + self.startup_timeout
        bootstrap = self.bootstrap
        sasl_port = self._sasl_ssl_port
        while True:
            if self._proc is not None and self._proc.pid == pid:
                rc = self._proc.poll()
                if rc is not None:
                    raise LocalKafkaError(
                        f"Kafka exited with code {rc} during startup; last lines of "
                        f"{self.log_path}:\n{_tail(self.log_path)}"
                    )
            elif not _pid_alive(pid):
                raise LocalKafkaError(
                    f"Kafka (pid {pid}) died during startup; last lines of "
                    f"{self.log_path}:\n{_tail(self.log_path)}"
                )
            # All listeners open together, but a client of the SASL_SSL one should not have to
            # retry just because it asked a moment before that acceptor was bound.
            if _broker_answers(bootstrap, timeout=1.0) and (
                sasl_port is None or _wait_tcp(LOOPBACK, sasl_port, 1.0)
            ):
                self._progress(f"Kafka ready on {bootstrap} in {time.monotonic() - started:.1f}s")
                return
            if time.monotonic() > deadline:
                raise LocalKafkaError(
                    f"Kafka did not answer on {bootstrap} within {self.startup_timeout:g}s; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(0.25)

    def _signal_group(self, pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)  # start_new_session=True made the broker its group leader
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _kill_now(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._signal_group(self._proc.pid, signal.SIGKILL)
        self._reap()
        self._remove_state_files()

    def _reap(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
            self._proc = None

    def _remove_state_files(self) -> None:
        for path in (self.pid_path, self.bootstrap_path):
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- CLI


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/kafka",
        description="Run a local single-node Apache Kafka (KRaft) broker on 127.0.0.1.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=Path(".kafka"), help="default: .kafka")
    common.add_argument("--kafka-version", default=DEFAULT_VERSION, help="Kafka release to run")
    common.add_argument(
        "--cache-dir", type=Path, default=None, help="default: ~/.cache/liverank/kafka"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", parents=[common], help="resolve/download the broker jars only")
    for name, text in (
        ("start", "start in the background and print the bootstrap address"),
        ("run", "run in the foreground until Ctrl-C/SIGTERM"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("--port", type=int, default=None, help="default: reuse previous or pick")
        p.add_argument("--fresh", action="store_true", help="wipe the data dir first")
        p.add_argument("--timeout", type=float, default=60.0, help="startup timeout (s)")
        p.add_argument(
            "--jvm-opt",
            action="append",
            default=[],
            metavar="OPT",
            help="extra JVM option (repeatable; overrides the defaults)",
        )
    sub.add_parser("stop", parents=[common], help="stop the broker of --data-dir")
    sub.add_parser("status", parents=[common], help="exit 0 if running and answering")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    cache_dir: Path | None = args.cache_dir
    if cache_dir is None and os.environ.get("XDG_CACHE_HOME"):
        cache_dir = Path(os.environ["XDG_CACHE_HOME"]) / "liverank" / "kafka"
    kafka = LocalKafka(
        args.data_dir,
        port=getattr(args, "port", None),
        version=args.kafka_version,
        cache_dir=cache_dir,
        extra_jvm_options=getattr(args, "jvm_opt", ()),
        startup_timeout=getattr(args, "timeout", 60.0),
    )
    try:
        if args.command == "fetch":
            jars = kafka.fetch()
            print(_classpath_file(cache_dir or default_cache_dir(), args.kafka_version))
            _stderr_progress(f"{len(jars)} jars ready")
            return 0
        if args.command == "stop":
            kafka.stop()
            return 0
        if args.command == "status":
            if not kafka.is_running():
                print("stopped")
                return 1
            state = "running" if kafka.is_ready() else "not answering"
            print(f"{state} pid={kafka.pid} bootstrap={kafka.bootstrap}")
            return 0 if state == "running" else 2
        if args.fresh:
            kafka.wipe()
        if args.command == "start":
            print(kafka.start(), flush=True)
            kafka.detach()
            return 0
        return _run_foreground(kafka)
    except LocalKafkaError as exc:
        _stderr_progress(f"error: {exc}")
        return 1


def _run_foreground(kafka: LocalKafka) -> int:
    stop_requested = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(kafka.start(), flush=True)
        if kafka.pid is not None and kafka._proc is None:
            _stderr_progress("a broker from this data dir was already running; attached to it")
        while not stop_requested.wait(0.5):
            if not kafka.is_running():
                _stderr_progress(f"broker exited; see {kafka.log_path}")
                kafka.stop()
                return 1
        return 0
    finally:
        kafka.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
