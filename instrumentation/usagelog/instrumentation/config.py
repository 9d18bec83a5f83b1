"""In-app settings: one frozen object built from ``USAGELOG_*`` environment variables.

Precedence is keyword argument > environment variable > default. An invalid environment
value never raises: it logs one warning naming the variable and falls back to the
default, because a typo in a deployment must not take the user's API down. An invalid
keyword argument passed in code raises ``ValueError`` at setup, where the developer sees it.

``OTEL_*`` variables are left to the OpenTelemetry SDK and honoured as they are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

_logger = logging.getLogger("usagelog")

# Every variable the instrumentation reads, with its default, in one place.
USAGELOG_ENABLED = "USAGELOG_ENABLED"
"""``true`` (default) | ``false``: turns usage logging off entirely."""
USAGELOG_EXPORTER = "USAGELOG_EXPORTER"
"""``otlp`` (default): OTLP to a collector, spooling what cannot be sent; ``spool``: write to the
on-disk spool only, for the embedded single-machine setup."""
USAGELOG_SPOOL_DIR = "USAGELOG_SPOOL_DIR"
"""Directory of the durable spool (default ``.usagelog/spool``). Several processes may share it."""
USAGELOG_USER_ID_FROM = "USAGELOG_USER_ID_FROM"
"""Ordered user ID sources, first non-empty wins (default ``jwt:sub,basic``): ``jwt:<claim>``,
``basic``, ``header:<Name>``, ``g:<attr>``, ``callable:<module>:<function>``."""
USAGELOG_CAPTURE_BODY = "USAGELOG_CAPTURE_BODY"
"""``none`` (default) | ``monitored`` | ``all``: which events carry (redacted) bodies."""
USAGELOG_BODY_MAX_BYTES = "USAGELOG_BODY_MAX_BYTES"
"""Bodies are truncated at this many bytes (default 4096)."""
USAGELOG_REDACT_FIELDS = "USAGELOG_REDACT_FIELDS"
"""Extra field/parameter/header names to redact, comma-separated (built-in list always applies)."""
USAGELOG_MONITOR = "USAGELOG_MONITOR"
"""Rules marking events ``monitored``: ``user:<glob>``, ``route:<glob>``, ``path:<glob>``, comma-separated."""
USAGELOG_FLUSH_INTERVAL_MS = "USAGELOG_FLUSH_INTERVAL_MS"
"""How often the background thread encodes and writes queued events (default 200 ms)."""
USAGELOG_MAX_QUEUE = "USAGELOG_MAX_QUEUE"
"""Events held in memory before a request thread writes the backlog itself (default 20000)."""
USAGELOG_MAX_QUEUE_BYTES = "USAGELOG_MAX_QUEUE_BYTES"
"""Estimated bytes of events held in memory (default 64 MiB): beyond it a request thread writes
the backlog itself, and if nothing can be written the newest events are dropped, counted and
reported as lost (never silently)."""
USAGELOG_JOURNAL = "USAGELOG_JOURNAL"
"""``false`` (default) | ``true``: the request thread writes each event to a per-instance journal
in the spool directory (the page cache) before it returns, so a process kill loses no answered
request; costs an encoding and a ``write`` per request (see ``docs/inapp-loss.md``)."""
USAGELOG_SPOOL_SEGMENT_BYTES = "USAGELOG_SPOOL_SEGMENT_BYTES"
"""A spool segment is sealed (made ready for ingest) at this size (default 8 MiB)."""
USAGELOG_SPOOL_SEGMENT_SECONDS = "USAGELOG_SPOOL_SEGMENT_SECONDS"
"""... or at this age, whichever comes first (default 1 s: what an event waits before ingest can
read it; see docs/benchmarks.md, "Freshness")."""
USAGELOG_SPOOL_FSYNC = "USAGELOG_SPOOL_FSYNC"
"""``true`` (default): fsync every spool write, so a machine crash loses nothing written."""
USAGELOG_USER_ID_HMAC_KEY = "USAGELOG_USER_ID_HMAC_KEY"
"""Empty (default): user IDs are stored as they are. Set: user IDs (and claimed IDs) are stored as
the keyed pseudonym HMAC-SHA256(key, ID), first 32 hex digits; every instance given the same key
gives a user the same pseudonym. ``USAGELOG_MONITOR`` ``user:`` rules still match the real ID."""
USAGELOG_CLIENT_IP = "USAGELOG_CLIENT_IP"
"""``full`` (default): the client address as the server saw it; ``truncate``: IPv4 to its /24,
IPv6 to its /48 (``203.0.113.0``, ``2001:db8:1::``); ``none``: not recorded."""
USAGELOG_JWT_KEY = "USAGELOG_JWT_KEY"
"""Empty (default): ``jwt:`` user IDs are read without checking the signature (the app is trusted
to have done so). Set: the key JWTs must be signed with, an HS256/384/512 shared secret or a PEM
public key (RSA for RS256/384/512, EC P-256 for ES256); a token that does not verify (or has
expired) gives no user ID, only a claimed one."""
USAGELOG_JWT_KEY_FILE = "USAGELOG_JWT_KEY_FILE"
"""A file holding the ``USAGELOG_JWT_KEY`` value (a PEM file, or a secret: its trailing newline is
ignored), read at start."""
USAGELOG_JWT_JWKS = "USAGELOG_JWT_JWKS"
"""A JWKS (JSON Web Key Set) to verify JWTs with, as a file path or an ``http(s)://`` URL: read
by the background thread (never on the request path), cached an hour, re-read at most once a
minute when a token names an unknown ``kid``. Combines with ``USAGELOG_JWT_KEY``."""

ALL_VARIABLES = (
    USAGELOG_ENABLED,
    USAGELOG_EXPORTER,
    USAGELOG_SPOOL_DIR,
    USAGELOG_USER_ID_FROM,
    USAGELOG_CAPTURE_BODY,
    USAGELOG_BODY_MAX_BYTES,
    USAGELOG_REDACT_FIELDS,
    USAGELOG_MONITOR,
    USAGELOG_FLUSH_INTERVAL_MS,
    USAGELOG_MAX_QUEUE,
    USAGELOG_MAX_QUEUE_BYTES,
    USAGELOG_JOURNAL,
    USAGELOG_SPOOL_SEGMENT_BYTES,
    USAGELOG_SPOOL_SEGMENT_SECONDS,
    USAGELOG_SPOOL_FSYNC,
    USAGELOG_USER_ID_HMAC_KEY,
    USAGELOG_CLIENT_IP,
    USAGELOG_JWT_KEY,
    USAGELOG_JWT_KEY_FILE,
    USAGELOG_JWT_JWKS,
)
# Their values are never echoed in a warning or an error.
SECRET_VARIABLES = frozenset({USAGELOG_USER_ID_HMAC_KEY, USAGELOG_JWT_KEY})

EXPORTERS = ("otlp", "spool")
CAPTURE_MODES = ("none", "monitored", "all")
CLIENT_IP_MODES = ("full", "truncate", "none")
DEFAULT_SPOOL_DIR = ".usagelog/spool"

_T = TypeVar("_T")


class ConfigError(ValueError):
    """A setting has an invalid value; the message names the variable or argument."""


@dataclass(frozen=True)
class Settings:
    """Resolved instrumentation settings (see the module constants for each variable)."""

    enabled: bool = True
    exporter: str = "otlp"
    spool_dir: str = DEFAULT_SPOOL_DIR
    user_id_from: tuple[str, ...] = ("jwt:sub", "basic")
    capture_body: str = "none"
    body_max_bytes: int = 4096
    redact_fields: tuple[str, ...] = ()
    monitor: tuple[str, ...] = ()
    flush_interval_ms: int = 200
    max_queue: int = 20000
    max_queue_bytes: int = 64 * 1024 * 1024
    journal: bool = False
    spool_segment_bytes: int = 8 * 1024 * 1024
    spool_segment_seconds: float = 1.0
    spool_fsync: bool = True
    user_id_hmac_key: str = field(default="", repr=False)
    client_ip: str = "full"
    jwt_key: str = field(default="", repr=False)
    jwt_key_file: str = ""
    jwt_jwks: str = ""
    warnings: tuple[str, ...] = field(default=(), compare=False)


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _parse_choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return value

    return parse


def _parse_positive_int(raw: str) -> int:
    value = int(raw.strip())
    if value <= 0:
        raise ValueError("expected a positive integer")
    return value


def _parse_positive_float(raw: str) -> float:
    value = float(raw.strip())
    if not value > 0:
        raise ValueError("expected a positive number")
    return value


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _parse_user_sources(raw: str) -> tuple[str, ...]:
    from .userid import validate_sources  # local: userid imports config for the logger only

    sources = _parse_list(raw)
    validate_sources(sources)
    return sources


def _parse_monitor(raw: str) -> tuple[str, ...]:
    from .monitor import validate_rules

    rules = _parse_list(raw)
    validate_rules(rules)
    return rules


def _parse_dir(raw: str) -> str:
    if not raw.strip():
        raise ValueError("expected a directory path")
    return raw.strip()


def _parse_secret(raw: str) -> str:
    if not raw.strip():
        raise ValueError("expected a non-empty key")
    return raw


def _parse_jwt_key(raw: str) -> str:
    from .jwtverify import parse_key  # local: only deployments that verify JWTs load it

    parse_key(raw)
    return raw


def _parse_jwt_key_file(raw: str) -> str:
    from .jwtverify import parse_key

    path = raw.strip()
    try:
        with open(path, encoding="utf-8") as f:
            parse_key(f.read())
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    return path


def _parse_jwks(raw: str) -> str:
    source = raw.strip()
    if not source:
        raise ValueError("expected a file path or an http(s) URL")
    return source


_PARSERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    USAGELOG_ENABLED: ("enabled", _parse_bool),
    USAGELOG_EXPORTER: ("exporter", _parse_choice(EXPORTERS)),
    USAGELOG_SPOOL_DIR: ("spool_dir", _parse_dir),
    USAGELOG_USER_ID_FROM: ("user_id_from", _parse_user_sources),
    USAGELOG_CAPTURE_BODY: ("capture_body", _parse_choice(CAPTURE_MODES)),
    USAGELOG_BODY_MAX_BYTES: ("body_max_bytes", _parse_positive_int),
    USAGELOG_REDACT_FIELDS: ("redact_fields", _parse_list),
    USAGELOG_MONITOR: ("monitor", _parse_monitor),
    USAGELOG_FLUSH_INTERVAL_MS: ("flush_interval_ms", _parse_positive_int),
    USAGELOG_MAX_QUEUE: ("max_queue", _parse_positive_int),
    USAGELOG_MAX_QUEUE_BYTES: ("max_queue_bytes", _parse_positive_int),
    USAGELOG_JOURNAL: ("journal", _parse_bool),
    USAGELOG_SPOOL_SEGMENT_BYTES: ("spool_segment_bytes", _parse_positive_int),
    USAGELOG_SPOOL_SEGMENT_SECONDS: ("spool_segment_seconds", _parse_positive_float),
    USAGELOG_SPOOL_FSYNC: ("spool_fsync", _parse_bool),
    USAGELOG_USER_ID_HMAC_KEY: ("user_id_hmac_key", _parse_secret),
    USAGELOG_CLIENT_IP: ("client_ip", _parse_choice(CLIENT_IP_MODES)),
    USAGELOG_JWT_KEY: ("jwt_key", _parse_jwt_key),
    USAGELOG_JWT_KEY_FILE: ("jwt_key_file", _parse_jwt_key_file),
    USAGELOG_JWT_JWKS: ("jwt_jwks", _parse_jwks),
}
_FIELD_TO_VAR = {name: var for var, (name, _) in _PARSERS.items()}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from keyword overrides, then ``USAGELOG_*`` variables, then defaults.

    Bad environment values warn (one warning per variable, naming it) and fall back;
    bad keyword overrides raise :class:`ConfigError`.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for var, (name, parse) in _PARSERS.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        try:
            values[name] = parse(raw)
        except (ValueError, ImportError) as exc:
            default = getattr(Settings, name)
            shown = "<hidden>" if var in SECRET_VARIABLES else repr(raw)
            message = f"usagelog: ignoring {var}={shown} ({exc}); using the default {default!r}"
            warnings.append(message)
            _logger.warning(message)
    for name, value in overrides.items():
        if name not in _FIELD_TO_VAR:
            raise ConfigError(f"unknown usagelog setting {name!r}")
        if value is None:
            continue
        _, parse = _PARSERS[_FIELD_TO_VAR[name]]
        try:
            if isinstance(value, (list, tuple)):
                value = parse(",".join(str(v) for v in value))
            elif not isinstance(value, str):
                value = parse(str(value).lower() if isinstance(value, bool) else str(value))
            else:
                value = parse(value)
        except ValueError as exc:
            raise ConfigError(f"invalid value for {name} (env {_FIELD_TO_VAR[name]}): {exc}") from exc
        values[name] = value
    return Settings(**values, warnings=tuple(warnings))
