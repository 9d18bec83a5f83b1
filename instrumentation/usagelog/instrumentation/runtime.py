"""The process-wide usagelog runtime: it builds the parts and wires them together.

Settings come first; then the process's identity and its sequence of request numbers, which
the builder (event IDs, the resource) and the exporter (spool segment names) are given; then
the recorder that carries captured exchanges from the request threads to the background
thread. Capture talks to the runtime only as a :class:`~usagelog.instrumentation.capture.Sink`.

Loss accounting: when the runtime builds its own exporter (``spool`` or ``otlp``), the instance
keeps its counters in a memory-mapped file in ``USAGELOG_SPOOL_DIR``
(:mod:`usagelog.instrumentation.counters`): the sequence numbers allocated, written, dropped and
failed. At start, and every 30 s from the background thread, counter files left by processes
that are gone are turned into loss reports (:func:`usagelog.instrumentation.losses.reap_orphans`).
If the file cannot be created (the directory is not writable), the counters stay in memory and
the background thread tries again every second.

At exit (``atexit``, or SIGTERM when the app has no handler of its own) requests in flight get
up to 3 s to finish, then the queue is flushed and the current spool segment sealed; the counter
file is deleted if every allocated event was written (or reported lost), else kept for the
reaper. After ``fork`` the child is a new instance: new identity and sequence, its own counter
file, a fresh spool segment (the hooks hold the runtime through a weak reference).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any

from .accounting import LossAccount
from .builder import EventBuilder
from .config import Settings, load_settings
from .counters import Counters
from .exchange import Exchange
from .exporters import EventExporter, MemoryExporter, SpoolExporter
from .identity import Identity, Sequence
from .journal import Journal
from .losses import REAP_SECONDS, reap_orphans
from .recorder import Recorder
from .spool import SpoolWriter
from .userid import UserResolver

_logger = logging.getLogger("usagelog")

VERSION = "0.1.0"
SHUTDOWN_WAIT_SECONDS = 3.0  # at exit, how long requests in flight may take to finish


def _weak_hook(method: Callable[[], None]) -> Callable[[], None]:
    """A callable that runs ``method`` while its object lives, and does nothing after."""
    weak = weakref.WeakMethod(method)

    def hook() -> None:
        bound = weak()
        if bound is not None:
            bound()

    return hook


class Runtime:
    def __init__(self, settings: Settings, exporter: EventExporter | None = None) -> None:
        self.settings = settings
        self.active = settings.enabled
        self.resolver = UserResolver(settings.user_id_from, build_verifier(settings))
        self.capture_bodies = settings.capture_body != "none"
        self.body_limit = settings.body_max_bytes
        self.header_keys = tuple(self.resolver.header_keys)
        self.identity = Identity.of_process()
        # Counters (and reaping) in the spool directory only when exporting through it.
        self.keeps_counters = exporter is None and settings.enabled
        self._counters_retry_at = 0.0
        self._next_reap = 0.0
        self.account = LossAccount(self._new_counters(), self.identity.attributes)
        self.sequence = Sequence(self.account.cells)
        # What capture calls on every request, bound here: no call through the runtime.
        self.next_seq: Callable[[], int] = self.sequence.next
        self.builder = EventBuilder(settings, self.resolver, self.identity, VERSION)
        if self.keeps_counters:
            self._reap()  # before the exporter looks for spooled segments to replay
        self.exporter = (
            exporter if exporter is not None else build_exporter(settings, self.identity.instance_id)
        )
        self.recorder = Recorder(
            self.builder.encode_batch,
            self.exporter,
            flush_interval_ms=settings.flush_interval_ms,
            max_queue=settings.max_queue,
            max_queue_bytes=settings.max_queue_bytes,
            account=self.account,
            housekeeping=self._housekeeping,
        )
        self.record: Callable[[Exchange], None] = self.recorder.record
        self.recorder.journal = self._new_journal()
        os.register_at_fork(after_in_child=_weak_hook(self._after_fork))

    # -- loss accounting ---------------------------------------------------------------------
    def _new_counters(self) -> Counters:
        if not self.keeps_counters:
            return Counters.in_memory()
        try:
            return Counters.create(
                self.settings.spool_dir, self.instance_id, {"resource": self.identity.attributes}
            )
        except OSError as exc:
            self._counters_retry_at = time.monotonic() + 1.0
            _logger.warning(
                "usagelog: cannot keep the loss counters in %s (%s); keeping them in memory and retrying",
                self.settings.spool_dir,
                exc,
            )
            return Counters.in_memory()

    def _new_journal(self) -> Journal | None:
        if not (self.keeps_counters and self.settings.journal):
            return None
        try:
            return Journal(
                self.settings.spool_dir, self.instance_id, self.builder.encode_batch, self._allocated
            )
        except OSError as exc:
            _logger.warning(
                "usagelog: cannot write a journal in %s (%s); going on without", self.settings.spool_dir, exc
            )
            return None

    def _allocated(self) -> int:
        return self.sequence.last

    def _reap(self) -> None:
        self._next_reap = time.monotonic() + REAP_SECONDS
        try:
            reap_orphans(self.settings.spool_dir)
        except Exception:
            _logger.debug("usagelog: could not reap orphaned counter files", exc_info=True)

    def _housekeeping(self) -> None:
        """Called by the recorder's background thread on every wake-up."""
        if not self.keeps_counters:
            return
        now = time.monotonic()
        if not self.account.counters.durable and now >= self._counters_retry_at:
            self._counters_retry_at = now + 1.0
            try:
                counters = Counters.create(
                    self.settings.spool_dir, self.instance_id, {"resource": self.identity.attributes}
                )
            except OSError:
                pass
            else:
                self.account.attach(counters)
                self.sequence.cells = counters.cells
                _logger.warning("usagelog: loss counters now kept in %s", counters.path)
        if now >= self._next_reap:
            self._reap()

    @property
    def instance_id(self) -> str:
        return self.identity.instance_id

    # -- lifecycle ---------------------------------------------------------------------------
    def _after_fork(self) -> None:
        try:
            self.account.counters.abandon_after_fork()
            self.identity = self.identity.after_fork()
            self._next_reap = 0.0  # a worker replacing a killed one reports it at once
            self.account = LossAccount(self._new_counters(), self.identity.attributes)
            self.recorder.account = self.account
            self.sequence = Sequence(self.account.cells)
            self.next_seq = self.sequence.next
            self.builder.set_identity(self.identity)
            self.exporter.after_fork(self.identity.instance_id)
            if self.recorder.journal is not None:
                self.recorder.journal.abandon_after_fork()
            self.recorder.journal = self._new_journal()
        except Exception:
            _logger.exception("usagelog: could not reset after fork")

    def flush(self) -> int:
        return self.recorder.flush()

    def wait_in_flight(self, timeout: float) -> None:
        """Give requests already started up to ``timeout`` seconds to finish and be queued."""
        deadline = time.monotonic() + timeout
        while self.recorder.recorded < self.sequence.last and time.monotonic() < deadline:
            time.sleep(0.01)

    def shutdown(self, in_flight_timeout: float = 0.0) -> None:
        self.active = False
        if in_flight_timeout > 0:
            self.wait_in_flight(in_flight_timeout)
        self.recorder.shutdown()
        if self.recorder.journal is not None:
            self.recorder.journal.close(remove=self.account.complete())
            self.recorder.journal = None
        self.account.close()

    def _exit(self) -> None:
        self.shutdown(SHUTDOWN_WAIT_SECONDS)

    def install_exit_hooks(self) -> None:
        exit_hook = _weak_hook(self._exit)
        atexit.register(exit_hook)
        _install_sigterm_flush(exit_hook)


