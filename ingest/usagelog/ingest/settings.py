"""Settings of every ``usagelog`` command and of the Kafka ingest worker, ``usagelog tail`` and
``usagelog replay``: one frozen object built at start from arguments > ``USAGELOG_*`` variables >
defaults. Every problem is reported at once (:class:`SettingsError` lists them all, each naming
its variable or option).

Every command:

- ``USAGELOG_CLICKHOUSE_URL`` (``--clickhouse``; default ``chdb://<cwd>/.usagelog/chdb``):
  ``chdb:///path`` (the embedded engine) or ``http(s)://user:password@host:port``
- ``USAGELOG_CLICKHOUSE_DATABASE`` (``--database``; default ``usagelog``): database
- ``USAGELOG_CLICKHOUSE_WAIT_SECONDS`` (default ``60``): how long to wait for a chDB directory
  another process is using
- ``USAGELOG_SPOOL_DIR`` (``--spool``; default ``.usagelog/spool``): spool to ingest

``usagelog ingest``: ``USAGELOG_RETENTION_*``, days each table keeps its rows (the variables and
their defaults are listed in :mod:`usagelog.ingest.retention`).

The Kafka worker, ``tail`` and ``replay``:

- ``USAGELOG_KAFKA_BROKERS`` (required): bootstrap servers, ``host:port[,host:port]`` (or
  the ``kafka://`` URL of ``--from``)
- ``USAGELOG_KAFKA_TOPIC`` (default ``usagelog.events``): topic of usage events
- ``USAGELOG_KAFKA_MONITORED_TOPIC`` (default ``usagelog.monitored``): topic ``usagelog tail``
  follows
- ``USAGELOG_KAFKA_GROUP`` (default ``usagelog-ingest``): consumer group of the workers
- ``USAGELOG_KAFKA_DEAD_LETTER_TOPIC`` (default ``usagelog.deadletter``): also send dead letters
  here (empty: table only)
- ``USAGELOG_KAFKA_SECURITY_PROTOCOL``, ``USAGELOG_KAFKA_SASL_MECHANISM``,
  ``USAGELOG_KAFKA_SASL_USERNAME``, ``USAGELOG_KAFKA_SASL_PASSWORD`` (or ``..._PASSWORD_FILE``),
  ``USAGELOG_KAFKA_CA_FILE``: TLS and SASL login (:mod:`usagelog.ingest.kafka_security`)
- ``USAGELOG_KAFKA_CONFIG`` (default empty): extra librdkafka settings, ``key=value,...``,
  applied last
- ``USAGELOG_BATCH_MAX_MESSAGES`` (default ``1000``): a batch is stored when it has this many Kafka
  messages...
- ``USAGELOG_BATCH_MAX_SECONDS`` (default ``1.0``): ...or is this old...
- ``USAGELOG_BATCH_MAX_BYTES`` (default ``33554432``, 32 MiB): ...or holds this many payload
  bytes (``usagelog ingest --spool`` stores segments in groups of this size too; unset, 64 MiB
  there: a group's payloads wait mapped from their segments, not in the process's memory). With
  librdkafka's prefetch queue (``queued.max.messages.kbytes``, set to the same
  amount unless ``USAGELOG_KAFKA_CONFIG`` says otherwise) it bounds the worker's memory whatever
  the message size; the queue is filled again 20 ms after it was full
  (``fetch.queue.backoff.ms``, librdkafka's default 1 s), so the next batch is fetched while one
  is stored.
- ``USAGELOG_HEALTH_INTERVAL_SECONDS`` (default ``10``): how often the worker logs its health
- ``USAGELOG_WORKER_MAX_MEMORY_MB`` (default ``448``), ``USAGELOG_WORKER_STORE_SLICE_SECONDS``
  (default ``5``), ``USAGELOG_WORKER_STAGE_AHEAD_BATCHES`` (default ``16``): the worker's memory
  bound, how long it keeps a chDB directory, how many batches it stages ahead while another
  process holds it (:mod:`usagelog.ingest.worker`)

The archive, written by the Kafka worker and by ``usagelog ingest`` from the spool:

- ``USAGELOG_ARCHIVE_URL`` (``--archive``): archive directory or fsspec URL (``s3://...``);
  ``none`` turns archiving off. The worker archives to ``.usagelog/archive`` unless told
  otherwise; ingest from the spool archives only when this is set.
- ``USAGELOG_ARCHIVE_ENDPOINT`` (default empty: AWS, or ``AWS_ENDPOINT_URL``): the S3 server
  of an ``s3://`` archive, ``http(s)://host:port`` (MinIO, SeaweedFS, Ceph...). Its credentials
  are the AWS SDK's: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, a role.
- ``USAGELOG_ARCHIVE_FORMAT`` (default ``parquet``): ``parquet`` or ``csv``
- ``USAGELOG_ARCHIVE_MAX_BYTES`` (default ``104857600``): archive files are cut at this size...
- ``USAGELOG_ARCHIVE_MAX_SECONDS`` (default ``3600``): ...or age
- ``USAGELOG_STATE_DIR`` (default ``.usagelog/worker``): local state: archive staging and the
  worker's batches staged ahead, one folder per worker or ingest process
- ``USAGELOG_WORKER_ID`` (``--worker-id``; default ``<host>-<pid>``): names this process's staging
  folder and archive files

Library code that opens the store without settings of its own (:func:`usagelog.ingest.store.connect`,
:mod:`usagelog.analytics`) reads the same variables through the same functions.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from .errors import KafkaError, SettingsError
from .kafka_security import KafkaSecurity, read_kafka_security
from .redact import redact_url

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_WAIT_SECONDS",
    "ArchiveSettings",
    "KafkaUnavailable",
    "Settings",
    "SettingsError",
    "WorkerSettings",
    "chdb_path",
    "check_clickhouse",
    "default_url",
    "load_retention",
    "load_settings",
    "load_worker_settings",
    "parse_kafka_url",
    "wait_seconds",
]

USAGELOG_CLICKHOUSE_URL = "USAGELOG_CLICKHOUSE_URL"
USAGELOG_CLICKHOUSE_DATABASE = "USAGELOG_CLICKHOUSE_DATABASE"
USAGELOG_CLICKHOUSE_WAIT_SECONDS = "USAGELOG_CLICKHOUSE_WAIT_SECONDS"
USAGELOG_WORKER_ID = "USAGELOG_WORKER_ID"
USAGELOG_ARCHIVE_URL = "USAGELOG_ARCHIVE_URL"
DEFAULT_DATABASE = "usagelog"
DEFAULT_WAIT_SECONDS = 60.0

# Days each table keeps its rows, per variable (0 keeps rows forever); the tables each one
# governs are in retention.py.
RETENTION_DAYS: Mapping[str, int] = {
    "USAGELOG_RETENTION_EVENTS_DAYS": 0,
    "USAGELOG_RETENTION_MONITORED_DAYS": 7,
    "USAGELOG_RETENTION_ROLLUP_DAYS": 0,
    "USAGELOG_RETENTION_DEAD_LETTERS_DAYS": 30,
}

KafkaUnavailable = KafkaError  # the name this error had before usagelog.ingest.errors

# librdkafka takes no credentials in its broker list: they would only end up in its log lines.
_KAFKA_CREDENTIALS = (
    "credentials go in USAGELOG_KAFKA_CONFIG (security.protocol=SASL_SSL,sasl.mechanism=...,"
    "sasl.username=...,sasl.password=...), not in the broker address"
)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
N = TypeVar("N", int, float)


@dataclass(frozen=True)
class ArchiveSettings:
    """Where and how stored events are archived; ``url`` empty means not at all."""

    url: str = ""
    fmt: str = "parquet"
    max_bytes: int = 100 * 1024 * 1024
    max_seconds: float = 3600.0
    state_dir: str = ".usagelog/worker"  # staging: <state_dir>/archive-staging/<owner>
    owner: str = "usagelog"  # names the staging folder and the files (USAGELOG_WORKER_ID)
    endpoint: str = ""  # the S3 server of an s3:// url (USAGELOG_ARCHIVE_ENDPOINT)

    @property
    def enabled(self) -> bool:
        return self.url.strip().lower() not in ("", "none", "off")


@dataclass(frozen=True)
class WorkerSettings:
    brokers: str
    topic: str = "usagelog.events"
    monitored_topic: str = "usagelog.monitored"
    group: str = "usagelog-ingest"
    dead_letter_topic: str = "usagelog.deadletter"
    # TLS and SASL (USAGELOG_KAFKA_SECURITY_PROTOCOL, _SASL_*, _CA_FILE); the password is kept
    # out of the repr.
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # USAGELOG_KAFKA_CONFIG may hold a password too (sasl.password=...): no repr either.
    kafka_config: Mapping[str, str] = field(default_factory=dict, repr=False)
    batch_max_messages: int = 1000
    batch_max_seconds: float = 1.0
    # The engine holds one payload's parsed form at a time and the batch's staged columns (about
    # its size); larger batches spread each statement's fixed cost over more events.
    batch_max_bytes: int = 32 * 1024 * 1024
    archive: ArchiveSettings = ArchiveSettings(url=".usagelog/archive")
    worker_id: str = ""
    health_interval: float = 10.0
    clickhouse_url: str = ""
    database: str = DEFAULT_DATABASE
    wait_seconds: float = DEFAULT_WAIT_SECONDS
    # USAGELOG_WORKER_MAX_MEMORY_MB: past this much memory of its own (recycle.memory_bytes) the
    # worker starts afresh (0: never).
    max_memory_mb: int = 448
    # USAGELOG_WORKER_STORE_SLICE_SECONDS: the store stays open over the batches of this long (0: per batch).
    store_slice_seconds: float = 5.0
    # USAGELOG_WORKER_STAGE_AHEAD_BATCHES: while another worker holds the chDB directory, up to this
    # many batches are staged ahead (decoded in an engine of the worker's own; 0: wait instead).
    stage_ahead_batches: int = 16

    def consumer_config(self, **overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap.servers": self.brokers,
            "group.id": self.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            # A worker that dies loses its partitions to the others within seconds.
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            # An unreachable broker is retried calmly rather than logged twenty times a second.
            "reconnect.backoff.ms": 500,
            "reconnect.backoff.max.ms": 10000,
            "client.id": f"usagelog-{self.worker_id}",
            # Fetched messages waiting to be consumed: bounded like a batch (librdkafka: 64 MiB).
            "queued.max.messages.kbytes": max(1, self.batch_max_bytes // 1024),
            # Once that queue was full, librdkafka fetches again after this pause (default 1 s):
            # with a queue of one batch the worker stored a batch, then waited most of a second
            # for the next to arrive. 20 ms: one worker drained 1M events ~25% faster (wall).
            "fetch.queue.backoff.ms": 20,
        }
        config.update(self.security.librdkafka())
        config.update(self.kafka_config)
        config.update(overrides)
        return config

    def producer_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap.servers": self.brokers,
            "acks": "all",
            "enable.idempotence": True,
        }
        config.update(self.security.librdkafka())
        config.update({k: v for k, v in self.kafka_config.items() if not k.startswith(("group.", "auto."))})
        return config


@dataclass(frozen=True)
class Settings:
    """What a ``usagelog`` command runs with."""

    clickhouse_url: str
    database: str
    wait_seconds: float
    spool_dir: str
    fmt: str
    # Days per USAGELOG_RETENTION_* variable; read only for the commands that apply them.
    retention: Mapping[str, int] = field(default_factory=dict)
    # For the commands that talk to Kafka (ingest --from, replay, tail).
    worker: WorkerSettings | None = None
    # For ingest from the spool: off unless USAGELOG_ARCHIVE_URL (--archive) is set.
    archive: ArchiveSettings = ArchiveSettings()


# -- ClickHouse URLs -------------------------------------------------------------------------------


def default_url() -> str:
    return "chdb://" + str(Path.cwd() / ".usagelog" / "chdb")


def chdb_path(url: str) -> str | None:
    """The data directory of a ``chdb://`` URL, or None for a server URL."""
    if not url.startswith("chdb:"):
        return None
    rest = url[len("chdb:") :]
    if rest.startswith("//"):
        rest = rest[2:]
    if not rest or rest.startswith("memory"):
        raise ValueError(f"{redact_url(url)!r}: usagelog needs an on-disk chDB directory (chdb:///path)")
    return os.path.abspath(rest)


