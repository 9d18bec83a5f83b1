"""Child processes that usagelog's own tools start and watch: the local Kafka broker
(``kafka/broker.py``), the demo's API instances, the test pipeline (the collector binary, ingest
workers) and the benchmarks' servers.

One shape for all of them:

- :meth:`Child.start` runs a command with its output (stdout and stderr) going to a log file;
- :meth:`Child.wait_listening` and :meth:`Child.wait_until` wait until a TCP port accepts
  connections or a condition holds, and fail at once, quoting the log's tail, if the child
  exits first (:class:`ProcessError`);
- :meth:`Child.stop` sends SIGTERM and, after a timeout, SIGKILL; :meth:`Child.kill` SIGKILLs;
- :func:`free_port` picks a free localhost port for a server (one no outgoing connection
  takes meanwhile);
- :class:`StateFile` keeps a detached child's pid (and its ports, say) as JSON, so that a later
  process finds it again with :meth:`Child.attach`.

Stdlib only (and :mod:`usagelog.wait`), so that the broker script runs from a checkout too.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from usagelog.wait import wait_until

__all__ = ["Child", "ProcessError", "StateFile", "free_port", "listening", "tail"]


class ProcessError(RuntimeError):
    """A child exited while it was waited for (``exited``), or was not ready in time; the
    message quotes its log."""

    def __init__(self, message: str, *, exited: bool) -> None:
        super().__init__(message)
        self.exited = exited


# Ports handed out by this process: two callers never get the same one, even before either binds it.
_handed_out: set[int] = set()
_LOWEST_PORT = 10000


def _ephemeral_range() -> tuple[int, int]:
    """The range the kernel picks outgoing connections' local ports from."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing is bound to right now, for a server to be started on it.

    Picked outside the range the kernel takes outgoing connections' ports from: a port from
    that range, free when picked, can become the local end of any connection (a Kafka client's,
    say) before the server binds it. Ports outside it are taken only by explicit binds. The OS's
    own pick when the range leaves almost no room outside it.
    """
    low, high = _ephemeral_range()
    candidates = [range(_LOWEST_PORT, low), range(high + 1, 65536)]
    sizes = [len(r) for r in candidates]
    if sum(sizes) >= 1000:
        for _ in range(200):
            number = random.randrange(sum(sizes))
            port = candidates[0][number] if number < sizes[0] else candidates[1][number - sizes[0]]
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def listening(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether ``host:port`` accepts a TCP connection."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path | None, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, or a note saying why there are none."""
    if path is None:
        return "(no log)"
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} not written)"
    return "\n".join(content[-lines:]) or f"({path} is empty)"