def build_verifier(settings: Settings) -> Any:
    """The JWT verifier the settings ask for (None: tokens are read without verification)."""
    if not (settings.jwt_key or settings.jwt_key_file or settings.jwt_jwks):
        return None
    from .jwtverify import JwtVerifier

    return JwtVerifier(settings.jwt_key, settings.jwt_key_file, settings.jwt_jwks)


def build_exporter(settings: Settings, instance_id: str) -> EventExporter:
    if settings.exporter == "spool":
        return SpoolExporter(
            SpoolWriter(
                settings.spool_dir,
                instance_id,
                segment_bytes=settings.spool_segment_bytes,
                segment_seconds=settings.spool_segment_seconds,
                fsync=settings.spool_fsync,
            )
        )
    from .otlp import OtlpExporter

    return OtlpExporter(settings, instance_id)


def _install_sigterm_flush(flush: Callable[[], None]) -> None:
    """On SIGTERM, flush before dying, but only if the app has not set its own handler."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def _on_sigterm(signum: int, frame: FrameType | None) -> Any:
            try:
                flush()
            finally:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)

        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        _logger.debug("usagelog: SIGTERM handler not installed", exc_info=True)


# -- the process-wide instance ----------------------------------------------------------------

_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime | None:
    return _runtime


def start_runtime(
    settings: Settings | None = None,
    exporter: EventExporter | None = None,
    *,
    install_exit_hooks: bool = True,
) -> Runtime:
    """Create the process-wide runtime once; later calls return the same one."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(settings or load_settings(), exporter)
            if install_exit_hooks:
                _runtime.install_exit_hooks()
        return _runtime


def reset_runtime() -> None:
    """Shut the runtime down and forget it (tests use this between configurations)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.shutdown()
        _runtime = None


__all__ = ["MemoryExporter", "Runtime", "get_runtime", "reset_runtime", "start_runtime"]