def _url_problem(url: str) -> str:
    """Empty string if ``url`` is usable, else the problem."""
    if url.startswith("chdb:"):
        try:
            chdb_path(url)
        except ValueError as exc:
            return str(exc)
        return ""
    if re.match(r"^https?://[^/]+", url):
        return ""
    return f"{redact_url(url)!r} is neither chdb:///path nor http(s)://user:password@host:port"


def check_clickhouse(url: str, database: str) -> None:
    """Raise :class:`SettingsError` unless ``url`` and ``database`` are usable (for library
    callers, which cannot tell an argument from the environment: the variables are named)."""
    reader = _Reader(None)
    reader.clickhouse(url, database)
    reader.done()


def wait_seconds(environ: Mapping[str, str] | None = None) -> float:
    """``USAGELOG_CLICKHOUSE_WAIT_SECONDS``; a bad value raises :class:`SettingsError`."""
    reader = _Reader(environ)
    value = reader.wait_seconds()
    reader.done()
    return value


# -- reading ---------------------------------------------------------------------------------------


class _Reader:
    """Reads ``USAGELOG_*`` variables from one environment, collecting every problem."""

    def __init__(self, environ: Mapping[str, str] | None) -> None:
        self.env: Mapping[str, str] = os.environ if environ is None else environ
        self.problems: list[str] = []

    def done(self) -> None:
        if self.problems:
            raise SettingsError("; ".join(self.problems))

    def pick(self, given: str | None, var: str, default: str, option: str = "") -> tuple[str, str]:
        """(value, where it came from): the argument, else the variable (empty means unset),
        else the default."""
        if given:
            return given, option or var
        return self.env.get(var, "").strip() or default, var

    def text(self, var: str, default: str) -> str:
        """A variable that may be set to the empty string on purpose (e.g. no dead-letter topic)."""
        return self.env[var].strip() if var in self.env else default

    def number(
        self, var: str, default: N, kind: Callable[[str], N], ok: Callable[[N], bool], expected: str
    ) -> N:
        raw = self.env.get(var, "").strip()
        if not raw:
            return default
        try:
            value = kind(raw)
            if math.isfinite(value) and ok(value):  # inf and nan are no number of anything
                return value
        except ValueError:
            pass
        self.problems.append(f"{var}={raw!r}: expected {expected}")
        return default

    def positive(self, var: str, default: N, kind: Callable[[str], N]) -> N:
        return self.number(var, default, kind, lambda v: v > 0, "a positive number")

    def clickhouse(
        self, url: str, database: str, url_source: str = USAGELOG_CLICKHOUSE_URL, db_source: str = ""
    ) -> None:
        problem = _url_problem(url)
        if problem:
            self.problems.append(f"{url_source}: {problem}")
        if not _IDENT.match(database):
            source = db_source or USAGELOG_CLICKHOUSE_DATABASE
            self.problems.append(f"{source}: {database!r} is not a valid database name")

    def wait_seconds(self) -> float:
        return self.number(
            USAGELOG_CLICKHOUSE_WAIT_SECONDS,
            DEFAULT_WAIT_SECONDS,
            float,
            lambda v: v >= 0,
            "a number of seconds (0 or more)",
        )

    def batch_max_bytes(self, default: int = WorkerSettings.batch_max_bytes) -> int:
        """``USAGELOG_BATCH_MAX_BYTES``: Kafka batches and spool groups alike (``default`` when unset)."""
        return self.positive("USAGELOG_BATCH_MAX_BYTES", default, int)

    def max_memory_mb(self) -> int:
        """``USAGELOG_WORKER_MAX_MEMORY_MB``: workers and ``ingest --spool --follow`` alike."""
        return self.number(
            "USAGELOG_WORKER_MAX_MEMORY_MB",
            WorkerSettings.max_memory_mb,
            int,
            lambda v: v >= 0,
            "whole megabytes (0 turns the bound off)",
        )

    def retention(self) -> dict[str, int]:
        return {
            var: self.number(var, default, int, lambda v: v >= 0, "whole days (0 keeps rows forever)")
            for var, default in RETENTION_DAYS.items()
        }

    def worker_id(self, given: str | None, option: str) -> str:
        name, source = self.pick(given, USAGELOG_WORKER_ID, "", option)
        if not name:
            host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
            return f"{host}-{os.getpid()}"
        if not all(c.isalnum() or c in "._-" for c in name):
            self.problems.append(f"{source}={name!r}: use letters, digits, '.', '_' and '-'")
        return name

    def archive(self, given: str | None, option: str, default_url: str, owner: str) -> ArchiveSettings:
        url, _ = self.pick(given, USAGELOG_ARCHIVE_URL, default_url, option)
        fmt = self.env.get("USAGELOG_ARCHIVE_FORMAT", "").strip().lower() or ArchiveSettings.fmt
        if fmt not in ("parquet", "csv"):
            self.problems.append(f"USAGELOG_ARCHIVE_FORMAT={fmt!r}: expected parquet or csv")
        defaults = ArchiveSettings
        endpoint = self.env.get("USAGELOG_ARCHIVE_ENDPOINT", "").strip()
        if endpoint and ArchiveSettings(url=url).enabled:
            from .archive_remote import check_endpoint

            problem = check_endpoint(url, endpoint)
            if problem:
                self.problems.append(problem)
        return ArchiveSettings(
            url=url,
            fmt=fmt,
            max_bytes=self.positive("USAGELOG_ARCHIVE_MAX_BYTES", defaults.max_bytes, int),
            max_seconds=self.positive("USAGELOG_ARCHIVE_MAX_SECONDS", defaults.max_seconds, float),
            state_dir=self.text("USAGELOG_STATE_DIR", defaults.state_dir),
            owner=owner,
            endpoint=endpoint,
        )

    def worker(
        self,
        source: str | None,
        monitored: bool,
        name: str,
        archive: ArchiveSettings,
        clickhouse_url: str,
        database: str,
        wait: float,
    ) -> WorkerSettings:
        env = self.env
        brokers, topic = env.get("USAGELOG_KAFKA_BROKERS", ""), env.get("USAGELOG_KAFKA_TOPIC", "")
        monitored_topic = self.text("USAGELOG_KAFKA_MONITORED_TOPIC", WorkerSettings.monitored_topic)
        if source:
            try:
                brokers, url_topic = parse_kafka_url(source)
            except ValueError as exc:
                self.problems.append(f"--from: {exc}")
            else:
                # In `tail --from kafka://host:port/topic` the topic is the monitored one.
                if monitored:
                    monitored_topic = url_topic or monitored_topic
                else:
                    topic = url_topic or topic
        elif not brokers:
            self.problems.append("USAGELOG_KAFKA_BROKERS (or --from kafka://host:port/topic) is required")
        elif "@" in brokers:
            self.problems.append(f"USAGELOG_KAFKA_BROKERS={redact_url(brokers)!r}: {_KAFKA_CREDENTIALS}")
        try:
            kafka_config = _parse_pairs(env.get("USAGELOG_KAFKA_CONFIG", ""))
        except ValueError as exc:
            kafka_config = {}
            self.problems.append(f"USAGELOG_KAFKA_CONFIG: {exc}")
        security = read_kafka_security(env, self.problems)
        defaults = WorkerSettings
        return WorkerSettings(
            brokers=brokers,
            security=security,
            topic=topic.strip() or defaults.topic,
            monitored_topic=monitored_topic,
            group=self.text("USAGELOG_KAFKA_GROUP", defaults.group),
            dead_letter_topic=self.text("USAGELOG_KAFKA_DEAD_LETTER_TOPIC", defaults.dead_letter_topic),
            kafka_config=kafka_config,
            batch_max_messages=self.positive("USAGELOG_BATCH_MAX_MESSAGES", defaults.batch_max_messages, int),
            batch_max_seconds=self.positive("USAGELOG_BATCH_MAX_SECONDS", defaults.batch_max_seconds, float),
            batch_max_bytes=self.batch_max_bytes(),
            archive=archive,
            worker_id=name,
            health_interval=self.positive(
                "USAGELOG_HEALTH_INTERVAL_SECONDS", defaults.health_interval, float
            ),
            clickhouse_url=clickhouse_url,
            database=database,
            wait_seconds=wait,
            max_memory_mb=self.max_memory_mb(),
            store_slice_seconds=self.number(
                "USAGELOG_WORKER_STORE_SLICE_SECONDS",
                defaults.store_slice_seconds,
                float,
                lambda v: v >= 0,
                "a number of seconds (0 or more)",
            ),
            stage_ahead_batches=self.number(
                "USAGELOG_WORKER_STAGE_AHEAD_BATCHES",
                defaults.stage_ahead_batches,
                int,
                lambda v: v >= 0,
                "a number of batches (0 or more)",
            ),
        )


