"""The errors usagelog raises at its boundary, one type per kind of problem.

Exceptions of the libraries underneath (``clickhouse_connect``, ``confluent_kafka``) are
translated where they enter usagelog, so a caller — the ``usagelog`` command, a script using
:mod:`usagelog.analytics`, a test — catches these and never a library's own::

    UsagelogError
    ├── SettingsError     a setting, option or argument is invalid; the message names each one
    │                     (the CLI exits 2, as for bad usage)
    ├── StoreError        ClickHouse cannot be reached or opened: server down, wrong credentials,
    │                     a chDB directory another process kept busy for too long
    ├── QueryError        ClickHouse refused a statement: bad SQL, an unknown table or column,
    │                     a read-only violation; the message is the engine's own
    ├── KafkaError        Kafka did not answer, lacks the topic asked for, or its client refused
    │                     the configuration
    ├── ArchiveError      the archive's staging folder is held by another process with the same
    │                     USAGELOG_WORKER_ID, the archive was used after it was closed, or its
    │                     object store refused the credentials
    │   └── ArchiveUnavailable  the archive's object store did not answer (down, unreachable, 5xx):
    │                     what was staged stays staged until it is back
    └── DashboardError    (usagelog.dashboards.model) a dashboard or alert rule file is missing,
                          unreadable, or asks for something usagelog cannot do offline

Every message is one line a person can act on; the CLI prints it as ``usagelog: <message>``
and exits 1 (2 for :class:`SettingsError`). Anything else escaping is a bug and keeps its
traceback.

The classes also derive from the builtin that code caught before they existed
(``ValueError`` for settings, ``RuntimeError`` for the store and Kafka), so that code still works.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "ArchiveError",
    "ArchiveUnavailable",
    "KafkaError",
    "QueryError",
    "SettingsError",
    "StoreError",
    "UsagelogError",
    "check_reachable",
    "kafka_errors",
]


class UsagelogError(Exception):
    """Base class of every error usagelog reports to its caller."""


class SettingsError(UsagelogError, ValueError):
    """One or more settings are invalid; the message lists each, naming its variable or option."""


class StoreError(UsagelogError, RuntimeError):
    """ClickHouse could not be reached or opened; the message says what to do."""


class QueryError(UsagelogError):
    """ClickHouse refused a statement (bad SQL, unknown table); the message is the engine's."""


class KafkaError(UsagelogError, RuntimeError):
    """Kafka did not answer, lacks the topic asked for, or refused the client's settings."""


class ArchiveError(UsagelogError, RuntimeError):
    """The archive cannot be used as asked (staging folder busy, archive closed, credentials refused)."""


class ArchiveUnavailable(ArchiveError):
    """The archive's object store could not be reached; staged chunks are kept for a later try."""


@contextmanager
def kafka_errors(brokers: str) -> Iterator[None]:
    """Translate ``confluent_kafka`` exceptions raised inside the block into :class:`KafkaError`.

    Around client creation (a bad ``USAGELOG_KAFKA_CONFIG`` key) and the calls that talk to the
    brokers (metadata, offsets, commits).
    """
    from confluent_kafka import KafkaException

    from .redact import redact, redact_url

    try:
        yield
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        text = error.str() if hasattr(error, "str") else str(error)
        raise KafkaError(f"Kafka at {redact_url(brokers)}: {redact(text)}") from exc


def check_reachable(client: Any, brokers: str, timeout: float) -> Any:
    """The cluster's metadata from ``client`` (a consumer or producer), or :class:`KafkaError`
    when no broker answered within ``timeout`` seconds. Asks for no topic in particular, so a
    broker that creates topics on demand creates none."""
    from confluent_kafka import KafkaException

    from .redact import redact, redact_url

    try:
        return client.list_topics(timeout=timeout)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        text = error.str() if hasattr(error, "str") else str(error)
        raise KafkaError(
            f"Kafka at {redact_url(brokers)} did not answer within {timeout:g}s ({redact(text)}): "
            "is the broker running, and is the address right?"
        ) from exc
