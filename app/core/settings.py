"""The one frozen settings object, read from ``LIVERANK_*`` environment variables at start-up."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "LIVERANK_"

# What a record liverank writes adds to the event or the copied bytes it carries (field names,
# ids, reason, times, Kafka's record framing), generously.
RECORD_OVERHEAD_BYTES = 16 * 1024


def dead_letter_bound(max_bytes: int) -> int:
    """The largest dead letter that copies at most ``max_bytes`` of a record's key and of its
    value (base64: 4 bytes per 3).

    >>> dead_letter_bound(65536)
    191152
    """
    return 2 * (4 * ((max_bytes + 2) // 3)) + RECORD_OVERHEAD_BYTES


def _field(default: Any, doc: str) -> Any:
    """A settings field with a description (shown in docs/configuration.md's table)."""
    return field(default=default, metadata={"doc": doc})


class SettingsError(ValueError):
    """A ``LIVERANK_*`` variable could not be turned into a valid setting."""


class Secret:
    """A password or key: the value is there for clients, but never printed or logged.

    >>> Secret("hunter2")
    Secret('**********')
    >>> Secret("hunter2").get()
    'hunter2'
    """

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))


# Python's level names, and faust's (its CLI accepts only these spellings).
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

LOG_LEVELS = {
    "debug": "debug",
    "info": "info",
    "warning": "warn",
    "error": "error",
    "critical": "crit",
}
LOG_FORMATS = ("json", "text")
EVENT_LOOPS = ("uvloop", "asyncio")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker can be configured with; each field maps to ``LIVERANK_<NAME>``."""

    app_id: str = _field("liverank", "Faust app id: consumer group, changelog topic prefix.")
    bootstrap_servers: str = _field("127.0.0.1:9092", "Kafka bootstrap servers, comma-separated.")
    # Topics: names and partition counts. Events, recommendations and feedback share a
    # partition count so that per-user state, keyed like the events topic, stays co-partitioned.
    topic_events: str = _field("liverank.events.v1", "Behaviour events in (key: user_id).")
    topic_catalog: str = _field("liverank.catalog.v1", "Item catalog in, compacted (key: item_id).")
    topic_recommendations: str = _field(
        "liverank.recommendations.v1", "Ranked recommendations out (key: user_id)."
    )
    topic_feedback: str = _field(
        "liverank.feedback.v1", "Feedback for retraining out (key: user_id)."
    )
    topic_dead_letters: str = _field(
        "liverank.dead-letters.v1", "Records that could not be applied, with the reason."
    )
    topic_model_updates: str = _field(
        "liverank.model-updates.v1",
        "New model versions in, compacted (key: model name); every worker follows it.",
    )
    topic_attribution: str = _field(
        "liverank.attribution.v1",
        "Attributed feedback out (key: user_id): positives and closed impressions' negatives.",
    )
    # Connection security. Secrets come from the environment or from files (a mounted Kubernetes
    # Secret); they are typed Secret, so printing or logging the settings never shows them.
    security_protocol: str = _field(
        "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, for every Kafka connection."
    )
    sasl_mechanism: str = _field("SCRAM-SHA-512", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    sasl_username: str = _field("", "SASL user name.")
    sasl_password: Secret = _field(Secret(), "SASL password (or use SASL_PASSWORD_FILE).")
    sasl_password_file: str = _field(
        "", "File holding the SASL password (trailing newline ignored); read at start-up."
    )
    ssl_ca_file: str = _field("", "PEM CA bundle for the brokers' certificates; empty: system CAs.")
    ssl_cert_file: str = _field("", "PEM client certificate, for brokers that require one (mTLS).")
    ssl_key_file: str = _field("", "PEM private key of the client certificate.")
    ssl_key_password: Secret = _field(Secret(), "Password of SSL_KEY_FILE, if it is encrypted.")
    ssl_check_hostname: bool = _field(True, "Check that broker certificates name the broker.")
    partitions: int = _field(
        4, "Partitions of the events, recommendations and feedback topics and the state table."
    )
    partitioner: str = _field(
        "murmur2",
        "How producers place keyed events: murmur2 (Java's default; librdkafka "
        "partitioner=murmur2_random) or crc32 (librdkafka's default). Records on another "
        "partition are forwarded to their own; the partition migration moves state by it.",
    )
    catalog_partitions: int = _field(1, "Partitions of the catalog topic.")
    replication_factor: int = _field(1, "Replication factor of the topics liverank creates.")
    standby_replicas: int = _field(
        1,
        "Standby copies of each state partition kept warm on other workers (from the changelog), "
        "so a partition that moves is served without a full restore; 0 for none.",
    )
    processing_guarantee: str = _field(
        "at_least_once", "Only at_least_once for now (state updates deduplicate by event id)."
    )
    data_dir: Path = _field(Path(".liverank-data"), "Where RocksDB keeps the state table.")
    state_memory_mb: int = _field(
        32,
        "RocksDB memory per state partition the worker holds (active or standby), MiB: half "
        "for its two write buffers, half for its block cache (faust's defaults: up to 192 MiB "
        "of write buffers and a 2 GiB cache per partition).",
    )
    model_path: Path = _field(
        Path("models/seqrank-1"), "The model package folder (see the model package contract)."
    )
    model_variant: str = _field(
        "auto",
        "auto (FP16 on CUDA, else FP32), fp32, int8 or fp16: which ranker to run. INT8 is "
        "faster on CPU, but its dynamic quantization lets batch neighbours nudge scores.",
    )
    model_device: str = _field(
        "auto", "auto (CUDA when onnxruntime-gpu sees a GPU, else CPU), cuda or cpu."
    )
    onnx_threads: int = _field(1, "ONNX Runtime intra-op threads.")
    blas_threads: int = _field(
        1,
        "numpy's BLAS threads (similarity search on small catalogs). More than one spin-waits "
        "for work and steals the CPU from the event loop and the broker on small machines.",
    )
    http_host: str = _field(
        "127.0.0.1", "Address of /metrics, /healthz, /readyz (0.0.0.0 in a pod)."
    )
    http_port: int = _field(8080, "Port of /metrics, /healthz, /readyz.")
    processes: int = _field(
        1,
        "Worker processes in this pod, each its own consumer group member, RocksDB directory "
        "(DATA_DIR/p<i>) and loopback HTTP port (HTTP_PORT+1+i); HTTP_PORT then answers for "
        "all of them. 0: one per CPU available to the pod (affinity, cgroup CPU limit).",
    )
    # User state bounds: they keep one user's RocksDB value small whatever the user does.
    history_size: int = _field(50, "Interactions kept per user.")
    recent_event_ids: int = _field(64, "Event ids kept per user for deduplication.")
    max_query_terms: int = _field(16, "Recent query terms kept per user.")
    max_purchased: int = _field(200, "Purchased item ids kept per user (never recommended again).")
    seen_size: int = _field(
        1000, "Distinct items remembered per user as seen (not shown again after a click)."
    )
    max_affinities: int = _field(32, "Category and tag affinities kept per user (strongest first).")
    affinity_half_life_s: float = _field(
        6 * 3600.0, "Half-life of category and tag affinities, seconds."
    )
    # Attribution and live quality.
    attribution_window_s: float = _field(
        1800.0,
        "How long after a recommendation is shown an action on one of its items counts as a "
        "positive; when it ends the rest are negatives.",
    )
    attribution_open: int = _field(
        8, "Impressions a user keeps open; beyond it the oldest closes early (evicted)."
    )
    attribution_closed_kept: int = _field(
        8, "Closed impressions kept per user, so a replay re-emits what it emitted."
    )
    quality_k: int = _field(10, "K of the live hit rate@K.")
    shadow_max_users: int = _field(
        200_000,
        "Users whose open shadow-model impressions a worker keeps in memory (a shadow model is "
        "announced on the model-updates topic); beyond it the least recent user's are "
        "forgotten, uncounted.",
    )
    # Ranking.
    top_k: int = _field(10, "Items per recommendation.")
    exclude: str = _field(
        "seen",
        "What a user is never shown (app/core/exclusions.py): seen (after a next-item event, no "
        "item they interacted with, SEEN_SIZE remembered; never a purchase; a search may show "
        "seen items) or "
        "purchased (only purchases and the event's own item).",
    )
    candidates: int = _field(200, "Candidates retrieved and scored per event.")
    # Hot path: micro-batching, caches, retrieval index, overload.
    batch_max_events: int = _field(
        256, "Most events taken from the stream into one batch (ranked in one model call)."
    )
    batch_wait_ms: float = _field(
        5.0, "Longest wait for a batch to fill, milliseconds; a partial batch then runs."
    )
    batch_eager: bool = _field(
        True,
        "Hand a batch over as soon as no more records are waiting in the stream (low latency "
        "at low load; batches still grow with the load); false: wait BATCH_WAIT_MS or "
        "BATCH_MAX_EVENTS, as faust's take_events does.",
    )
    batch_backlog_wait_ms: float = _field(
        0.0,
        "While the events consumer is behind (BATCH_BACKLOG_RECORDS), an eager batch waits up "
        "to this long to fill instead of closing when the stream is momentarily empty: fuller "
        "batches cost less per event and drain the backlog; 0: off (the default: with 20, "
        "MAX_POLL_RECORDS=250 and a 0 ms quiet period together, the partition-migration test "
        "lost or reordered events in 3 of 13 runs; docs/benchmarks.md).",
    )
    batch_backlog_records: int = _field(
        32,
        "Records on the events partitions not yet handed to the stream (their ends as of the "
        "latest fetch minus what was read) from which the consumer counts as behind.",
    )
    max_poll_records: int = _field(
        0,
        "Most records faust takes from its consumer per fetch hand-over (broker_max_poll_records)"
        "; 0: all it holds (the default; see BATCH_BACKLOG_WAIT_MS). A bound lets partitions "
        "drained first be fetched again while the rest are processed.",
    )
    coalesce_users: bool = _field(
        False,
        "Rank a user once per batch and kind (search, next items): their earlier triggers in "
        "the batch get the latest ranking (the record names it in coalesced_into). Off by "
        "default: each record then answers its own event, which is what a user who opened that "
        "page sees; on, it saves model calls for bursty users at the price of earlier records "
        "carrying a list ranked after later events.",
    )
    deadline_ms: float = _field(
        1000.0,
        "Events older than this when ranked get the cheap path (co-occurrence, favourite "
        "categories, popular; counted per record in liverank_degraded_total); 0 turns it off.",
    )
    session_timeout_s: float = _field(
        10.0,
        "Consumer group session timeout, seconds: how long a worker that died without leaving "
        "the group (SIGKILL, lost node) keeps its partitions before they move.",
    )
    commit_interval_s: float = _field(
        1.0, "How often offsets are committed (after flushing outputs and state), seconds."
    )
    query_cache_size: int = _field(4096, "Distinct queries whose tokens and term ids are cached.")
    state_cache_users: int = _field(
        2048,
        "Users whose decoded state is kept between batches (reused only while the stored bytes "
        "are unchanged); 0 decodes every read.",
    )
    ann_exact_below: int = _field(
        50_000, "Catalogs smaller than this use exact similarity search; larger ones an IVF index."
    )
    ann_nprobe: int = _field(0, "IVF lists probed per query; 0 picks the index's default.")
    event_loop: str = _field(
        "uvloop",
        "The worker's asyncio event loop, for faust's main loop and its consumer thread: uvloop "
        "(libuv, in C; not on Windows) or asyncio (the standard library's, in Python). uvloop "
        "took 5 to 16% less CPU per event at the maximum in three A/Bs on the 2-core VM "
        "(docs/benchmarks.md).",
    )
    fetch_wait_ms: int = _field(
        1500,
        "Longest the broker may hold the worker consumer's fetch request while no record is "
        "waiting (faust's aiokafka driver hard-codes 1500 ms). aiokafka sends one fetch per "
        "broker at a time and leaves partitions with records not yet handed over out of it, "
        "so a fetch of idle partitions alone stalls the rest for this long; faust's idle "
        "leader-topic partition did that until it was turned off. 1500 by default: every "
        "rebalance-test failure seen had 100, which lets a fetch pick up partitions during "
        "faust's recovery before they are seeked (docs/benchmarks.md).",
    )
    item_neighbours: int = _field(
        128,
        "Nearest items kept per item (built with the catalog below 20,000 items, on first use "
        "above): similar items come from the user's recent items' lists instead of a search "
        "of the whole catalog per event; 0 searches the catalog per event.",
    )
    posting_limit: int = _field(
        2000, "Most items kept per query token (most popular first); bounds search cost."
    )
    # Input limits.
    max_event_bytes: int = _field(16 * 1024, "Larger event records are dead-lettered as oversize.")
    max_event_age_s: float = _field(
        30 * 86400.0,
        "Events whose event_time is older than this, against the record's Kafka timestamp, are "
        "dead-lettered (time_out_of_range); 0 turns the check off.",
    )
    max_event_future_s: float = _field(
        300.0,
        "Events whose event_time is further ahead of the record's Kafka timestamp than this "
        "(clock skew) are dead-lettered (time_out_of_range); 0 turns the check off.",
    )
    dead_letter_max_bytes: int = _field(
        64 * 1024,
        "Most bytes of an offending record copied into its dead letter (its size and sha256 "
        "are always there).",
    )
    producer_max_message_bytes: int = _field(
        1_000_000,
        "Largest record liverank's producers send (librdkafka message.max.bytes). Checked at "
        "start-up against DEAD_LETTER_MAX_BYTES, MAX_EVENT_BYTES and the output topics' "
        "max.message.bytes; a record refused for its size at run time is replaced by a dead "
        "letter that fits.",
    )
    # Liveness and shutdown.
    liveness_stall_s: float = _field(
        120.0,
        "/healthz fails when an assigned events partition has records waiting and no record has "
        "been processed for this long, seconds (rebalances and table recovery excepted); 0 "
        "turns it off.",
    )
    shutdown_grace_s: float = _field(
        30.0,
        "After SIGTERM (or a fatal error) the process ends within this many seconds, whatever "
        "the event loop is doing; keep it below the pod's terminationGracePeriodSeconds.",
    )
    http_timeout_s: float = _field(
        5.0,
        "An HTTP connection that has not sent its whole request within this many seconds is "
        "closed (one thread serves every connection).",
    )
    # Catalog follower: how often a changed catalog is re-indexed, and how long start-up may wait.
    catalog_refresh_s: float = _field(0.2, "How often catalog changes are re-indexed, seconds.")
    catalog_preload_timeout_s: float = _field(
        120.0, "How long start-up may take to read the catalog, seconds."
    )
    log_level: str = _field("info", "Worker log level: debug, info, warning, error or critical.")
    log_format: str = _field(
        "json",
        "Worker log lines: json (one object per line, for a log pipeline) or text (for people; "
        "scripts/demo sets it).",
    )

    def __post_init__(self) -> None:
        if self.processing_guarantee != "at_least_once":
            # Faust's exactly_once (Kafka transactions) has open bugs; it is offered only once a
            # test proves it. At-least-once plus idempotent state updates is the default.
            raise SettingsError(
                f"processing_guarantee {self.processing_guarantee!r} is not supported; "
                "use 'at_least_once'"
            )
        for name in (
            "partitions",
            "state_memory_mb",
            "catalog_partitions",
            "replication_factor",
            "onnx_threads",
            "blas_threads",
            "history_size",
            "recent_event_ids",
            "max_query_terms",
            "max_purchased",
            "seen_size",
            "max_affinities",
            "top_k",
            "candidates",
            "max_event_bytes",
            "batch_max_events",
            "batch_backlog_records",
            "query_cache_size",
            "ann_exact_below",
            "posting_limit",
            "attribution_open",
            "quality_k",
            "shadow_max_users",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.candidates < self.top_k:
            raise SettingsError(
                f"candidates ({self.candidates}) must be at least top_k ({self.top_k})"
            )
        if self.commit_interval_s <= 0:
            raise SettingsError("commit_interval_s must be positive")
        if not 6.0 <= self.session_timeout_s <= 300.0:
            # The broker's group.min.session.timeout.ms and max defaults.
            raise SettingsError("session_timeout_s must be between 6 and 300 seconds")
        if (
            self.batch_wait_ms < 0
            or self.deadline_ms < 0
            or self.ann_nprobe < 0
            or self.state_cache_users < 0
            or self.item_neighbours < 0
            or self.batch_backlog_wait_ms < 0
            or self.max_poll_records < 0
            or self.fetch_wait_ms < 0
        ):
            raise SettingsError(
                "batch_wait_ms, deadline_ms, ann_nprobe, state_cache_users, item_neighbours, "
                "batch_backlog_wait_ms, max_poll_records and fetch_wait_ms must not be negative"
            )
        if self.log_level.lower() not in LOG_LEVELS:
            raise SettingsError(
                f"log_level must be one of {sorted(LOG_LEVELS)}, not {self.log_level!r}"
            )
        if self.exclude not in ("seen", "purchased"):
            raise SettingsError(f"exclude must be seen or purchased, not {self.exclude!r}")
        if self.event_loop not in EVENT_LOOPS:
            raise SettingsError(
                f"event_loop must be one of {', '.join(EVENT_LOOPS)}, not {self.event_loop!r}"
            )
        if self.partitioner not in ("murmur2", "crc32"):
            raise SettingsError(f"partitioner must be murmur2 or crc32, not {self.partitioner!r}")
        if self.log_format.lower() not in LOG_FORMATS:
            raise SettingsError(
                f"log_format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}"
            )
        if self.model_device not in ("auto", "cuda", "cpu"):
            raise SettingsError(
                f"model_device must be auto, cuda or cpu, not {self.model_device!r}"
            )
        if self.attribution_window_s <= 0 or self.attribution_closed_kept < 0:
            raise SettingsError(
                "attribution_window_s must be positive and attribution_closed_kept not negative"
            )
        if self.standby_replicas < 0:
            raise SettingsError("standby_replicas must not be negative")
        if self.processes < 0:
            raise SettingsError("processes must not be negative")
        if self.max_event_age_s < 0 or self.max_event_future_s < 0:
            raise SettingsError("max_event_age_s and max_event_future_s must not be negative")
        if self.dead_letter_max_bytes < 256:
            raise SettingsError("dead_letter_max_bytes must be at least 256")
        self._check_sizes()
        if self.liveness_stall_s < 0 or self.shutdown_grace_s <= 0 or self.http_timeout_s <= 0:
            raise SettingsError(
                "liveness_stall_s must not be negative; shutdown_grace_s and http_timeout_s "
                "must be positive"
            )
        self._check_security()
        if self.affinity_half_life_s <= 0:
            raise SettingsError("affinity_half_life_s must be positive")

    def _check_sizes(self) -> None:
        """Every record liverank writes must fit under ``producer_max_message_bytes``: a dead
        letter copies up to ``dead_letter_max_bytes`` of a record's key and of its value, in
        base64, and a feedback record carries an event of up to ``max_event_bytes``."""
        limit = self.producer_max_message_bytes
        if not 65_536 <= limit <= 100_000_000:
            raise SettingsError(
                f"producer_max_message_bytes must be between 65536 and 100000000, got {limit}"
            )
        if dead_letter_bound(self.dead_letter_max_bytes) > limit:
            raise SettingsError(
                f"dead_letter_max_bytes {self.dead_letter_max_bytes} makes dead letters of up to "
                f"{dead_letter_bound(self.dead_letter_max_bytes)} bytes, over "
                f"producer_max_message_bytes ({limit}); at most "
                f"{(limit - RECORD_OVERHEAD_BYTES) * 3 // 8} fits"
            )
        if self.max_event_bytes + RECORD_OVERHEAD_BYTES > limit:
            raise SettingsError(
                f"max_event_bytes {self.max_event_bytes} plus {RECORD_OVERHEAD_BYTES} bytes for "
                f"the records that carry an event is over producer_max_message_bytes ({limit})"
            )

    def _check_security(self) -> None:
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise SettingsError(
                f"security_protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                f"not {self.security_protocol!r}"
            )
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise SettingsError(
                    f"sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}, "
                    f"not {self.sasl_mechanism!r}"
                )
            if not self.sasl_username:
                raise SettingsError(f"{self.security_protocol} needs sasl_username")
            if bool(self.sasl_password) == bool(self.sasl_password_file):
                raise SettingsError(
                    f"{self.security_protocol} needs exactly one of sasl_password and "
                    "sasl_password_file"
                )
        if bool(self.ssl_cert_file) != bool(self.ssl_key_file):
            raise SettingsError("ssl_cert_file and ssl_key_file go together")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from ``LIVERANK_*`` variables; unknown ones are an error, not ignored.

        >>> Settings.from_env({"LIVERANK_PARTITIONS": "8"}).partitions
        8
        """
        known = {f.name: f for f in fields(cls)}
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX) :].lower()
            if name not in known:
                raise SettingsError(f"unknown setting {key}")
            values[name] = _convert(key, raw, hints[name])
        return cls(**values)

    def namespaced(self, tag: str, **changes: Any) -> Settings:
        """A copy whose app id (consumer group, changelog topics) and every topic are prefixed
        with ``tag``: a worker and its topics that share nothing with other runs (tests,
        benchmarks, experiments on one broker).

        >>> Settings().namespaced("t1").topic_attribution
        't1.attribution'
        """
        return self.replace(
            app_id=tag,
            topic_events=f"{tag}.events",
            topic_catalog=f"{tag}.catalog",
            topic_recommendations=f"{tag}.recommendations",
            topic_feedback=f"{tag}.feedback",
            topic_dead_letters=f"{tag}.dead-letters",
            topic_attribution=f"{tag}.attribution",
            topic_model_updates=f"{tag}.model-updates",
            **changes,
        )

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (settings are frozen)."""
        return dataclasses.replace(self, **changes)

    def as_table(self) -> list[tuple[str, str, str, str]]:
        """(variable, type, value, description) rows; docs/configuration.md's table is this, for
        defaults."""
        hints = get_type_hints(type(self))
        return [
            (
                ENV_PREFIX + f.name.upper(),
                _type_name(hints[f.name]),
                _shown(getattr(self, f.name)),
                str(f.metadata.get("doc", "")),
            )
            for f in fields(self)
        ]

    def to_env(self) -> dict[str, str]:
        """``LIVERANK_*`` variables that rebuild these settings (secrets in the clear: for a
        child process's environment, never for printing)."""
        return {ENV_PREFIX + f.name.upper(): _raw(getattr(self, f.name)) for f in fields(self)}

    def child_environ(self, environ: Mapping[str, str]) -> dict[str, str]:
        """``environ`` without its ``LIVERANK_*`` variables, plus these settings': the whole
        environment of a child process that should run with exactly these settings.

        >>> env = Settings().child_environ({"PATH": "/bin", "LIVERANK_STRAY": "x"})
        >>> env["PATH"], "LIVERANK_STRAY" in env, env["LIVERANK_PARTITIONS"]
        ('/bin', False, '4')
        """
        env = {k: v for k, v in environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(self.to_env())
        return env

    def markdown_table(self) -> str:
        lines = ["| variable | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{v}` | {t} | `{d}` | {doc} |" for v, t, d, doc in self.as_table()]
        return "\n".join(lines)


def _shown(value: Any) -> str:
    if isinstance(value, Secret):
        return "(secret)" if value else ""
    return str(value)


def _raw(value: Any) -> str:
    return value.get() if isinstance(value, Secret) else str(value)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(key: str, raw: str, tp: Any) -> Any:
    try:
        if tp is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
        if tp is Path:
            return Path(raw)
        if tp is Secret:
            return Secret(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{key}: {exc}") from exc