def load_settings(
    *,
    clickhouse: str | None = None,
    database: str | None = None,
    spool: str | None = None,
    fmt: str = "table",
    retention: bool = False,
    kafka: bool = False,
    source: str | None = None,
    monitored: bool = False,
    worker_id: str | None = None,
    archiving: bool = False,
    archive: str | None = None,
    names: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """The settings of one command. Arguments (``clickhouse``, ``database``, ``spool``,
    ``source``, ``worker_id``: what the user gave on the command line, None otherwise) win over
    the environment, which wins over the defaults.

    ``retention`` also reads ``USAGELOG_RETENTION_*``; ``kafka`` builds the worker settings
    (``source`` is ``--from``'s ``kafka://`` URL; with ``monitored`` its topic is the monitored
    one, as for ``usagelog tail``). ``archiving`` (implied by ``kafka``) reads the archive's
    variables, ``archive`` being ``--archive``. Raises :class:`SettingsError` listing every problem, naming
    arguments as ``names`` says (by default as the CLI's options: ``--clickhouse``, ...).
    """
    # The spool's default is the in-app exporter's; imported here so that `import usagelog.cli`
    # stays free of the instrumentation package.
    from usagelog.instrumentation.config import DEFAULT_SPOOL_DIR, USAGELOG_SPOOL_DIR

    called = {
        "clickhouse": "--clickhouse",
        "database": "--database",
        "worker_id": "--worker-id",
        "archive": "--archive",
    }
    called.update(names or {})
    reader = _Reader(environ)
    url, url_source = reader.pick(clickhouse, USAGELOG_CLICKHOUSE_URL, "", called["clickhouse"])
    url = url or default_url()
    db, db_source = reader.pick(database, USAGELOG_CLICKHOUSE_DATABASE, DEFAULT_DATABASE, called["database"])
    reader.clickhouse(url, db, url_source, db_source)
    wait = reader.wait_seconds()
    spool_dir, _ = reader.pick(spool, USAGELOG_SPOOL_DIR, DEFAULT_SPOOL_DIR)
    days = reader.retention() if retention else {}
    archived = ArchiveSettings()
    if kafka or archiving:
        name = reader.worker_id(worker_id, called["worker_id"])
        # The worker archives by default; ingest from the spool only when asked to.
        default_archive = WorkerSettings.archive.url if kafka else ""
        archived = reader.archive(archive, called["archive"], default_archive, name)
    worker = None
    if kafka:
        worker = reader.worker(source, monitored, name, archived, url, db, wait)
    reader.done()
    return Settings(url, db, wait, spool_dir, fmt, days, worker, archived)


def load_worker_settings(
    *,
    source: str | None = None,
    clickhouse: str | None = None,
    database: str | None = None,
    worker_id: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> WorkerSettings:
    """The Kafka worker's settings alone (see :func:`load_settings`)."""
    settings = load_settings(
        clickhouse=clickhouse,
        database=database,
        kafka=True,
        source=source,
        worker_id=worker_id,
        environ=environ,
    )
    assert settings.worker is not None
    return settings.worker


_Read = TypeVar("_Read")


def _read_alone(read: Callable[[_Reader], _Read], environ: Mapping[str, str] | None) -> _Read:
    """One reading of the environment; what is wrong with it raises :class:`SettingsError`."""
    reader = _Reader(environ)
    value = read(reader)
    reader.done()
    return value


def load_retention(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Days per ``USAGELOG_RETENTION_*`` variable; every bad one is reported at once."""
    return _read_alone(_Reader.retention, environ)


# Spool groups when USAGELOG_BATCH_MAX_BYTES is unset: twice a worker's batch. A group's payloads
# are views of its mapped segments (page cache), where a worker holds its batch's messages and
# librdkafka's prefetch queue of the same size. 1M events stored in groups of 64 MiB took a fifth
# less CPU than in groups of 32 MiB (half the statements and parts, fewer merges), the process's own
# memory peaking at ~400 MB (~300 with 32 MiB; 128 MiB groups: ~580, past the follower's bound).
SPOOL_GROUP_BYTES = 64 * 1024 * 1024


def load_spool_group_bytes(environ: Mapping[str, str] | None = None) -> int:
    """``USAGELOG_BATCH_MAX_BYTES`` alone, for ``usagelog ingest --spool``'s groups of segments
    (:data:`SPOOL_GROUP_BYTES` when unset); a bad value raises :class:`SettingsError` naming the
    variable."""
    return _read_alone(lambda reader: reader.batch_max_bytes(SPOOL_GROUP_BYTES), environ)


def load_max_memory_mb(environ: Mapping[str, str] | None = None) -> int:
    """``USAGELOG_WORKER_MAX_MEMORY_MB`` alone (``usagelog ingest --spool --follow`` reads it as
    the workers do); a bad value raises :class:`SettingsError` naming the variable."""
    return _read_alone(_Reader.max_memory_mb, environ)


def parse_kafka_url(url: str) -> tuple[str, str]:
    """``kafka://host:port[,host:port]/topic`` → (brokers, topic); topic may be empty."""
    parsed = urlparse(url)
    if parsed.scheme != "kafka" or not parsed.netloc:
        raise ValueError(f"{redact_url(url)!r} is not kafka://host:port[,host:port]/topic")
    if "@" in parsed.netloc:
        raise ValueError(f"{redact_url(url)!r}: {_KAFKA_CREDENTIALS}")
    return parsed.netloc, parsed.path.strip("/")


def _parse_pairs(raw: str) -> dict[str, str]:
    pairs = {}
    for number, item in enumerate(raw.split(","), 1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # Not the item itself: it may be a password written with the wrong separator.
            raise ValueError(f"item {number} is not key=value")
        pairs[key.strip()] = value.strip()
    return pairs
