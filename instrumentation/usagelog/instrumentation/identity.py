"""The emitter's identity: the OpenTelemetry resource of usage events.

Read from the SDK as usual (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES`` and the
configured resource detectors), then completed: ``service.instance.id`` (a fresh UUID per
process start unless set), ``host.name``, ``host.id`` (the machine ID), ``process.pid``.
``k8s.cluster.name`` and ``cloud.region`` come from the resource when set.

A ``service.instance.id`` given in ``OTEL_RESOURCE_ATTRIBUTES`` must be unique per process
start: sequence numbers restart at 1 with every process.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource

from . import event
from .wire import AttrValue

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
    """The resource attributes of this process's usage events (call again after a fork)."""
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
