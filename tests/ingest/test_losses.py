"""Loss reports (``usagelog.loss`` records): decoded beside usage events, stored in ``losses`` by
the one pipeline for the spool and for Kafka, one row per report however often delivered."""

from __future__ import annotations

from pathlib import Path

from tests.lossreports import REPORTED_NS, loss_payload, loss_record
from tests.spoolfill import make_payloads
from usagelog.ingest.decode import decode_or_dead_letter, decode_payload
from usagelog.ingest.pipeline import Item, Pipeline
from usagelog.ingest.spool_ingest import ingest_spool
from usagelog.ingest.store import connect
from usagelog.instrumentation import event as ev
from usagelog.instrumentation.spool import SpoolWriter

REPORT_COLUMNS = (
    "report_id, toUnixTimestamp64Nano(reported_at), service_name, service_instance_id, host_name, "
    "reason, count, first_seq, last_seq, allocated_seq, detail, location"
)


def test_a_loss_record_decodes_to_a_losses_row_with_the_instances_identity() -> None:
    record = loss_record(
        "r-1", ev.LOSS_DROPPED, count=5, first_seq=11, last_seq=15, allocated_seq=40, detail="queue full"
    )
    decoded = decode_payload(loss_payload("i-7", [record], service="orders", host="web-1"))
    assert decoded.rows == [] and decoded.rejected == [] and decoded.ignored == 0
    assert decoded.losses == [
        {
            "report_id": "r-1",
            "reported_at": REPORTED_NS,
            "service_name": "orders",
            "service_instance_id": "i-7",
            "host_name": "web-1",
            "reason": "dropped",
            "count": 5,
            "first_seq": 11,
            "last_seq": 15,
            "allocated_seq": 40,
            "detail": "queue full",
        }
    ]


def test_a_loss_report_without_an_id_is_kept_under_an_id_derived_from_its_content() -> None:
    payload = loss_payload("i-7", [loss_record(None, ev.LOSS_TAIL, count=3, allocated_seq=9)])
    first, again = decode_payload(payload).losses, decode_payload(payload).losses
    assert first[0]["report_id"].startswith("derived:") and first == again


def test_a_loss_report_with_a_bad_number_is_dead_lettered_against_its_instance() -> None:
    payload = loss_payload("i-7", [loss_record("r-2", count="many")])
    decoded, letters = decode_or_dead_letter(payload, "kafka", "t/0@5")
    assert decoded.losses == []
    (letter,) = letters
    assert letter["service_instance_id"] == "i-7" and "usagelog.loss.count" in letter["reason"]


def _losses(url: str) -> list[tuple[object, ...]]:
    with connect(url) as store:
        _, rows = store.query(f"SELECT {REPORT_COLUMNS} FROM usagelog.losses FINAL ORDER BY report_id")
    return rows


def test_spool_and_kafka_items_store_each_report_once_whatever_the_redelivery(
    tmp_path: Path, chdb_url: str
) -> None:
    """Reports spooled beside usage events are stored by ``ingest``; the same reports arriving
    again from Kafka (the collector path, a replay) fold into the same rows."""
    spool = tmp_path / "spool"
    reports = loss_payload(
        "bulk",
        [
            loss_record("r-dropped", ev.LOSS_DROPPED, count=4, first_seq=21, last_seq=24, allocated_seq=30),
            loss_record("r-tail", ev.LOSS_TAIL, count=2, first_seq=29, last_seq=30, allocated_seq=30),
        ],
    )
    writer = SpoolWriter(spool, "bulk", fsync=False)
    writer.append(make_payloads(1, 20, "bulk")[0])
    writer.append(reports)
    writer.seal()
    stats = ingest_spool(str(spool), chdb_url, "usagelog")
    assert (stats.inserted, stats.losses, stats.dead_letters) == (20, 2, 0)
    with connect(chdb_url) as store:
        items = [Item("kafka", f"usagelog.events/0@{n}", reports) for n in (7, 8)]
        result = Pipeline().process(items, store)
    assert (result.losses, result.dead_letters, result.ignored) == (4, 0, 0)
    rows = _losses(chdb_url)
    assert [(r[0], r[5], r[6], r[7], r[8], r[9]) for r in rows] == [
        ("r-dropped", "dropped", 4, 21, 24, 30),
        ("r-tail", "tail", 2, 29, 30, 30),
    ]
    assert all(r[1] == REPORTED_NS and r[2:5] == ("bulk", "bulk", "h") for r in rows)
    assert all("@" in r[11] for r in rows)
