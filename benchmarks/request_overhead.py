"""Per-request cost of usagelog next to plain Flask, stock OpenTelemetry and a naive log emitter.

Five variants of one small Flask app (see ``app_under_test.py``) are measured side by side in
one run, each in its own process, two ways:

- the Flask test client in a loop (in-process; no network, no server);
- a real server: gunicorn, one sync worker, on a free 127.0.0.1 port, driven by an
  ``http.client`` loop that opens one connection per request. Reported both as the latency the
  client observes and as the worker's CPU time per request (all threads, user + system), the
  steadier signal on a small shared machine.

All variants' processes are started together and driven in turns: requests go in chunks (250
by default), each variant runs a GET chunk and a POST chunk, then the next variant does, in an
order that rotates every chunk. Each chunk is timed on its own and ends with a flush of the
variant's queue, so usagelog's background encoding (and the SDK batch processor's export) is
counted in the chunk that caused it. Chunks of different variants run at most seconds apart,
so the cost a variant adds over stock OTel is taken chunk by chunk (the median of the
differences), which cancels the slow drifts in machine speed that dominate comparisons of
separate runs on a shared machine. This is repeated over several rounds with fresh processes
and the median over rounds is reported.

With ``--baseline DIR`` (a checkout of an earlier commit, e.g. ``git worktree add /tmp/base
HEAD~5``), the usagelog variants also run on that checkout's ``usagelog`` as ``usagelog@base``
and ``usagelog-bodies@base``, interleaved with the others in the same run, and the table adds
what the current code costs over the baseline, chunk by chunk.

Exits non-zero when a variant fails to run, a response has an unexpected status, or a usagelog
variant exported a number of events different from the number of requests it served.

    python benchmarks/request_overhead.py              # 3000 requests per method, 3 rounds
    python benchmarks/request_overhead.py --quick      # a few hundred requests, 1 round (CI)
    python benchmarks/request_overhead.py --json > results.json   # table on stderr, JSON on stdout
    python benchmarks/request_overhead.py --baseline /tmp/base --variants otel,usagelog,usagelog-bodies
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import http.client
import itertools
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import overhead_report  # noqa: E402
from app_under_test import (  # noqa: E402  (the benchmark folder is not a package)
    HEADERS,
    ITEM_PATH,
    LOGGING_VARIANTS,
    PEER_VARIANTS,
    PEERS_DIR,
    POST_BODY,
    POST_PATH,
    STATS_PATH,
    VARIANTS,
    available_variants,
    build_variant,
    usagelog_location,
)
from overhead_report import AT_BASELINE, BASELINE, METHODS, MODES, label, variant_of  # noqa: E402
from peers import stub_counts  # noqa: E402

from usagelog.process import Child  # noqa: E402

EXPECTED_STATUS = {"GET": 200, "POST": 201}
START_TIMEOUT = 60.0
REPLY_TIMEOUT = 600.0
_variant = variant_of
_worker_ids = itertools.count(1)


def _paths(n: int) -> list[str]:
    return [ITEM_PATH.format(i % 1000) for i in range(n)]


def _worker_id(variant: str) -> str:
    """A peer's path prefix at the stub: unique per process of the run."""
    return f"{_variant(variant)}-{os.getpid()}-{next(_worker_ids)}"


def _child_env(variant: str, baseline: Path | None, worker_id: str) -> dict[str, str]:
    """The parent's environment without ``USAGELOG_*``, ``OTEL_*`` and ``APITALLY_*``: every variant
    runs on defaults. A ``@base`` variant imports ``usagelog`` from the ``baseline`` checkout. A
    peer gets the stub's address and its own path prefix there (``BENCH_PEER_STUB``,
    ``BENCH_WORKER_ID``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("USAGELOG_", "OTEL_", "APITALLY_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env["BENCH_WORKER_ID"] = worker_id
    if baseline is not None and variant.endswith(AT_BASELINE):
        paths = [str(baseline / "instrumentation"), str(baseline / "ingest")]
        env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH", "")] if p])
    if _variant(variant) in PEER_VARIANTS:
        env["PYTHONPATH"] = os.pathsep.join([p for p in [env.get("PYTHONPATH", "")] if p] + [str(PEERS_DIR)])
    return env


def _check_origin(name: str, location: str | None, baseline: Path | None) -> None:
    """The variant's usagelog came from where it should: the baseline checkout or this one."""
    if location is None or not _variant(name).startswith("usagelog"):
        return
    from_baseline = baseline is not None and Path(location).resolve().is_relative_to(baseline.resolve())
    if from_baseline != name.endswith(AT_BASELINE):
        raise RuntimeError(f"{name} imported usagelog from {location}")


