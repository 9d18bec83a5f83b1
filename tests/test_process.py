"""``usagelog.process``: the one way the broker script, the demo, the test pipeline and the
benchmarks start, wait for and stop their child processes. Real child processes throughout."""

from __future__ import annotations

import itertools
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from usagelog.process import Child, ProcessError, StateFile, free_port, listening

SERVER = "import http.server, sys; http.server.test(port=int(sys.argv[1]), bind='127.0.0.1')"


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-u", "-c", code, *args]


def test_start_wait_until_listening_then_stop(tmp_path: Path) -> None:
    port = free_port()
    child = Child.start(_python(SERVER, str(port)), log=tmp_path / "server.log", name="http server")
    child.wait_listening(port, timeout=30)
    assert child.running() and listening(port)
    assert child.stop(timeout=10) == -signal.SIGTERM
    assert not child.running() and not listening(port)
    assert child.stop() == -signal.SIGTERM  # stopping a stopped child changes nothing


def test_a_child_that_exits_early_reports_its_log_tail(tmp_path: Path) -> None:
    code = "import sys; print('starting'); print('bad setting: PORT=abc', file=sys.stderr); sys.exit(3)"
    child = Child.start(_python(code), log=tmp_path / "early.log", name="api")
    with pytest.raises(ProcessError) as caught:
        child.wait_listening(free_port(), timeout=30)
    assert caught.value.exited
    message = str(caught.value)
    assert message.startswith("api exited (status 3) while waiting for api to listen on 127.0.0.1:")
    assert "starting\nbad setting: PORT=abc" in message  # stdout and stderr, in order


def test_waiting_for_a_condition_times_out_with_the_log(tmp_path: Path) -> None:
    child = Child.start(
        _python("print('still warming up'); import time; time.sleep(60)"), log=tmp_path / "slow.log"
    )
    try:
        started = time.monotonic()
        with pytest.raises(ProcessError, match=r"timed out after 1s waiting for the cache to fill") as caught:
            child.wait_until(lambda: False, 1, "the cache to fill", interval=0.05)
        assert not caught.value.exited and "still warming up" in str(caught.value)
        assert time.monotonic() - started < 10
        looks = itertools.count(1)
        child.wait_until(lambda: next(looks) == 3, 10, "a third look", interval=0.01)
        assert next(looks) == 4
    finally:
        child.kill()
    assert not child.running()


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready'); time.sleep(60)"
    )
    child = Child.start(_python(code), log=tmp_path / "stubborn.log")
    child.wait_until(lambda: "ready" in child.log(), 30, "it to ignore SIGTERM")
    started = time.monotonic()
    assert child.stop(timeout=0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 10


def test_a_piped_stdout_leaves_only_stderr_in_the_log(tmp_path: Path) -> None:
    code = "import sys; print('to the pipe'); print('to the log', file=sys.stderr)"
    child = Child.start(_python(code), log=tmp_path / "err.log", stdout=subprocess.PIPE, text=True)
    assert child.popen is not None
    out, _ = child.popen.communicate(timeout=30)
    assert out == "to the pipe\n" and child.log() == "to the log\n"


def test_a_detached_child_is_found_again_through_its_state_file(tmp_path: Path) -> None:
    marker = str(tmp_path / "detached.marker")
    started = Child.start(
        _python("import time; print('up'); time.sleep(60)", marker),
        log=tmp_path / "d.log",
        start_new_session=True,
    )
    started.wait_until(lambda: "up" in started.log(), 30, "it to run")  # its command line is set by then
    state = StateFile(tmp_path / "state.json")
    state.save({"pid": started.pid, "port": 1234})
    assert state.load() == {"pid": started.pid, "port": 1234}

    attached = Child.attach(state.load()["pid"], name="sleeper", marker=marker)
    assert attached.running()
    assert not Child.attach(started.pid, name="other", marker="not/its/command/line").running()
    attached.stop(timeout=10)
    assert started.wait(timeout=10) == -signal.SIGTERM
    assert not attached.running()
    assert StateFile(tmp_path / "missing.json").load() == {}


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert not listening(port)


def test_free_ports_are_outside_the_range_outgoing_connections_take_theirs_from() -> None:
    """A port from that range can become an outgoing connection's before the server binds it;
    and no two calls hand out the same port."""
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(not low <= port <= high for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_an_attached_child_runs_until_its_exit_is_over() -> None:
    """A process giving back a large memory as it exits has no command line for a while, and
    still runs: stopping it must not return before it is gone (or a zombie)."""
    code = "import sys, time; big = b'x' * (1 << 30); print('ready', flush=True); time.sleep(600)"
    popen = subprocess.Popen(_python(code), stdout=subprocess.PIPE, text=True)
    try:
        assert popen.stdout is not None and popen.stdout.readline() == "ready\n"
        child = Child.attach(popen.pid, name="big", marker="big = b'x'")
        assert child.running()
        popen.kill()
        deadline = time.monotonic() + 30
        while child.running():
            assert time.monotonic() < deadline, "still running 30 s after SIGKILL"
        # Not reaped by us yet: once it no longer runs, it is a zombie.
        state = Path(f"/proc/{popen.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state == "Z"
    finally:
        popen.kill()
        popen.wait()
