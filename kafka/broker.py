"""A single-node Apache Kafka broker (KRaft, broker and controller in one JVM) on localhost.

Used by tests and local development of the collector → Kafka → ingest path. It starts and
watches the JVM with usagelog's process helper (:mod:`usagelog.process`, stdlib only): run it
with the project's virtualenv (``.venv/bin/python kafka/broker.py ...``); another Python 3 takes
the helper from this checkout. ``confluent_kafka`` is used when importable (readiness check,
topic creation) and the Kafka command-line tools are used otherwise.

As a library::

    with KafkaBroker(tmp_path) as broker:
        broker.create_topics(["usagelog.spans"], partitions=3)
        producer = Producer({"bootstrap.servers": broker.bootstrap})

As a command (the broker keeps running after ``start`` returns)::

    python kafka/broker.py [--workdir DIR] start      # prints 127.0.0.1:<port>
    python kafka/broker.py start --scram-user collector=SECRET --scram-user worker=SECRET2
                                                      # SASL_SSL (SCRAM-SHA-512) instead of PLAINTEXT
    python kafka/broker.py [--workdir DIR] create-topics [--partitions N] NAME...
    python kafka/broker.py [--workdir DIR] stop

Environment:
    USAGELOG_KAFKA_WORKDIR  CLI working directory (default: <tmp>/usagelog-kafka-<uid>)
    USAGELOG_CACHE_DIR      jar cache root, read by fetch.sh (default: ~/.cache/usagelog)
    USAGELOG_KAFKA_VERSION  Kafka version, read by fetch.sh (default: the one in pom.xml)
    JAVA_HOME               Java 17+ to run the broker with (default: ``java`` on PATH)

Everything the broker writes stays in the working directory: ``server.properties`` (from
``kafka/config/server.properties``), ``state.json`` (pid, ports, cluster id), ``data/`` and
``logs/server.log``.

Secured (``scram_users``): the client listener speaks SASL_SSL only, authenticating with
SCRAM-SHA-512 the users given (added to the metadata log when the storage is formatted) over
TLS with a throw-away CA made with ``openssl`` in ``<workdir>/tls/`` (``ca.crt`` is what clients
trust: :attr:`KafkaBroker.ca_file`). The broker's own SCRAM user and its random password are in
``<workdir>/client.properties`` (mode 0600), which :meth:`KafkaBroker.client_config` and the
Kafka tools use for administration.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import os
import re
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

try:
    from usagelog.process import Child, ProcessError, StateFile, free_port, listening, tail
except ImportError:  # a Python without usagelog installed: the checkout's copy (stdlib only)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ingest"))
    from usagelog.process import Child, ProcessError, StateFile, free_port, listening, tail

__all__ = ["BrokerError", "KafkaBroker"]

ENV_WORKDIR = "USAGELOG_KAFKA_WORKDIR"
FETCH_SCRIPT = Path(__file__).resolve().parent / "fetch.sh"
# server.properties (a template), log4j2.properties (the broker's), tools-log4j2.properties.
CONFIG_DIR = Path(__file__).resolve().parent / "config"

SERVER_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"
# The broker's own SCRAM user when secured (inter-broker traffic, topic administration).
ADMIN_USER = "usagelog-broker"
SCRAM_MECHANISM = "SCRAM-SHA-512"
# SCRAM names and passwords go into --add-scram 'SCRAM-SHA-512=[name=..,password=..]' and a
# JAAS line: keep to characters that need no quoting there.
_SCRAM_TEXT = re.compile(r"^[A-Za-z0-9._@+-]+$")
TOPIC_TOOL_MAIN = "org.apache.kafka.tools.TopicCommand"

# Printed by KafkaRaftServer once the broker is unfenced and serving clients.
STARTED_MARKER = "Kafka Server started"

try:  # Optional: only for a real metadata round trip and faster topic creation.
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # not re-exported in its stubs
        AdminClient,
        NewTopic,
    )

    HAVE_PYTHON_CLIENT = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_PYTHON_CLIENT = False


class BrokerError(RuntimeError):
    """The broker could not be fetched, started, reached or stopped."""


def _cluster_id() -> str:
    # Kafka's Uuid.randomUuid(): 16 random bytes, URL-safe base64, no padding. An id starting
    # with "-" would be read as an option by the storage tool, so draw again.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise BrokerError("java not found: install Java 17+ or set JAVA_HOME")
    return found


def fetch_jars() -> Path:
    """Run fetch.sh (a no-op once the jars are cached) and return the lib directory."""
    result = subprocess.run(["bash", str(FETCH_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or not lines:
        raise BrokerError(f"{FETCH_SCRIPT} failed (exit {result.returncode}); see its stderr")
    return Path(lines[-1])


class KafkaBroker:
    """One Kafka 4.x node acting as broker and KRaft controller, listening on 127.0.0.1.

    Options (all keyword-only):
        partitions: the broker's ``num.partitions`` (auto-created topics) and the default
            of :meth:`create_topics`; default 3.
        heap: the JVM's ``-Xmx``; default ``"512m"``.
        startup_timeout: seconds :meth:`start` waits for readiness; default 120.
        lib_dir: a directory of Kafka jars; default: what ``fetch.sh`` resolves.
        use_python_client: use ``confluent_kafka`` for readiness and topic creation; default:
            whether it is importable (``False`` uses the log line and ``TopicCommand``).
        scram_users: ``{name: password}``; when given, the client listener is SASL_SSL
            (SCRAM-SHA-512 over TLS) instead of PLAINTEXT. Users are added when the storage is
            formatted (the first start on a ``workdir``); later starts keep the first set.

    Ports are picked free at the first start and kept in ``state.json`` for :meth:`restart`
    and later starts on the same ``workdir``, so clients reconnect to the same address.
    A ``KafkaBroker`` made on the ``workdir`` of a running broker attaches to it.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        partitions: int = 3,
        heap: str = "512m",
        startup_timeout: float = 120.0,
        lib_dir: str | os.PathLike[str] | None = None,
        use_python_client: bool | None = None,
        scram_users: Mapping[str, str] | None = None,
    ) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        for name, password in (scram_users or {}).items():
            if name == ADMIN_USER or not _SCRAM_TEXT.match(name) or not _SCRAM_TEXT.match(password):
                raise ValueError(
                    f"SCRAM user {name!r}: names and passwords take letters, digits and ._@+- "
                    f"(and {ADMIN_USER!r} is the broker's own)"
                )
        self.scram_users = dict(scram_users or {})
        self.secured = bool(self.scram_users)
        self._new_admin_password: str | None = None  # until client.properties holds one
        self.workdir = Path(workdir).resolve()
        self.partitions = partitions
        self.heap = heap
        self.startup_timeout = startup_timeout
        self.lib_dir = Path(lib_dir) if lib_dir is not None else None
        self.use_python_client = HAVE_PYTHON_CLIENT if use_python_client is None else use_python_client
        if self.use_python_client and not HAVE_PYTHON_CLIENT:
            raise ValueError("use_python_client=True but confluent_kafka is not importable")
        self.port: int | None = None
        self.controller_port: int | None = None
        self.cluster_id: str | None = None
        self.pid: int | None = None
        self._process: Child | None = None
        self._load_state()

    # -- paths ------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "server.log"

    @property
    def _stdout_file(self) -> Path:
        return self.workdir / "logs" / "stdout.log"

    @property
    def _state_file(self) -> StateFile:
        return StateFile(self.workdir / "state.json")

    @property
    def tls_dir(self) -> Path:
        return self.workdir / "tls"

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM) clients of a secured broker trust."""
        return self.tls_dir / "ca.crt"

    @property
    def _client_properties(self) -> Path:
        return self.workdir / "client.properties"

    @property
    def security_protocol(self) -> str:
        """``SASL_SSL`` for a broker started with ``scram_users``, else ``PLAINTEXT``."""
        return "SASL_SSL" if self.secured else "PLAINTEXT"

    def client_config(self, username: str | None = None, password: str | None = None) -> dict[str, Any]:
        """librdkafka (confluent_kafka) settings to reach this broker: the bootstrap address
        and, when secured, SASL_SSL as ``username`` (default: the broker's own admin user)."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.secured:
            if username is None:
                username, password = ADMIN_USER, self._admin_password()
            config.update(
                {
                    "security.protocol": "SASL_SSL",
                    "sasl.mechanism": SCRAM_MECHANISM,
                    "sasl.username": username,
                    "sasl.password": password or "",
                    "ssl.ca.location": str(self.ca_file),
                }
            )
        return config

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:<port>`` for ``bootstrap.servers``."""
        if self.port is None:
            raise BrokerError("broker has not been started")
        return f"127.0.0.1:{self.port}"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, *, detach: bool = False) -> KafkaBroker:
        """Format storage if needed, launch the JVM and wait until clients can use it.

        With ``detach`` the broker gets its own session and outlives this Python process
        (the CLI's ``start``); otherwise it is stopped when the interpreter exits.
        """
        if self.is_running():
            raise BrokerError(f"broker already running (pid {self.pid}) at {self.bootstrap}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        if self.lib_dir is None:
            self.lib_dir = fetch_jars()
        formatted = (self.data_dir / "meta.properties").is_file()
        if not formatted or self.port is None or self.controller_port is None:
            # A fresh node: new ports and a new cluster id. Reusing old data with new ports
            # would leave a stale controller endpoint in the KRaft voter set.
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.port, self.controller_port = free_port(), free_port()
            while self.controller_port == self.port:
                self.controller_port = free_port()
            self.cluster_id = _cluster_id()
        if self.secured:
            self._make_tls_files()
            self._write_client_properties()
        self._write_config()
        if not formatted:
            self._format_storage()

        started = time.monotonic()
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self._process = Child.start(
            [
                _java(),
                f"-Xmx{self.heap}",
                "-Xms128m",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={CONFIG_DIR / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.workdir / 'logs'}",
                "-cp",
                str(self.lib_dir / "*"),
                SERVER_MAIN,
                str(self.workdir / "server.properties"),
            ],
            log=self._stdout_file,
            name="broker",
            append=True,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
        )
        self.pid = self._process.pid
        self._save_state()
        try:
            self._wait_ready(log_offset, started)
        except BaseException:
            self.kill()
            raise
        if not detach:
            atexit.register(self._stop_at_exit)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (controlled shutdown), then SIGKILL if it has not exited within ``timeout``."""
        if self._process is not None:
            self._process.stop(timeout)
        self._forget_process()

    def kill(self) -> None:
        """SIGKILL without a clean shutdown, as in a crash; data on disk is kept."""
        if self._process is not None:
            self._process.kill()
        self._forget_process()

    def restart(self, timeout: float = 30.0) -> KafkaBroker:
        """Stop (if running) and start again on the same ports, cluster id and data."""
        self.stop(timeout)
        return self.start()

    def is_running(self) -> bool:
        return self._process is not None and self._process.running()

    def __enter__(self) -> KafkaBroker:
        return self if self.is_running() else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- topics -----------------------------------------------------------------------------

    def create_topics(self, names: Iterable[str], partitions: int | None = None) -> None:
        """Create topics (replication factor 1); topics that already exist are left as they are."""
        names = list(names)
        count = self.partitions if partitions is None else partitions
        if count < 1:
            raise ValueError(f"partitions must be >= 1, got {count}")
        if self.use_python_client:
            self._create_topics_admin(names, count)
        else:
            self._create_topics_tool(names, count)

    def _create_topics_admin(self, names: list[str], count: int) -> None:
        admin = AdminClient(self.client_config())
        futures = admin.create_topics(
            [NewTopic(n, num_partitions=count, replication_factor=1) for n in names],
            operation_timeout=30,
        )
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BrokerError(f"creating topic {name!r} failed: {exc}") from exc
        # The controller acknowledges before the broker has loaded the partitions; wait for
        # leaders so that the first produce does not race the partition load.
        deadline = time.monotonic() + 30
        while True:
            topics = admin.list_topics(timeout=5).topics
            if all(
                n in topics
                and topics[n].error is None
                and topics[n].partitions
                and all(p.leader >= 0 for p in topics[n].partitions.values())
                for n in names
            ):
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"topics {names} have no leaders after 30s")
            time.sleep(0.1)

    def _create_topics_tool(self, names: list[str], count: int) -> None:
        for name in names:
            result = self._run_tool(
                TOPIC_TOOL_MAIN,
                [
                    *("--bootstrap-server", self.bootstrap, "--create", "--if-not-exists"),
                    *(("--command-config", str(self._client_properties)) if self.secured else ()),
                    *("--topic", name, "--partitions", str(count), "--replication-factor", "1"),
                ],
            )
            if result.returncode != 0:
                raise BrokerError(f"creating topic {name!r} failed:\n{result.stdout}")

    # -- internals --------------------------------------------------------------------------

    def _write_config(self) -> None:
        template = string.Template((CONFIG_DIR / "server.properties").read_text())
        values = {
            "port": self.port,
            "controller_port": self.controller_port,
            "data_dir": self.data_dir,
            "partitions": self.partitions,
        }
        text = template.substitute(values)
        if self.secured:
            secured = string.Template((CONFIG_DIR / "sasl_ssl.properties").read_text())
            text += "\n" + secured.substitute(
                values,
                tls_dir=self.tls_dir,
                admin_user=ADMIN_USER,
                admin_password=self._admin_password(),
            )
        # 0600 from the start: it holds the broker's SCRAM password when secured.
        fd = os.open(self.workdir / "server.properties", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # also when an earlier version left it readable
        with os.fdopen(fd, "w") as file:
            file.write(text)

    def _admin_password(self) -> str:
        """The broker's own SCRAM password, kept in client.properties (made on first use)."""
        try:
            for line in self._client_properties.read_text().splitlines():
                match = re.search(r'password="([^"]+)"', line)
                if match:
                    return match.group(1)
        except OSError:
            pass
        if self._new_admin_password is None:
            self._new_admin_password = secrets.token_urlsafe(24)
        return self._new_admin_password

    def _write_client_properties(self) -> None:
        """Settings for Kafka's Java tools (``--command-config``) as the broker's admin user."""
        text = (
            "security.protocol=SASL_SSL\n"
            f"sasl.mechanism={SCRAM_MECHANISM}\n"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN_USER}" password="{self._admin_password()}";\n'
            "ssl.truststore.type=PEM\n"
            f"ssl.truststore.location={self.ca_file}\n"
        )
        fd = os.open(self._client_properties, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)

    def _make_tls_files(self) -> None:
        """A throw-away CA and a certificate for 127.0.0.1/localhost it signed, once per workdir."""
        broker_pem = self.tls_dir / "broker.pem"
        if broker_pem.is_file() and self.ca_file.is_file():
            return
        openssl = shutil.which("openssl")
        if not openssl:
            raise BrokerError("openssl not found: a broker with scram_users needs it for its certificate")
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        self.tls_dir.chmod(0o700)
        d = self.tls_dir
        (d / "broker.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        ca, ca_key = str(d / "ca.crt"), str(d / "ca.key")
        key, csr, crt = str(d / "broker.key"), str(d / "broker.csr"), str(d / "broker.crt")
        ca_extensions = ["-addext", "basicConstraints=critical,CA:TRUE"]
        ca_extensions += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        steps = [
            ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-subj", "/CN=usagelog test Kafka CA", *ca_extensions, "-keyout", ca_key, "-out", ca],
            ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", key, "-out", csr],
            ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "30",
             "-extfile", str(d / "broker.ext"), "-out", crt],
        ]  # fmt: skip
        for step in steps:
            result = subprocess.run([openssl, *step], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise BrokerError(f"openssl {step[0]} failed:\n{result.stderr}")
        # Kafka's PEM keystore: the (PKCS#8, unencrypted) key followed by its certificate.
        broker_pem.write_text((d / "broker.key").read_text() + (d / "broker.crt").read_text())
        broker_pem.chmod(0o600)

    def _format_storage(self) -> None:
        assert self.cluster_id is not None
        config = str(self.workdir / "server.properties")
        scram: list[str] = []
        if self.secured:
            users = {ADMIN_USER: self._admin_password(), **self.scram_users}
            for name, password in users.items():
                scram += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
        result = self._run_tool(
            STORAGE_TOOL_MAIN,
            ["format", "--cluster-id", self.cluster_id, "--config", config, "--standalone", *scram],
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting {self.data_dir} failed:\n{result.stdout}")

    def _run_tool(self, main: str, args: list[str]) -> subprocess.CompletedProcess[str]:
        assert self.lib_dir is not None
        return subprocess.run(
            [
                _java(),
                "-Xmx256m",
                # Short-lived JVMs: the first JIT tier and a simple GC start faster.
                "-XX:TieredStopAtLevel=1",
                "-XX:+UseSerialGC",
                f"-Dlog4j2.configurationFile={CONFIG_DIR / 'tools-log4j2.properties'}",
                "-cp",
                str(self.lib_dir / "*"),
                main,
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )

    def _wait_ready(self, log_offset: int, started: float) -> None:
        assert self._process is not None and self.port is not None
        port = self.port
        try:
            self._process.wait_until(
                lambda: listening(port, timeout=1) and self._answers_metadata(log_offset),
                max(0.0, started + self.startup_timeout - time.monotonic()),
                "the broker to answer",
            )
        except ProcessError as exc:
            what = (
                "broker exited during startup"
                if exc.exited
                else f"broker not ready after {self.startup_timeout:.0f}s"
            )
            raise BrokerError(self._describe_failure(what, log_offset)) from None

    def _answers_metadata(self, log_offset: int) -> bool:
        if self.use_python_client:
            # log_level 0: connection errors while polling are expected, keep stderr quiet.
            admin = AdminClient({**self.client_config(), "log_level": 0})
            try:
                return bool(admin.list_topics(timeout=2).brokers)
            except KafkaException:
                return False
        # Without a client, trust the server's own announcement in this run's part of the log.
        try:
            with self.log_file.open("rb") as log:
                log.seek(log_offset)
                return STARTED_MARKER.encode() in log.read()
        except OSError:
            return False

    def _describe_failure(self, what: str, log_offset: int) -> str:
        # Kafka logs the cause once and then pages of shutdown noise: lead with the first
        # error and the exception line under it.
        first_error = ""
        try:
            with self.log_file.open("rb") as log:
                log.seek(log_offset)
                lines = log.read().decode(errors="replace").splitlines()
        except OSError:
            lines = []
        for i, line in enumerate(lines):
            if "] ERROR " in line:
                first_error = "first error: " + "\n  ".join(lines[i : i + 2]) + "\n"
                break
        return (
            f"{what} (workdir {self.workdir})\n{first_error}"
            f"--- tail of {self.log_file} ---\n{tail(self.log_file)}\n"
            f"--- tail of {self._stdout_file} ---\n{tail(self._stdout_file, 20)}"
        )

    def _stop_at_exit(self) -> None:
        # The interpreter is exiting: there is nobody left to report a failure to.
        with contextlib.suppress(Exception):
            self.stop(timeout=10.0)

    def _forget_process(self) -> None:
        self._process = None
        self.pid = None
        atexit.unregister(self._stop_at_exit)
        if self.workdir.exists():
            self._save_state()

    def _save_state(self) -> None:
        state = {
            "pid": self.pid,
            "port": self.port,
            "controller_port": self.controller_port,
            "cluster_id": self.cluster_id,
            "bootstrap": f"127.0.0.1:{self.port}",
            "security_protocol": self.security_protocol,
            "lib_dir": str(self.lib_dir) if self.lib_dir else None,
        }
        self._state_file.save(state)

    def _load_state(self) -> None:
        state = self._state_file.load()
        if not state:
            return
        self.pid = state.get("pid")
        self.port = state.get("port")
        self.controller_port = state.get("controller_port")
        self.cluster_id = state.get("cluster_id")
        # A broker secured at its first start stays secured (its users are in the metadata log).
        self.secured = self.secured or state.get("security_protocol") == "SASL_SSL"
        if self.lib_dir is None and state.get("lib_dir"):
            self.lib_dir = Path(state["lib_dir"])
        if self.pid is not None:
            # Attached to a broker another process started: the pid counts only while it is
            # still our JVM (its command line names this workdir), not a reused pid.
            self._process = Child.attach(
                self.pid,
                name="broker",
                marker=str(self.workdir / "server.properties"),
                log=self._stdout_file,
            )


def _default_workdir() -> Path:
    configured = os.environ.get(ENV_WORKDIR)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"usagelog-kafka-{os.getuid()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        default=_default_workdir(),
        help=f"broker state, data and logs (env {ENV_WORKDIR}; default %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start in the background; print the bootstrap")
    start.add_argument("--partitions", type=int, default=3, help="num.partitions (default 3)")
    start.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (120)")
    start.add_argument(
        "--scram-user",
        action="append",
        default=[],
        metavar="NAME=PASSWORD",
        help="serve SASL_SSL (SCRAM-SHA-512 over TLS) instead of PLAINTEXT, with this user (repeatable)",
    )
    commands.add_parser("stop", help="stop the broker started in --workdir")
    create = commands.add_parser("create-topics", help="create topics on the running broker")
    create.add_argument("--partitions", type=int, default=3, help="partitions (default 3)")
    create.add_argument("names", nargs="+", metavar="NAME")
    args = parser.parse_args(argv)

    try:
        if args.command == "start":
            users = dict(item.partition("=")[::2] for item in args.scram_user)
            broker = KafkaBroker(
                args.workdir, partitions=args.partitions, startup_timeout=args.timeout, scram_users=users
            )
            broker.start(detach=True)
            print(broker.bootstrap)
            if broker.secured:
                print(f"SASL_SSL (SCRAM-SHA-512); CA certificate {broker.ca_file}", file=sys.stderr)
        elif args.command == "stop":
            KafkaBroker(args.workdir).stop()
        else:
            broker = KafkaBroker(args.workdir)
            if not broker.is_running():
                raise BrokerError(f"no broker running in {args.workdir}; run `start` first")
            broker.create_topics(args.names, partitions=args.partitions)
    except (BrokerError, ValueError) as exc:
        print(f"broker.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
