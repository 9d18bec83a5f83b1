"""How the Kafka worker, ``usagelog tail`` and ``usagelog replay`` authenticate to Kafka and
encrypt the connection: TLS and SASL from ``USAGELOG_KAFKA_*`` variables (each process with its
own user). The collector's ``kafka-sasl.yaml`` overlay reads the same ``_SASL_USERNAME``,
``_SASL_PASSWORD``, ``_SASL_MECHANISM`` and ``_CA_FILE``, always with SASL_SSL.

- ``USAGELOG_KAFKA_SECURITY_PROTOCOL`` (default ``SASL_SSL`` when a SASL user is set, else
  ``PLAINTEXT``): ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``
- ``USAGELOG_KAFKA_SASL_MECHANISM`` (default ``SCRAM-SHA-512``): ``SCRAM-SHA-512``,
  ``SCRAM-SHA-256`` or ``PLAIN``
- ``USAGELOG_KAFKA_SASL_USERNAME`` (required with ``SASL_*``): the Kafka user
- ``USAGELOG_KAFKA_SASL_PASSWORD`` or ``USAGELOG_KAFKA_SASL_PASSWORD_FILE`` (one of them
  required with ``SASL_*``): its password, or a file holding it (e.g. a Docker secret; one
  trailing newline is ignored). The password never appears in a message, a log line or a repr.
- ``USAGELOG_KAFKA_CA_FILE`` (default empty: the system's CAs): PEM CA bundle the brokers'
  certificates chain to, for ``SSL`` and ``SASL_SSL``

``USAGELOG_KAFKA_CONFIG`` (raw librdkafka settings) is applied after these and wins where both
set the same key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KafkaSecurity", "read_kafka_security"]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")

SECURITY_PROTOCOL = "USAGELOG_KAFKA_SECURITY_PROTOCOL"
SASL_MECHANISM = "USAGELOG_KAFKA_SASL_MECHANISM"
SASL_USERNAME = "USAGELOG_KAFKA_SASL_USERNAME"
SASL_PASSWORD = "USAGELOG_KAFKA_SASL_PASSWORD"
SASL_PASSWORD_FILE = "USAGELOG_KAFKA_SASL_PASSWORD_FILE"
CA_FILE = "USAGELOG_KAFKA_CA_FILE"


@dataclass(frozen=True)
class KafkaSecurity:
    """TLS and SASL settings for librdkafka; the default is plaintext without a login."""

    protocol: str = ""  # empty: librdkafka's default (PLAINTEXT)
    mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def librdkafka(self) -> dict[str, Any]:
        """The librdkafka (confluent_kafka) settings these amount to."""
        config: dict[str, Any] = {}
        if self.protocol:
            config["security.protocol"] = self.protocol
        if self.sasl:
            config.update(
                {
                    "sasl.mechanism": self.mechanism,
                    "sasl.username": self.username,
                    "sasl.password": self.password,
                }
            )
        if self.tls and self.ca_file:
            config["ssl.ca.location"] = self.ca_file
        return config

    def describe(self) -> str:
        """For a log line: the protocol, mechanism and user, never the password."""
        if not self.protocol or self.protocol == "PLAINTEXT":
            return "PLAINTEXT"
        text = self.protocol
        if self.sasl:
            text += f" ({self.mechanism} as {self.username})"
        return text


def read_kafka_security(env: Mapping[str, str], problems: list[str]) -> KafkaSecurity:
    """The settings from ``env``; every problem is appended to ``problems``, naming its variable."""

    def get(var: str) -> str:
        return env.get(var, "").strip()

    username = get(SASL_USERNAME)
    protocol = get(SECURITY_PROTOCOL).upper() or ("SASL_SSL" if username else "")
    if protocol and protocol not in PROTOCOLS:
        problems.append(
            f"{SECURITY_PROTOCOL}={get(SECURITY_PROTOCOL)!r}: expected one of {', '.join(PROTOCOLS)}"
        )
        protocol = ""
    mechanism = get(SASL_MECHANISM).upper() or KafkaSecurity.mechanism
    if mechanism not in MECHANISMS:
        problems.append(f"{SASL_MECHANISM}={get(SASL_MECHANISM)!r}: expected one of {', '.join(MECHANISMS)}")
        mechanism = KafkaSecurity.mechanism
    password = _password(env, problems)
    if protocol.startswith("SASL_"):
        if not username:
            problems.append(f"{SASL_USERNAME} is required with {SECURITY_PROTOCOL}={protocol}")
        if not password and not get(SASL_PASSWORD_FILE):
            problems.append(
                f"{SASL_PASSWORD} (or {SASL_PASSWORD_FILE}) is required with {SECURITY_PROTOCOL}={protocol}"
            )
    elif username or password:
        # Credentials that would silently not be used are a mistake worth stopping for.
        problems.append(
            f"{SASL_USERNAME}/{SASL_PASSWORD} are set but {SECURITY_PROTOCOL}={protocol} uses no SASL"
        )
    ca_file = get(CA_FILE)
    if ca_file:
        if protocol not in ("SSL", "SASL_SSL"):
            problems.append(f"{CA_FILE} is set but {SECURITY_PROTOCOL}={protocol or 'PLAINTEXT'} uses no TLS")
        elif not os.path.isfile(ca_file) or not os.access(ca_file, os.R_OK):
            problems.append(f"{CA_FILE}={ca_file!r}: not a readable file")
    return KafkaSecurity(protocol, mechanism, username, password, ca_file)


def _password(env: Mapping[str, str], problems: list[str]) -> str:
    path = env.get(SASL_PASSWORD_FILE, "").strip()
    given = env.get(SASL_PASSWORD, "")
    if not path:
        return given
    if given:
        problems.append(f"{SASL_PASSWORD} and {SASL_PASSWORD_FILE} are both set; use one")
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{SASL_PASSWORD_FILE}={path!r}: cannot read it ({exc.__class__.__name__})")
        return ""
    text = text[:-1] if text.endswith("\n") else text
    if not text:
        problems.append(f"{SASL_PASSWORD_FILE}={path!r}: the file is empty")
    return text
