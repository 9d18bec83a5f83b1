"""Loss reports: log records named ``usagelog.loss`` that say which events of an instance were lost.

A report is one OTLP log record in an ``ExportLogsServiceRequest`` shaped like a batch of usage
events: the lost instance's resource (the same attributes its usage events carry), scope
``usagelog``, and the ``usagelog.loss.*`` attributes declared in
:mod:`usagelog.instrumentation.event`. Its report ID is built from the instance, the reason and
a cumulative count, so a report delivered twice is stored once.

Reports come from two places:

- a live process: events dropped at the memory bound are reported (reason ``dropped``) through
  its exporter as soon as anything can be written again (see
  :mod:`usagelog.instrumentation.accounting`);
- :func:`reap_orphans`: the counter file (:mod:`usagelog.instrumentation.counters`) of a process
  that died, or exited with events it could not write, becomes reports written as a sealed
  spool segment. Every process using a spool directory calls it when it starts and every
  :data:`REAP_SECONDS` after; ``usagelog ingest --from spool`` calls it before ingesting. Journal
  files the instance left (``USAGELOG_JOURNAL``) become sealed segments at the same time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope

from . import counters as c
from . import event as ev
from .builder import resource_message, set_value
from .identity import AttrValue
from .journal import orphan_journals
from .spool import SEALED_SUFFIX, SpoolWriter

_logger = logging.getLogger("usagelog")

REAP_SECONDS = 30.0
SEVERITY_WARN = 13  # loss reports are warnings (usage events are INFO)


@dataclass(frozen=True)
class LossReport:
    reason: str  # one of event.LOSS_REASONS
    count: int
    first_seq: int
    last_seq: int
    allocated_seq: int
    detail: str = ""
    report_id: str = ""

    def with_id(self, instance_id: str, cumulative: int) -> LossReport:
        report_id = f"{instance_id}/{self.reason}/{cumulative}"
        return LossReport(
            self.reason,
            self.count,
            self.first_seq,
            self.last_seq,
            self.allocated_seq,
            self.detail,
            report_id,
        )


def encode_reports(resource: Mapping[str, AttrValue], reports: list[LossReport], version: str = "") -> bytes:
    """One ``ExportLogsServiceRequest`` holding ``reports``, all of the instance of ``resource``."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.CopyFrom(resource_message(dict(resource)))
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.CopyFrom(InstrumentationScope(name=ev.SCOPE_NAME, version=version))
    now = time.time_ns()
    for report in reports:
        record = scope_logs.log_records.add()
        record.time_unix_nano = now
        record.observed_time_unix_nano = now
        record.severity_number = SEVERITY_WARN
        record.severity_text = "WARN"
        record.event_name = ev.LOSS_EVENT_NAME
        add = record.attributes.add
        set_value(add(), ev.LOSS_REPORT_ID, report.report_id)
        set_value(add(), ev.LOSS_REASON, report.reason)
        set_value(add(), ev.LOSS_COUNT, report.count)
        set_value(add(), ev.LOSS_FIRST_SEQ, report.first_seq)
        set_value(add(), ev.LOSS_LAST_SEQ, report.last_seq)
        set_value(add(), ev.LOSS_ALLOCATED_SEQ, report.allocated_seq)
        if report.detail:
            set_value(add(), ev.LOSS_DETAIL, report.detail)
    payload: bytes = request.SerializeToString()
    return payload


def orphan_reports(snapshot: c.Snapshot, journals: int = 0) -> list[LossReport]:
    """What the counter file of an instance that is gone says was lost, or may have been.

    - ``dropped``: drops not reported yet (the process died before it could);
    - ``write_failed``: events its last flush could not write anywhere;
    - ``tail``: sequence numbers it allocated but never handed to the exporter (requests in
      flight, events still queued when it was killed); ``count`` is what the process knew,
      audit works out the exact loss from what was stored. Always sent for an instance that
      allocated anything, so audit learns its highest sequence number.
    """
    instance = str(snapshot.info.get("resource", {}).get(ev.SERVICE_INSTANCE_ID, "")) or snapshot.path.stem
    allocated = snapshot[c.SLOT_ALLOCATED]
    reports: list[LossReport] = []
    dropped, reported = snapshot[c.SLOT_DROPPED], snapshot[c.SLOT_DROPPED_REPORTED]
    if dropped > reported:
        report = LossReport(
            ev.LOSS_DROPPED,
            dropped - reported,
            snapshot[c.SLOT_DROP_FIRST],
            snapshot[c.SLOT_DROP_LAST],
            allocated,
            "dropped at the in-memory bound while nothing could be written; reported after the process ended",
        )
        reports.append(report.with_id(instance, dropped))
    failed = snapshot[c.SLOT_FAILED]
    if failed:
        detail = str(snapshot.info.get("detail", "")) or "the final flush could not write them"
        report = LossReport(
            ev.LOSS_WRITE_FAILED,
            failed,
            snapshot[c.SLOT_FAILED_FIRST],
            snapshot[c.SLOT_FAILED_LAST],
            allocated,
            detail,
        )
        reports.append(report.with_id(instance, failed))
    if allocated:
        unhanded = max(0, allocated - snapshot[c.SLOT_WRITTEN] - dropped - failed)
        first = max(1, snapshot[c.SLOT_LOW]) if unhanded else 0
        report = LossReport(
            ev.LOSS_TAIL,
            unhanded,
            first,
            allocated if unhanded else 0,
            allocated,
            f"process {snapshot[c.SLOT_PID]} ended; its counters file {snapshot.path.name}"
            + (
                f"; {journals} journal files kept as spool segments (some of these may be stored)"
                if journals
                else ""
            ),
        )
        reports.append(report.with_id(instance, allocated))
    return reports


def reap_orphans(spool_dir: str | os.PathLike[str]) -> int:
    """Turn the counter files of instances that are gone into loss reports; returns how many
    files were reaped.

    The reports of each file are written as a sealed spool segment (fsync'd) in ``spool_dir``,
    and only then is the file deleted: a reaper killed in between leaves the file, and the next
    one writes the same reports again (same report IDs, stored once). Files of live processes
    are left alone. Never raises for one bad file: it is logged and kept.
    """
    reaped = 0
    c.remove_stale_new_files(spool_dir)
    for orphan in c.claim_orphans(spool_dir):
        try:
            snapshot = orphan.snapshot()
            if snapshot is None:  # not a counter file (or torn at creation): nothing to say
                orphan.delete()
                continue
            resource = snapshot.info.get("resource", {})
            instance = str(resource.get(ev.SERVICE_INSTANCE_ID, "")) or "unknown"
            # Its journal (USAGELOG_JOURNAL) holds every event it answered: a segment like any other.
            journals = orphan_journals(spool_dir, instance, snapshot[c.SLOT_PID])
            for journal in journals:
                os.replace(journal, journal.with_suffix(SEALED_SUFFIX))
            reports = orphan_reports(snapshot, len(journals))
            if reports:
                writer = SpoolWriter(spool_dir, f"loss-{instance}", fsync=True)
                writer.append(encode_reports(resource, reports))
                writer.seal()
                _logger.warning(
                    "usagelog: instance %s ended leaving %s",
                    instance,
                    "; ".join(f"{r.reason} {r.count} (seq {r.first_seq}..{r.last_seq})" for r in reports),
                )
            orphan.delete()
            reaped += 1
        except Exception:
            _logger.exception("usagelog: could not reap the counters file %s; kept", orphan.path)
            orphan.release()
    return reaped