class Worker(Protocol):
    """One variant in its own process, ready to serve chunks of requests."""

    worker_id: str  # its path prefix at the peer stub

    def chunk(self, method: str, start: int, n: int) -> tuple[int, int, int, int]:
        """Send ``n`` requests, then drain the variant's queue. Return (wall ns of the requests, CPU
        ns of the serving process including the drain, CPU ns of the thread that served the
        requests, unexpected statuses)."""

    def events(self) -> int | None:
        """Events the variant exported so far (after draining its queue); None if it exports none."""

    def close(self) -> None: ...


# -- test client: a child process per variant, driven over stdin/stdout ------------------------------------


def _test_client_sender(app: Any, paths: list[str]) -> Callable[[str, int, int], int]:
    client = app.test_client()

    def send(method: str, start: int, n: int) -> int:
        errors = 0
        for i in range(start, start + n):
            if method == "GET":
                response = client.get(paths[i], headers=HEADERS)
            else:
                response = client.post(
                    POST_PATH, data=POST_BODY, headers=HEADERS, content_type="application/json"
                )
            response.get_data()
            response.close()  # as a WSGI server does; this is when the request ends for middleware
            errors += response.status_code != EXPECTED_STATUS[method]
        return errors

    return send


def serve_test_client(variant: str, total_requests: int) -> None:
    """Child side: build the variant, then run the chunks the parent asks for, one JSON reply per line."""
    app, probe = build_variant(variant)
    send = _test_client_sender(app, _paths(total_requests))
    served = 0
    print(json.dumps(["ready", usagelog_location()]), flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command in METHODS:
            start, n = int(args[0]), int(args[1])
            wall, cpu, thread = time.perf_counter_ns(), time.process_time_ns(), time.thread_time_ns()
            bad = send(command, start, n)
            served += n
            wall, thread = time.perf_counter_ns() - wall, time.thread_time_ns() - thread
            probe.flush(served)  # inside the CPU-timed region: the background encoding is part of the cost
            reply: Any = [wall, time.process_time_ns() - cpu, thread, bad]
        elif command == "events":
            reply = probe.flush(served)
        else:
            return
        print(json.dumps(reply), flush=True)


class TestClientWorker:
    def __init__(self, variant: str, total_requests: int, baseline: Path | None) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", _variant(variant)]
        cmd += ["--requests", str(total_requests)]
        self.worker_id = _worker_id(variant)
        self._logs = tempfile.TemporaryDirectory(prefix="usagelog-bench-")  # removed in close()
        # Requests and replies over stdin/stdout; stderr to the log.
        self._child = Child.start(
            cmd,
            log=Path(self._logs.name) / "child.log",
            name=f"test-client child ({variant})",
            env=_child_env(variant, baseline, self.worker_id),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._child.popen is not None
        self._proc: subprocess.Popen[str] = self._child.popen
        line = self._readline()
        if not line.startswith('["ready"'):
            output = self._child.log()[-2000:]
            self.close()
            raise RuntimeError(f"test-client child did not start: {output}")
        try:
            _check_origin(variant, json.loads(line)[1], baseline)
        except RuntimeError:
            self.close()
            raise

    def _readline(self) -> str:
        assert self._proc.stdout is not None
        return str(self._proc.stdout.readline()).strip()

    def _ask(self, command: str) -> Any:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
            line = self._readline()
        except OSError:
            line = ""
        if not line:
            raise RuntimeError(f"test-client child died: {self._child.log()[-2000:]}")
        return json.loads(line)

    def chunk(self, method: str, start: int, n: int) -> tuple[int, int, int, int]:
        wall, cpu, thread, bad = self._ask(f"{method} {start} {n}")
        return wall, cpu, thread, bad

    def events(self) -> int | None:
        return self._ask("events")  # type: ignore[no-any-return]

    def close(self) -> None:
        # EOF on stdin ends the child; SIGKILL if it has not exited 15 s later.
        with contextlib.suppress(OSError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        self._child.stop(timeout=15, sig=None)
        self._logs.cleanup()


# -- real server: gunicorn per variant ----------------------------------------------------------------------


def _request(
    port: int, method: str, path: str, body: bytes | None, timeout: float = 30.0
) -> tuple[int, bytes]:
    # One connection per request: the sync worker closes it after each response anyway.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = dict(HEADERS)
        if body is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads) from ``/proc/<pid>/stat``, in seconds (tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerWorker:
    """gunicorn, one sync worker, serving the variant on a free 127.0.0.1 port."""

    def __init__(self, variant: str, total_requests: int, baseline: Path | None) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        self.port = listener.getsockname()[1]
        # gunicorn serves the socket bound here (fd://), so there is no race for the port.
        cmd = [sys.executable, "-m", "gunicorn", "--workers", "1", "--worker-class", "sync"]
        cmd += [
            "--bind",
            f"fd://{listener.fileno()}",
            "--pythonpath",
            str(BENCH_DIR),
            "--log-level",
            "warning",
        ]
        cmd += ["--timeout", "300", f"app_under_test:create_application({_variant(variant)!r})"]
        self._logs = tempfile.TemporaryDirectory(prefix="usagelog-bench-")  # removed in close()
        self.worker_id = _worker_id(variant)
        self._child = Child.start(
            cmd,
            log=Path(self._logs.name) / "gunicorn.log",
            name=f"gunicorn ({variant})",
            env=_child_env(variant, baseline, self.worker_id),
            pass_fds=(listener.fileno(),),
        )
        listener.close()
        self._paths = _paths(total_requests)
        self._served = 0
        try:
            # The socket already listens, so the first request waits in the backlog until the worker is up.
            first = self._stats(timeout=START_TIMEOUT)
        except (OSError, RuntimeError):
            output = self._child.log()[-2000:]
            self.close()
            raise RuntimeError(f"gunicorn did not start: {output}") from None
        self.pid: int = first["pid"]
        try:
            _check_origin(variant, first["usagelog"], baseline)
        except RuntimeError:
            self.close()
            raise

    def _stats(self, timeout: float = 30.0) -> dict[str, Any]:
        """Drain the variant's queue, then read the worker's CPU times (see ``create_application``)."""
        path = f"{STATS_PATH}?expect={self._served}"
        status, body = _request(self.port, "GET", path, None, timeout)
        if status != 200:
            raise RuntimeError(f"stats route answered {status}")
        return json.loads(body)  # type: ignore[no-any-return]

    def chunk(self, method: str, start: int, n: int) -> tuple[int, int, int, int]:
        before = self._stats()
        wall = time.perf_counter_ns()
        bad = 0
        for i in range(start, start + n):
            if method == "GET":
                status, _ = _request(self.port, "GET", self._paths[i], None)
            else:
                status, _ = _request(self.port, "POST", POST_PATH, POST_BODY)
            bad += status != EXPECTED_STATUS[method]
        wall = time.perf_counter_ns() - wall
        self._served += n
        after = self._stats()  # the flush is inside the CPU-timed region
        # The serving thread's CPU from the end of one drain to the start of the next: the requests.
        thread = after["thread_ns"] - before["thread_end_ns"]
        return wall, after["cpu_ns"] - before["cpu_ns"], thread, bad

    def events(self) -> int | None:
        return self._stats()["events"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self._child.stop(timeout=15)  # SIGTERM, SIGKILL after 15 s
        self._logs.cleanup()


# -- one round: all variants of one mode, interleaved -----------------------------------------------------


def _start_workers(
    mode: str, variants: list[str], total: int, baseline: Path | None, failures: list[str]
) -> dict[str, Worker]:
    """Start every variant's process at once (their imports overlap), in the given order."""
    factory: Callable[[str, int, Path | None], Worker] = (
        TestClientWorker if mode == "test_client" else ServerWorker
    )
    workers: dict[str, Worker] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(variants)) as pool:
        futures = {v: pool.submit(factory, v, total, baseline) for v in variants}
        for v, future in futures.items():
            try:
                workers[v] = future.result()
            except Exception as exc:
                failures.append(f"{v} ({mode}): {exc}")
    return workers


def run_round(
    mode: str,
    variants: list[str],
    requests: int,
    warmup: int,
    chunk: int,
    failures: list[str],
    baseline: Path | None = None,
) -> dict[str, Any]:
    """Start every variant's process, warm them up, then time chunks in turns. Returns per variant:
    the chunk samples, their medians, the chunk-by-chunk difference to stock OTel and the event count."""
    total = warmup + requests
    workers: dict[str, Worker] = {}
    try:
        workers = _start_workers(mode, variants, total, baseline, failures)
        samples: dict[str, dict[str, dict[str, list[float]]]] = {
            v: {m: {k: [] for k in overhead_report.KEYS} for m in METHODS} for v in workers
        }
        bad = dict.fromkeys(workers, 0)
        cpu_before = {}
        for v, worker in workers.items():
            for method in METHODS:
                bad[v] += worker.chunk(method, requests, warmup)[3] if warmup else 0
            if isinstance(worker, ServerWorker):
                cpu_before[v] = proc_cpu_seconds(worker.pid)
        names = list(workers)
        done = 0
        while done < requests and names:
            n = min(chunk, requests - done)
            turn = (done // chunk) % len(names)
            for v in names[turn:] + names[:turn]:
                for method in METHODS:
                    wall, cpu, thread, errors = workers[v].chunk(method, done, n)
                    s = samples[v][method]
                    s["wall_us"].append(wall / n / 1000)
                    s["cpu_us"].append(cpu / n / 1000)
                    s["thread_us"].append(thread / n / 1000)
                    s["background_us"].append((cpu - thread) / n / 1000)
                    bad[v] += errors
            done += n
        result: dict[str, Any] = {}
        for v, worker in workers.items():
            entry: dict[str, Any] = {"samples": samples[v], "sent": 2 * total, "bad_responses": bad[v]}
            if isinstance(worker, ServerWorker):
                # Cross-check of the worker's CPU time from /proc (10 ms ticks), whole timed part.
                entry["proc_stat_cpu_us"] = (
                    (proc_cpu_seconds(worker.pid) - cpu_before[v]) / (2 * requests) * 1e6
                )
            entry["events"] = worker.events()
            if _variant(v) in PEER_VARIANTS:
                entry["delivered"] = stub_counts(os.environ["BENCH_PEER_STUB"], worker.worker_id)
            for method in METHODS:
                base = samples[BASELINE][method] if BASELINE in samples else None
                entry[method] = overhead_report.chunk_medians(samples[v][method], base)
                if v + AT_BASELINE in samples:  # this code against the baseline checkout's
                    older = samples[v + AT_BASELINE][method]
                    vs_older = overhead_report.chunk_medians(samples[v][method], older)
                    entry[method]["vs_baseline"] = vs_older["added"]
            result[v] = entry
        return result
    finally:
        for worker in workers.values():
            worker.close()


# -- the run ---------------------------------------------------------------------------------------------


def _check(variant: str, mode: str, entry: dict[str, Any]) -> list[str]:
    """Problems that fail the run: bad responses, usagelog not exporting one event per request, or a
    peer whose events did not reach the stub.

    The naive reference is only warned about: the SDK's batch processor drops records by
    design when its queue is full, worth knowing but not a failure of usagelog. So is a peer
    that delivered some events but not one per request (a peer's own loss is its business, and
    is printed); one that delivered none did not run as in production and fails the run.
    """
    problems = []
    if entry["bad_responses"]:
        problems.append(f"{variant} ({mode}): {entry['bad_responses']} responses with an unexpected status")
    checked = _variant(variant) in LOGGING_VARIANTS or _variant(variant) in PEER_VARIANTS
    if checked and entry["events"] != entry["sent"]:
        message = f"{variant} ({mode}): {entry['events']} events exported for {entry['sent']} requests"
        if variant.startswith("usagelog") or (_variant(variant) in PEER_VARIANTS and not entry["events"]):
            problems.append(message)
        else:
            print(f"warning: {message}", file=sys.stderr)
    return problems


def _progress(round_no: int, mode: str, result: dict[str, Any], took: float) -> None:
    for v, e in result.items():
        timings = "  ".join(
            f"{m} {e[m]['wall_us']:7.1f} µs ({e[m]['cpu_us']:6.1f} cpu = {e[m]['thread_us']:6.1f} "
            f"+ {e[m]['background_us']:5.1f})"
            for m in METHODS
        )
        extra = " ".join(f"{m} {e[m]['added']['cpu_us']:+.1f}" for m in METHODS if "added" in e[m])
        extra = f"added cpu {extra}" if extra and v != BASELINE else ""
        print(
            f"round {round_no} {mode:11} {v:16} {timings}  events {e['events']}/{e['sent']}  {extra}",
            file=sys.stderr,
        )
    print(f"round {round_no} {mode:11} done in {took:.1f} s", file=sys.stderr, flush=True)


@contextlib.contextmanager
def peer_stub(needed: bool) -> Iterator[str | None]:
    """The local stub the peers send to (``peer_stub.py``), in its own process, on a free 127.0.0.1
    port; its address is exported as ``BENCH_PEER_STUB`` for the variants' processes."""
    if not needed:
        yield None
        return
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    logs = tempfile.TemporaryDirectory(prefix="usagelog-bench-stub-")
    child = Child.start(
        [sys.executable, str(BENCH_DIR / "peer_stub.py"), "--fd", str(listener.fileno())],
        log=Path(logs.name) / "stub.log",
        name="peer stub",
        pass_fds=(listener.fileno(),),
    )
    listener.close()
    os.environ["BENCH_PEER_STUB"] = url
    try:
        stub_counts(url, "ready")  # the socket listens already: this waits until the stub serves
        yield url
    finally:
        os.environ.pop("BENCH_PEER_STUB", None)
        child.stop(timeout=10)
        logs.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few hundred requests, one round (CI)")
    parser.add_argument(
        "--requests", type=int, help="timed requests per method, variant and round (default 3000)"
    )
    parser.add_argument("--rounds", type=int, help="rounds; medians are reported (default 3)")
    parser.add_argument("--warmup", type=int, help="untimed requests per method before timing (default 200)")
    parser.add_argument("--chunk", type=int, help="requests per timed chunk (default 250; 100 with --quick)")
    parser.add_argument(
        "--variants",
        help="comma-separated subset of: "
        + ", ".join(VARIANTS)
        + " (default: all whose packages are installed)",
    )
    parser.add_argument("--no-server", action="store_true", help="skip the gunicorn measurements")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        type=Path,
        help="a checkout of an earlier commit: also run the usagelog variants on its usagelog",
    )
    parser.add_argument(
        "--json", action="store_true", help="print results as JSON on stdout (the table then goes to stderr)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        serve_test_client(args.child, args.requests)
        return 0

    requests = args.requests or (300 if args.quick else 3000)
    rounds = args.rounds or (1 if args.quick else 3)
    warmup = args.warmup if args.warmup is not None else (50 if args.quick else 200)
    chunk = args.chunk or (100 if args.quick else 250)
    if requests <= 0 or rounds <= 0 or chunk <= 0 or warmup < 0:
        parser.error("--requests, --rounds and --chunk must be positive, --warmup not negative")
    installed = available_variants()
    if args.variants:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            parser.error(f"unknown variants: {', '.join(unknown)}")
        missing = [v for v in variants if v not in installed]
        if missing:
            parser.error(f"not installed: {', '.join(missing)} (pip install -e '.[bench]')")
    else:
        variants = installed
        skipped = [v for v in VARIANTS if v not in installed]
        if skipped:
            print(f"skipping {', '.join(skipped)}: not installed (the bench extra)", file=sys.stderr)
    baseline = args.baseline.resolve() if args.baseline else None
    if baseline is not None:
        if not (baseline / "instrumentation" / "usagelog" / "instrumentation").is_dir():
            parser.error(f"--baseline {args.baseline}: not a usagelog checkout")
        variants += [v + AT_BASELINE for v in variants if v.startswith("usagelog")]
    out = sys.stderr if args.json else sys.stdout
    modes = ("test_client",) if args.no_server else MODES

    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    failures: list[str] = []
    started = time.monotonic()
    with peer_stub(any(_variant(v) in PEER_VARIANTS for v in variants)):
        for round_no in range(1, rounds + 1):
            # Rotate the starting variant every round as well.
            turn = (round_no - 1) % len(variants)
            order = variants[turn:] + variants[:turn]
            for mode in modes if round_no % 2 else modes[::-1]:
                t0 = time.monotonic()
                try:
                    result = run_round(mode, order, requests, warmup, chunk, failures, baseline)
                except Exception as exc:
                    failures.append(f"{mode} round {round_no}: {exc}")
                    print(f"round {round_no} {mode} FAILED: {exc}", file=sys.stderr, flush=True)
                    continue
                for v, entry in result.items():
                    failures += _check(v, mode, entry)
                runs[mode].append(result)
                _progress(round_no, mode, result, time.monotonic() - t0)
    elapsed = time.monotonic() - started

    summary = overhead_report.summarise(variants, runs)
    print(
        f"\n{requests} requests per method x {rounds} round(s), chunks of {chunk}, {warmup} warm-up; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs; {elapsed:.0f} s\n",
        file=out,
    )
    print(overhead_report.render_table(summary), file=out)
    print("\n" + overhead_report.render_added(summary), file=out)
    if runs["server"]:
        print(
            "\nCross-check, worker CPU µs/req from /proc/<pid>/stat (10 ms ticks, GET and POST together): "
            + ", ".join(f"{v} {x:.1f}" for v, x in summary["server_proc_stat_cpu_us"].items() if x),
            file=out,
        )
    counts = {
        v: (
            sum(r[v]["events"] or 0 for mode in MODES for r in runs[mode] if v in r),
            sum(r[v]["sent"] for mode in MODES for r in runs[mode] if v in r),
        )
        for v in variants
        if _variant(v) in LOGGING_VARIANTS or _variant(v) in PEER_VARIANTS
    }
    print(
        "\nEvents exported (peers: received by the stub) / requests sent, all runs: "
        + "; ".join(f"{v} {e}/{s} {'ok' if e == s else 'MISMATCH'}" for v, (e, s) in counts.items()),
        file=out,
    )
    for v, fields in summary["peer_fields"].items():
        print(f"{v} sends: {', '.join(fields or [])}", file=out)
    print("\n" + overhead_report.render_targets(summary), file=out)
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures), file=out)
    if args.json:
        report = {
            "requests": requests,
            "rounds": rounds,
            "warmup": warmup,
            "chunk": chunk,
            "elapsed_s": elapsed,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "variants": {v: label(v) for v in variants},
            "baseline": str(baseline) if baseline else None,
            "events": {v: {"exported": e, "sent": s} for v, (e, s) in counts.items()},
            **summary,
            "runs": runs,
            "failures": failures,
        }
        print(json.dumps(report, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
