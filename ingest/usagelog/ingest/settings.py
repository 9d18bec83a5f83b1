"""Settings of the Kafka ingest worker, ``usagelog tail`` and ``usagelog replay``: one frozen object
built at start from arguments > ``USAGELOG_*`` variables > defaults. Every problem is reported at
once (:class:`SettingsError` lists them all, each naming its variable or option).

- ``USAGELOG_KAFKA_BROKERS`` (required): bootstrap servers, ``host:port[,host:port]`` (or
  the ``kafka://`` URL of ``--from``)
- ``USAGELOG_KAFKA_TOPIC`` (default ``usagelog.events``): topic of usage events
- ``USAGELOG_KAFKA_MONITORED_TOPIC`` (default ``usagelog.monitored``): topic ``usagelog tail``
  follows
- ``USAGELOG_KAFKA_GROUP`` (default ``usagelog-ingest``): consumer group of the workers
- ``USAGELOG_KAFKA_DEAD_LETTER_TOPIC`` (default ``usagelog.deadletter``): also send dead letters
  here (empty: table only)
- ``USAGELOG_KAFKA_CONFIG`` (default empty): extra librdkafka settings, ``key=value,...`` (e.g.
  SASL/TLS)
- ``USAGELOG_BATCH_MAX_MESSAGES`` (default ``1000``): a batch is stored when it has this many Kafka
  messages...
- ``USAGELOG_BATCH_MAX_SECONDS`` (default ``1.0``): ...or is this old
- ``USAGELOG_ARCHIVE_URL`` (default ``.usagelog/archive``): archive directory or fsspec URL
  (``s3://...``); ``none`` turns archiving off
- ``USAGELOG_ARCHIVE_FORMAT`` (default ``parquet``): ``parquet`` or ``csv``
- ``USAGELOG_ARCHIVE_MAX_BYTES`` (default ``104857600``): archive files are cut at this size...
- ``USAGELOG_ARCHIVE_MAX_SECONDS`` (default ``3600``): ...or age
- ``USAGELOG_STATE_DIR`` (default ``.usagelog/worker``): local state: archive staging, one folder
  per worker
- ``USAGELOG_WORKER_ID`` (default ``<host>-<pid>``): names this worker's staging folder and archive
  files
- ``USAGELOG_HEALTH_INTERVAL_SECONDS`` (default ``10``): how often the worker logs its health
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from .store import DEFAULT_DATABASE, default_url, validate_url


class SettingsError(ValueError):
    """One or more settings are invalid; the message lists each, naming its source."""


class KafkaUnavailable(RuntimeError):
    """Kafka did not answer, or lacks the topic asked for; the message says which."""


@dataclass(frozen=True)
class WorkerSettings:
    brokers: str
    topic: str = "usagelog.events"
    monitored_topic: str = "usagelog.monitored"
    group: str = "usagelog-ingest"
    dead_letter_topic: str = "usagelog.deadletter"
    kafka_config: Mapping[str, str] = field(default_factory=dict)
    batch_max_messages: int = 1000
    batch_max_seconds: float = 1.0
    archive_url: str = ".usagelog/archive"
    archive_format: str = "parquet"
    archive_max_bytes: int = 100 * 1024 * 1024
    archive_max_seconds: float = 3600.0
    state_dir: str = ".usagelog/worker"
    worker_id: str = ""
    health_interval: float = 10.0
    clickhouse_url: str = ""
    database: str = DEFAULT_DATABASE

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
        }
        config.update(self.kafka_config)
        config.update(overrides)
        return config

    def producer_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap.servers": self.brokers,
            "acks": "all",
            "enable.idempotence": True,
        }
        config.update({k: v for k, v in self.kafka_config.items() if not k.startswith(("group.", "auto."))})
        return config


def parse_kafka_url(url: str) -> tuple[str, str]:
    """``kafka://host:port[,host:port]/topic`` → (brokers, topic); topic may be empty."""
    parsed = urlparse(url)
    if parsed.scheme != "kafka" or not parsed.netloc:
        raise ValueError(f"{url!r} is not kafka://host:port[,host:port]/topic")
    return parsed.netloc, parsed.path.strip("/")