class Child:
    """A process we started (:meth:`start`), or a detached one found by its pid (:meth:`attach`)."""

    def __init__(
        self,
        pid: int,
        *,
        name: str,
        log: Path | None = None,
        popen: subprocess.Popen[Any] | None = None,
        marker: str | None = None,
    ) -> None:
        self.pid = pid
        self.name = name
        self.log_path = log
        self.popen = popen  # None when attached: the child belongs to another process
        self._marker = marker

    @classmethod
    def start(
        cls,
        args: Sequence[str],
        *,
        log: Path,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        append: bool = False,
        **popen_kwargs: Any,
    ) -> Child:
        """Run ``args`` with stdout and stderr going to ``log`` (truncated unless ``append``).

        Other keyword arguments go to :class:`subprocess.Popen` (``stdin``, ``cwd``,
        ``pass_fds``, ``start_new_session=True`` for a child that outlives us, ...). Given
        ``stdout`` (``subprocess.PIPE``, to talk to the child), only stderr goes to the log.
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab" if append else "wb") as out:
            streams: dict[str, Any] = {"stdout": out, "stderr": subprocess.STDOUT}
            if "stdout" in popen_kwargs:
                streams = {"stderr": out}
            popen: subprocess.Popen[Any] = subprocess.Popen(
                list(args), env=None if env is None else dict(env), **streams, **popen_kwargs
            )
        return cls(popen.pid, name=name or Path(args[0]).name, log=log, popen=popen)

    @classmethod
    def attach(cls, pid: int, *, name: str, marker: str, log: Path | None = None) -> Child:
        """A detached child known by its pid (from a :class:`StateFile`). ``marker`` is a string
        of its command line: a pid reused by another program does not count as the child."""
        return cls(pid, name=name, log=log, marker=marker)

    # -- state -------------------------------------------------------------------------------

    def running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
            if not cmdline:
                # A process giving its memory back as it exits (a large heap can take a while)
                # shows no command line: it runs until it is a zombie, or gone. A kernel thread
                # (a child of kthreadd, pid 2) has none either and is not ours.
                fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
                return fields[0] not in ("Z", "X", "x") and fields[1] != "2"
        except (OSError, IndexError):
            return False
        return self._marker is None or self._marker.encode() in cmdline

    @property
    def returncode(self) -> int | None:
        """The exit status once it exited (of a child we started; None for an attached one)."""
        return None if self.popen is None else self.popen.poll()

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    # -- waiting -----------------------------------------------------------------------------

    def wait_until(
        self, predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2
    ) -> None:
        """Wait until ``predicate()`` holds; :class:`ProcessError` if the child exits first or
        ``timeout`` seconds pass (``what`` names the wait in the message)."""

        def ready() -> object:
            if not self.running():
                status = self.returncode
                raise ProcessError(
                    f"{self.name} exited (status {status}) while waiting for {what}; "
                    f"log {self.log_path}:\n{self.log_tail()}",
                    exited=True,
                )
            return predicate()

        if not wait_until(ready, timeout, interval):
            raise ProcessError(
                f"timed out after {timeout:.0f}s waiting for {what} ({self.name}); "
                f"log {self.log_path}:\n{self.log_tail()}",
                exited=False,
            )

    def wait_listening(self, port: int, timeout: float = 60.0, host: str = "127.0.0.1") -> None:
        self.wait_until(
            lambda: listening(port, host), timeout, f"{self.name} to listen on {host}:{port}", 0.1
        )

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status, once it exited (``subprocess.TimeoutExpired`` after ``timeout``)."""
        if self.popen is None:
            raise ValueError(f"{self.name} (pid {self.pid}) is not our child; use stop() or kill()")
        return self.popen.wait(timeout=timeout)

    # -- ending ------------------------------------------------------------------------------

    def stop(self, timeout: float = 30.0, sig: int | None = signal.SIGTERM) -> int | None:
        """Send ``sig`` (None: send nothing, the child was told to exit some other way, e.g. its
        stdin was closed) and wait up to ``timeout`` seconds; then SIGKILL. Returns the exit
        status (None for an attached child). A child that already exited is left as it is."""
        if self.running():
            if sig is not None:
                self.send_signal(sig)
            if not self._exited_within(timeout):
                self.send_signal(signal.SIGKILL)
                self._exited_within(10.0)
        return self._reap()

    def kill(self) -> None:
        """SIGKILL, as in a crash, and wait until it is gone."""
        if self.running():
            self.send_signal(signal.SIGKILL)
            self._exited_within(10.0)
        self._reap()

    def send_signal(self, sig: int) -> None:
        """Send ``sig``; a child that already exited is left alone."""
        if self.popen is not None:
            self.popen.send_signal(sig)  # checks first whether the pid is still ours
            return
        with contextlib.suppress(ProcessLookupError):  # it exited in the meantime
            os.kill(self.pid, sig)

    def _exited_within(self, timeout: float) -> bool:
        if self.popen is not None:
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return wait_until(lambda: not self.running(), timeout, 0.1) is not None

    def _reap(self) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:  # still there after SIGKILL: nothing more to do
            return None


class StateFile:
    """A detached child's facts (pid, ports, ...) as a JSON object, for whoever comes next."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        """What was saved; empty when nothing (readable) was."""
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def save(self, state: Mapping[str, Any]) -> None:
        # Written aside and renamed: a reader never sees half a file.
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(dict(state), indent=2) + "\n")
        os.replace(partial, self.path)
