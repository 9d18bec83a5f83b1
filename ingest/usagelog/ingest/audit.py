"""``usagelog audit``: per instance, every event lost and where, from what storage holds.

An instance numbers its events 1, 2, 3, ... (``seq``), so what is missing shows in the stored
sequence; what the sequence alone cannot show, the instance and the readers report:

- **gaps**: sequence numbers missing between 1 and the highest stored;
- **tail loss**: the highest sequence number the instance says it allocated
  (``usagelog.seq.allocated`` on its loss reports) above the highest stored — the events a
  killed process never handed over, which leave no gap;
- **reported loss**: the counts of its loss reports (``losses``: dropped at the memory bound,
  a final flush that could not write) — events lost before they had anywhere to go. A ``tail``
  report's count is what the dying process knew (an upper bound: a batch written just before
  the kill may not have been counted yet), so it adds only its allocated sequence number; the
  exact tail loss is that number minus the highest stored;
- **dead letters**: what ingest read but could not store — damaged or torn spool frames (with
  their segment and offset), payloads that are not OTLP, events failing their checksum.

``lost`` is the number of missing sequence numbers (gaps and tail), or the reported count when
that is higher (reports may name events whose numbers are unknown). An instance is ``ok`` when
nothing is lost, nothing is dead-lettered, no event is stored twice and every stored checksum
holds. Dead letters whose instance is unknown (a Kafka message that is not OTLP) are listed
under the instance ``""``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .store import Store

LISTED = 5  # missing ranges, reports and dead letters listed per instance (the counts are complete)

# The per-instance table (``usagelog audit``, the demo): its columns, in order.
COLUMNS = (
    "instance", "service", "host", "region", "events", "max_seq", "allocated_seq", "lost", "gaps",
    "tail_lost", "reported_lost", "damaged", "dead_letters", "duplicates", "checksum_failures", "missing",
)  # fmt: skip


@dataclass
class InstanceAudit:
    instance: str
    service: str = ""
    host: str = ""
    region: str = ""
    events: int = 0
    max_seq: int = 0
    allocated_seq: int = 0  # the highest allocated, as reported (0: no report said)
    lost: int = 0
    gaps: int = 0
    tail_lost: int = 0
    reported_lost: int = 0
    reports_count: int = 0
    damaged: int = 0  # spool frames the in-app replay could not read ("damaged" reports)
    dead_letters: int = 0
    duplicates: int = 0
    checksum_failures: int = 0
    missing: list[list[int]] = field(default_factory=list)  # the first [first, last] ranges
    missing_ranges: int = 0  # how many ranges in all
    reports: list[dict[str, Any]] = field(default_factory=list)  # the first loss reports
    dead_letter_list: list[dict[str, Any]] = field(default_factory=list)  # the first dead letters

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.damaged or self.dead_letters or self.duplicates or self.checksum_failures
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def missing_text(self) -> str:
        text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.missing)
        more = self.missing_ranges - len(self.missing)
        return text + (f" (+{more} more)" if more > 0 else "")

    def row(self) -> tuple[Any, ...]:
        values = {**asdict(self), "missing": self.missing_text()}
        return tuple(values[c] for c in COLUMNS)


def audit(store: Store, checksum_differs: str) -> list[InstanceAudit]:
    """Every instance that stored events, reported a loss or has dead letters, by service and
    instance. ``checksum_differs`` is true of a stored row whose checksum, recomputed over its
    columns (prefixed ``e.``), is not the one stored."""
    db = store.database
    found: dict[str, InstanceAudit] = {}

    def entry(instance: str) -> InstanceAudit:
        return found.setdefault(instance, InstanceAudit(instance))

    # The stored sequence. ``duplicates``: stored copies beyond the first of an event, plus events
    # given a sequence number another event has; each is a row whose seq another row has, so both
    # together are count() - uniqExact(seq). No FINAL: copies are what it counts. ``gaps`` from the
    # same set of numbers, less 0 where there is one (8M rows: 146 ms against 243 with a second set).
    _, rows = store.query(
        f"""
        SELECT service_instance_id, any(service_name), any(host_name), any(region), count(), max(seq),
               toInt64(max(seq)) - (toInt64(uniqExact(seq) AS distinct_seqs) - toInt64(countIf(seq = 0) > 0)),
               count() - distinct_seqs, countIf({checksum_differs})
        FROM {db}.usage_events AS e GROUP BY service_instance_id
        """
    )
    for instance, service, host, region, events, max_seq, gaps, duplicates, bad in rows:
        e = entry(instance)
        e.service, e.host, e.region = service, host, region
        e.events, e.max_seq, e.gaps = int(events), int(max_seq), int(gaps)
        e.duplicates, e.checksum_failures = int(duplicates), int(bad)

    # Loss reports and dead letters, counted in one statement; listed only where there are any.
    _, rows = store.query(
        f"""
        SELECT service_instance_id, any(service_name), any(host_name), sumIf(count, reason != 'tail'),
               count(), max(allocated_seq), countIf(reason = 'damaged'), 0, 0
        FROM {db}.losses FINAL GROUP BY service_instance_id
        UNION ALL
        SELECT service_instance_id, '', '', 0, 0, 0, 0, count(), countIf(reason LIKE 'checksum%')
        FROM {db}.dead_letters GROUP BY service_instance_id
        """
    )
    for instance, service, host, lost, reports, allocated, damaged, letters, checksums in rows:
        e = entry(instance)
        e.service, e.host = e.service or service, e.host or host
        e.reported_lost, e.reports_count = e.reported_lost + int(lost), e.reports_count + int(reports)
        e.allocated_seq, e.damaged = max(e.allocated_seq, int(allocated)), e.damaged + int(damaged)
        e.dead_letters += int(letters)
        e.checksum_failures += int(checksums)

    if any(e.reports_count for e in found.values()):
        _, rows = store.query(
            f"""
            SELECT service_instance_id, report_id, reported_at, reason, count, first_seq, last_seq,
                   allocated_seq, detail, location
            FROM {db}.losses FINAL ORDER BY service_instance_id, reported_at, report_id
            LIMIT {LISTED} BY service_instance_id
            """
        )
        keys = ("report_id", "time", "reason", "count", "first_seq", "last_seq", "allocated_seq", "detail")
        for instance, *values, location in rows:
            entry(instance).reports.append({**dict(zip(keys, values, strict=True)), "location": location})

    if any(e.dead_letters for e in found.values()):
        _, rows = store.query(
            f"""
            SELECT service_instance_id, received_at, source, location, reason, event_id
            FROM {db}.dead_letters
            ORDER BY service_instance_id, received_at, location LIMIT {LISTED} BY service_instance_id
            """
        )
        fields = ("time", "source", "location", "reason", "event_id")
        for instance, *values in rows:
            entry(instance).dead_letter_list.append(dict(zip(fields, values, strict=True)))

    _missing_ranges(store, [e for e in found.values() if e.gaps > 0])
    for e in found.values():
        e.tail_lost = max(0, e.allocated_seq - e.max_seq)
        if e.tail_lost:
            e.missing_ranges += 1
            if len(e.missing) < LISTED:
                e.missing.append([e.max_seq + 1, e.allocated_seq])
        e.lost = max(e.gaps + e.tail_lost, e.reported_lost)
    return sorted(found.values(), key=lambda e: (e.service, e.instance))


def _missing_ranges(store: Store, gapped: list[InstanceAudit]) -> None:
    """The first :data:`LISTED` ranges of missing sequence numbers of each instance with gaps,
    and how many ranges there are."""
    if not gapped:
        return
    _, rows = store.query(
        f"""
        SELECT instance, first, last, count() OVER (PARTITION BY instance) AS ranges FROM (
            SELECT instance, prev + 1 AS first, seq - 1 AS last FROM (
                SELECT service_instance_id AS instance, seq,
                       lagInFrame(seq, 1, toUInt64(0)) OVER (
                           PARTITION BY service_instance_id ORDER BY seq
                           ROWS BETWEEN 1 PRECEDING AND CURRENT ROW
                       ) AS prev
                FROM (
                    SELECT DISTINCT service_instance_id, seq FROM {store.database}.usage_events
                    WHERE service_instance_id IN {{ids:Array(String)}} AND seq > 0
                )
            ) WHERE seq > prev + 1
        ) ORDER BY instance, first LIMIT {LISTED} BY instance
        """,
        {"ids": [e.instance for e in gapped]},
    )
    by_instance = {e.instance: e for e in gapped}
    for instance, first, last, ranges in rows:
        e = by_instance[instance]
        e.missing.append([int(first), int(last)])
        e.missing_ranges = int(ranges)


def to_json(instances: list[InstanceAudit]) -> str:
    """The audit as ``usagelog audit --format json`` prints it: a list of instances."""

    def text(value: Any) -> str:
        return value.isoformat() if isinstance(value, (dt.datetime, dt.date)) else str(value)

    return json.dumps([i.as_dict() for i in instances], ensure_ascii=False, indent=1, default=text)


def summary(instances: list[InstanceAudit]) -> str:
    """One line for people: what was found, in all."""
    bad = [e for e in instances if not e.ok]
    events = sum(e.events for e in instances)
    if not bad:
        return f"audit: no loss ({len(instances)} instances, {events} events stored)"
    parts = [f"{sum(e.lost for e in bad)} events lost"]
    for total, what in (
        (sum(e.dead_letters for e in bad), "dead letter"),
        (sum(e.duplicates for e in bad), "duplicate"),
        (sum(e.checksum_failures for e in bad), "checksum failure"),
    ):
        if total:
            parts.append(f"{total} {what}{'' if total == 1 else 's'}")
    return f"audit: {', '.join(parts)} in {len(bad)} of {len(instances)} instances"


def details(instance: InstanceAudit) -> str:
    """The heading of an instance's loss reports and dead letters in the table output."""
    text = f"== {instance.instance or '(instance unknown)'}: {instance.lost} events lost"
    if instance.dead_letters:
        # A damaged frame does not say how many events it held: counted apart.
        text += f", {instance.dead_letters} dead letter{'' if instance.dead_letters == 1 else 's'}"
    return text
