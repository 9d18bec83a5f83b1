"""Who emits the events: the process's resource, and its sequence of request numbers.

The resource is read from the SDK as usual (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``
and the configured resource detectors), then completed: ``service.instance.id`` (a fresh UUID
per process start unless set), ``host.name``, ``host.id`` (the machine ID), ``process.pid``.
``k8s.cluster.name`` and ``cloud.region`` come from the resource when set.

A ``service.instance.id`` given in ``OTEL_RESOURCE_ATTRIBUTES`` must be unique per process
start: sequence numbers restart at 1 with every process. After a fork the child is a new
instance with a new sequence (see ``Runtime``).
"""

from __future__ import annotations

import itertools
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource

from . import event

AttrValue = str | bool | int | float

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def machine_id() -> str:
    for name in _MACHINE_ID_FILES:
        try:
            value = Path(name).read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return ""


def _sdk_resource() -> Resource:
    provider = trace.get_tracer_provider()
    resource = getattr(provider, "resource", None)
    if isinstance(resource, Resource):
        return resource
    return Resource.create()


def resource_attributes() -> dict[str, AttrValue]:
    """The resource attributes of this process's usage events."""
    attrs: dict[str, AttrValue] = {}
    for key, value in _sdk_resource().attributes.items():
        if isinstance(value, (str, bool, int, float)):
            attrs[key] = value
        elif isinstance(value, (list, tuple)):
            attrs[key] = ",".join(str(v) for v in value)
    if not attrs.get(event.SERVICE_NAME) or attrs.get(event.SERVICE_NAME) == "unknown_service":
        attrs[event.SERVICE_NAME] = os.environ.get("OTEL_SERVICE_NAME") or "unknown_service"
    if not attrs.get(event.SERVICE_INSTANCE_ID):
        attrs[event.SERVICE_INSTANCE_ID] = str(uuid.uuid4())
    attrs.setdefault(event.HOST_NAME, socket.gethostname())
    if not attrs.get(event.HOST_ID):
        attrs[event.HOST_ID] = machine_id()
    attrs[event.PROCESS_PID] = os.getpid()
    return attrs


@dataclass(frozen=True)
class Identity:
    """The process's resource attributes and the random prefix of its event IDs."""

    attributes: dict[str, AttrValue]
    event_id_prefix: str = field(default_factory=lambda: os.urandom(8).hex())

    @property
    def instance_id(self) -> str:
        return str(self.attributes[event.SERVICE_INSTANCE_ID])

    @classmethod
    def of_process(cls) -> Identity:
        return cls(resource_attributes())

    def after_fork(self) -> Identity:
        """The identity of a forked child: the same resource, a new instance, a new pid."""
        attributes = resource_attributes()
        attributes[event.SERVICE_INSTANCE_ID] = str(uuid.uuid4())
        return Identity(attributes)


class Sequence:
    """Per-instance request numbers: 1, 2, 3, ... in request start order, no gaps.

    Each number taken is also stored in ``cells[1]`` (the allocated slot of the instance's
    counters, a memory-mapped file: see :mod:`usagelog.instrumentation.counters`), where a
    process kill cannot erase it. Two threads storing at once may leave the lower of their two
    numbers there until the next request; audit takes the highest number stored as well.
    """

    def __init__(self, cells: memoryview | None = None) -> None:
        self._next = itertools.count(1)
        self.last = 0
        self.cells = cells if cells is not None else memoryview(bytearray(16)).cast("Q")

    def next(self) -> int:
        # itertools.count.__next__ is atomic under the GIL: no lock on the request path.
        seq = next(self._next)
        self.last = seq
        try:
            self.cells[1] = seq
        except ValueError:  # the counters were closed at exit; a request still came in
            pass
        return seq