def _parse_pairs(raw: str) -> dict[str, str]:
    pairs = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def load_worker_settings(
    *,
    source: str | None = None,
    clickhouse: str | None = None,
    database: str | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> WorkerSettings:
    env = os.environ if environ is None else environ
    problems: list[str] = []
    values: dict[str, Any] = {}

    brokers, topic = env.get("USAGELOG_KAFKA_BROKERS", ""), env.get("USAGELOG_KAFKA_TOPIC", "")
    if source:
        try:
            brokers, url_topic = parse_kafka_url(source)
            topic = url_topic or topic
        except ValueError as exc:
            problems.append(f"--from: {exc}")
    if not brokers and not problems:
        problems.append("USAGELOG_KAFKA_BROKERS (or --from kafka://host:port/topic) is required")
    values["brokers"] = brokers
    if topic:
        values["topic"] = topic

    def text(var: str, name: str) -> None:
        if var in env:
            values[name] = env[var].strip()

    def number(var: str, name: str, kind: type[int] | type[float]) -> None:
        raw = env.get(var)
        if raw is None or raw == "":
            return
        try:
            value = kind(raw)
            if value <= 0:
                raise ValueError
            values[name] = value
        except ValueError:
            problems.append(f"{var}={raw!r}: expected a positive number")

    text("USAGELOG_KAFKA_MONITORED_TOPIC", "monitored_topic")
    text("USAGELOG_KAFKA_GROUP", "group")
    text("USAGELOG_KAFKA_DEAD_LETTER_TOPIC", "dead_letter_topic")
    text("USAGELOG_ARCHIVE_URL", "archive_url")
    text("USAGELOG_STATE_DIR", "state_dir")
    text("USAGELOG_WORKER_ID", "worker_id")
    number("USAGELOG_BATCH_MAX_MESSAGES", "batch_max_messages", int)
    number("USAGELOG_BATCH_MAX_SECONDS", "batch_max_seconds", float)
    number("USAGELOG_ARCHIVE_MAX_BYTES", "archive_max_bytes", int)
    number("USAGELOG_ARCHIVE_MAX_SECONDS", "archive_max_seconds", float)
    number("USAGELOG_HEALTH_INTERVAL_SECONDS", "health_interval", float)
    fmt = env.get("USAGELOG_ARCHIVE_FORMAT", "parquet").strip().lower()
    if fmt not in ("parquet", "csv"):
        problems.append(f"USAGELOG_ARCHIVE_FORMAT={fmt!r}: expected parquet or csv")
    values["archive_format"] = fmt
    try:
        values["kafka_config"] = _parse_pairs(env.get("USAGELOG_KAFKA_CONFIG", ""))
    except ValueError as exc:
        problems.append(f"USAGELOG_KAFKA_CONFIG: {exc}")

    url = clickhouse or env.get("USAGELOG_CLICKHOUSE_URL") or default_url()
    problem = validate_url(url)
    if problem:
        problems.append(f"{'--clickhouse' if clickhouse else 'USAGELOG_CLICKHOUSE_URL'}: {problem}")
    values["clickhouse_url"] = url
    values["database"] = database or env.get("USAGELOG_CLICKHOUSE_DATABASE") or DEFAULT_DATABASE
    values.update({k: v for k, v in overrides.items() if v is not None})
    if not values.get("worker_id"):
        host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
        values["worker_id"] = f"{host}-{os.getpid()}"
    elif not all(c.isalnum() or c in "._-" for c in values["worker_id"]):
        problems.append(f"USAGELOG_WORKER_ID={values['worker_id']!r}: use letters, digits, '.', '_' and '-'")
    if problems:
        raise SettingsError("; ".join(problems))
    return WorkerSettings(**values)
