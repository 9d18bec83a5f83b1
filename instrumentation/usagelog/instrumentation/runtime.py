"""The process-wide usagelog runtime: it builds the parts and wires them together.

Settings come first; then the process's identity and its sequence of request numbers, which
the builder (event IDs, the resource) and the exporter (spool segment names) are given; then
the recorder that carries captured exchanges from the request threads to the background
thread. Capture talks to the runtime only as a :class:`~usagelog.instrumentation.capture.Sink`.

At exit (``atexit``, or SIGTERM when the app has no handler of its own) requests in flight get
up to 3 s to finish, then the queue is flushed and the current spool segment sealed. After
``fork`` the child is a new instance: new identity and sequence, a fresh spool segment (the
hooks hold the runtime through a weak reference).
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

from .builder import EventBuilder
from .config import Settings, load_settings
from .exchange import Exchange
from .exporters import EventExporter, MemoryExporter, SpoolExporter
from .identity import Identity, Sequence
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
        self.sequence = Sequence()
        self.builder = EventBuilder(settings, self.resolver, self.identity, VERSION)
        self.exporter = (
            exporter if exporter is not None else build_exporter(settings, self.identity.instance_id)
        )
        self.recorder = Recorder(
            self.builder.encode_batch,
            self.exporter,
            flush_interval_ms=settings.flush_interval_ms,
            max_queue=settings.max_queue,
        )
        os.register_at_fork(after_in_child=_weak_hook(self._after_fork))

    @property
    def instance_id(self) -> str:
        return self.identity.instance_id

    # -- the sink capture writes to ----------------------------------------------------------
    def next_seq(self) -> int:
        return self.sequence.next()

    def record(self, exchange: Exchange) -> None:
        self.recorder.record(exchange)

    # -- lifecycle ---------------------------------------------------------------------------
    def _after_fork(self) -> None:
        try:
            self.identity = self.identity.after_fork()
            self.sequence = Sequence()
            self.builder.set_identity(self.identity)
            self.exporter.after_fork(self.identity.instance_id)
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
