"""The archive on a real S3 endpoint (SeaweedFS's S3 gateway, tests/s3server.py): workers and
spool ingest archive there with credentials from the environment, a worker waits out an outage
of the store without committing and then catches up, and ClickHouse's ``s3()`` reads the files
in place as the table has them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.ingest.test_archive import (
    FILE_NAME,
    HOUR_NS,
    IN_PLACE_SQL,
    STRUCTURE_SQL,
    T0,
    encoded_rows,
    make_row,
    odd_rows,
)
from tests.pipeline import WorkerProcess, count_events, produce, wait_for
from tests.s3server import S3Server, seaweedfs_binary
from tests.spoolfill import make_payloads, write_spool
from usagelog.ingest.archive import Archive, read_archive
from usagelog.ingest.decode import COLUMNS
from usagelog.ingest.store import connect


@pytest.fixture(scope="session")
def weed() -> Path:
    return seaweedfs_binary()


@pytest.fixture(scope="session")
def s3(weed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One S3 server for the session's tests that leave it running."""
    server = S3Server(weed, tmp_path_factory.mktemp("seaweedfs")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket_url() -> str:
    return f"s3://archive-{uuid.uuid4().hex[:12]}/usage"


@pytest.fixture
def aws_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The server's credentials in this process's environment too (read_archive, Archive)."""
    env = s3.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def stored_ids(url: str) -> list[str]:
    with connect(url) as store:
        _, rows = store.query("SELECT event_id FROM usagelog.usage_events")
    return sorted(r[0] for r in rows)


def objects(server: S3Server, url: str) -> list[str]:
    """Every object under ``url``, by key."""
    fs = server.client()
    root = url.removeprefix("s3://")
    return sorted(fs.find(root)) if fs.exists(root) else []


def assert_only_whole_files(server: S3Server, url: str) -> None:
    """Every object under the archive is a final file, named so and readable to its end."""
    keys = objects(server, url)
    assert keys, f"nothing archived under {url}"
    fs = server.client()
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        assert FILE_NAME.match(name), key
        if name.endswith(".parquet"):
            with fs.open(key, "rb") as f:
                assert pq.read_table(f).num_rows > 0


def committed(brokers: str, topic: str, group: str = "usagelog-ingest") -> int:
    """Offsets the worker group committed on ``topic``, summed over its three partitions."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
    try:
        parts = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        return sum(max(tp.offset, 0) for tp in parts)
    except KafkaException:  # the group's coordinator still loading: ask again
        return -1
    finally:
        consumer.close()


def s3_worker(
    tmp_path: Path, kafka: Any, topic: str, name: str, env: dict[str, str], **kw: Any
) -> WorkerProcess:
    """A worker storing into ``tmp_path/chdb`` and archiving as ``env`` says."""
    chdb = "chdb://" + str(tmp_path / "chdb")
    return WorkerProcess(tmp_path, kafka.bootstrap, topic, chdb, name, extra_env=env, **kw)


# -- writing there -------------------------------------------------------------------------------


def test_workers_archive_to_s3_with_credentials_from_the_environment(
    kafka: Any, topics: dict[str, str], tmp_path: Path, s3: S3Server, bucket_url: str, aws_env: dict[str, str]
) -> None:
    chdb = "chdb://" + str(tmp_path / "chdb")
    payloads = [p for i in range(4) for p in make_payloads(10, 15, instance=f"inst-{i}")]
    produce(kafka.bootstrap, topics["events"], payloads, [f"inst-{i // 10}".encode() for i in range(40)])
    env = {**aws_env, "USAGELOG_ARCHIVE_URL": bucket_url}
    workers = [s3_worker(tmp_path, kafka, topics["events"], f"w{i}", env, max_idle=6).start() for i in (1, 2)]
    for worker in workers:
        assert worker.wait(timeout=180) == 0, worker.log()[-3000:]
    assert count_events(chdb) == (600, 600)
    archived = read_archive(bucket_url, endpoint=s3.endpoint)
    assert sorted(r["event_id"] for r in archived) == stored_ids(chdb)
    assert_only_whole_files(s3, bucket_url)
    assert list((tmp_path / "state").rglob("chunk-*")) == []
    assert s3.secret_key not in "".join(w.log() for w in workers)


def test_spool_ingest_archives_to_s3(
    tmp_path: Path, s3: S3Server, bucket_url: str, aws_env: dict[str, str]
) -> None:
    chdb = "chdb://" + str(tmp_path / "chdb")
    total = write_spool(tmp_path / "spool", segments=3, per_segment=40)
    command = [sys.executable, "-m", "usagelog.cli", "ingest", "--spool", str(tmp_path / "spool")]
    command += ["--clickhouse", chdb, "--archive", bucket_url]
    env = {**os.environ, **aws_env, "USAGELOG_STATE_DIR": str(tmp_path / "state")}
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    assert f"archived {bucket_url}/date=" in run.stderr
    assert count_events(chdb) == (total, total)
    archived = read_archive(bucket_url, endpoint=s3.endpoint)
    assert sorted(r["event_id"] for r in archived) == stored_ids(chdb)
    assert_only_whole_files(s3, bucket_url)


# -- the store down for a while ------------------------------------------------------------------


def test_a_worker_pauses_while_s3_is_down_even_across_a_restart_then_catches_up_losing_nothing(
    kafka: Any, topics: dict[str, str], tmp_path: Path, weed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = S3Server(weed, tmp_path / "seaweedfs").start()  # its own: this test stops it
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    url = f"s3://outage-{uuid.uuid4().hex[:8]}/usage"
    chdb = "chdb://" + str(tmp_path / "chdb")
    topic = topics["events"]
    # Small batches, and every batch's events published before its offsets are committed.
    env = {
        **server.env(),
        "USAGELOG_ARCHIVE_URL": url,
        "USAGELOG_ARCHIVE_MAX_BYTES": "1",
        "USAGELOG_BATCH_MAX_MESSAGES": "5",
        # The AWS SDK's own retries of a refused connection take ~20 s per upload by default;
        # the worker's waiting and retrying is what is tested here.
        "AWS_MAX_ATTEMPTS": "2",
    }
    worker = s3_worker(tmp_path, kafka, topic, "outage", env)
    try:
        before = make_payloads(20, 10, instance="before")
        produce(kafka.bootstrap, topic, before)
        worker.start()
        wait_for(lambda: committed(kafka.bootstrap, topic) == 20, 120, "the first 20 messages committed")

        server.stop()
        during = make_payloads(20, 10, instance="during")
        produce(kafka.bootstrap, topic, during)
        wait_for(lambda: "consuming paused" in worker.log(), 120, "the worker to pause")
        wait_for(lambda: "still unavailable" in worker.log(), 120, "a second try while the store is down")
        assert committed(kafka.bootstrap, topic) == 20  # nothing of what came since
        assert worker.process is not None and worker.process.running()

        # Stopped while it waits and started again, the store still down: it exits leaving its
        # chunks staged, starts, reads the uncommitted batch again, and waits with all of it.
        assert worker.stop() == 0, worker.log()[-3000:]
        assert "partition(s) stay staged" in worker.log()
        worker.start()
        wait_for(lambda: worker.log().count("consuming paused") == 2, 120, "the restarted worker to pause")
        assert "stay staged until it answers" in worker.log()
        assert committed(kafka.bootstrap, topic) == 20

        server.start()
        wait_for(lambda: committed(kafka.bootstrap, topic) == 40, 180, "the worker to catch up")
        assert worker.stop() == 0, worker.log()[-3000:]
        assert "available again" in worker.log()
        assert count_events(chdb) == (400, 400)
        # Every event; the batch the stop left uncommitted may be in two files (read once).
        archived = read_archive(url, endpoint=server.endpoint)
        assert len(archived) <= 400 + 50
        unique = read_archive(url, endpoint=server.endpoint, unique=True)
        assert sorted(r["event_id"] for r in unique) == stored_ids(chdb)
        assert_only_whole_files(server, url)
        assert list((tmp_path / "state").rglob("chunk-*")) == []
    finally:
        if worker.process is not None:
            worker.kill()
        server.stop()


def test_an_archive_whose_store_is_unreachable_keeps_its_chunks_for_the_next_run(
    tmp_path: Path, s3: S3Server, bucket_url: str, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from usagelog.ingest.errors import ArchiveUnavailable
    from usagelog.process import free_port

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # a refused connection is not retried for long
    nowhere = f"http://127.0.0.1:{free_port()}"
    staging = tmp_path / "staging"
    rows = odd_rows()
    archive = Archive(bucket_url, staging_dir=staging, worker_id="w", endpoint=nowhere)
    archive.stage(rows)
    with pytest.raises(ArchiveUnavailable, match=f"{bucket_url} at {nowhere}: could not upload") as down:
        archive.close()
    assert f"stay in {staging}" in str(down.value)
    assert len(list(staging.rglob("chunk-*"))) == 1  # the staged chunk is still there

    again = Archive(bucket_url, staging_dir=staging, worker_id="w", endpoint=s3.endpoint)
    assert len(again.recover()) == 1
    again.close()
    assert read_archive(bucket_url, endpoint=s3.endpoint) == sorted(
        rows, key=lambda r: (r["timestamp"], r["service_instance_id"], r["seq"])
    )
    assert list(staging.rglob("chunk-*")) == []


# -- reading in place ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_the_archive_on_s3_reads_in_place_with_clickhouse_s3_as_the_table_has_it(
    tmp_path: Path, s3: S3Server, bucket_url: str, aws_env: dict[str, str], fmt: str
) -> None:
    import usagelog.analytics as ul

    awkward = make_row(5, T0 + HOUR_NS, user_id=" padded ", user_agent="\\N", request_body=" ", query="NULL")
    rows = [*odd_rows(), awkward, *encoded_rows(30)]
    chdb = "chdb://" + str(tmp_path / "chdb")
    with connect(chdb) as store:
        assert store.insert_events(rows) == (len(rows), 0)
    archive = Archive(
        bucket_url, fmt=fmt, staging_dir=tmp_path / "staging", worker_id="w", endpoint=s3.endpoint
    )
    archive.stage(rows[:3])
    archive.stage(rows[3:])
    assert len(archive.close()) == 3  # two hours of odd rows, and the encoded rows' hour

    table = ul.query(STRUCTURE_SQL, url=chdb)
    columns = str(table.column("structure")[0].as_py())
    if fmt == "csv":
        columns = columns.replace("attributes Map(String, String)", "attributes String")
    bucket_path = bucket_url.removeprefix("s3://")
    params = {
        "path": f"{s3.endpoint}/{bucket_path}/**/*.{fmt}",
        "key": s3.access_key,
        "secret": s3.secret_key,
        "structure": columns,
    }
    in_s3 = IN_PLACE_SQL[fmt].replace("file({path:String}", "s3({path:String}, {key:String}, {secret:String}")
    # usage_events keeps the checksum's first 16 hex digits; the archive all 32.
    archived = ul.query(
        f"SELECT * REPLACE (substring(checksum, 1, 16) AS checksum) FROM ({in_s3}) ORDER BY event_id",
        params,
        url=chdb,
        table_functions=True,
    )
    stored = ul.query(
        f"SELECT {', '.join(COLUMNS)} FROM usagelog.usage_events FINAL ORDER BY event_id", url=chdb
    )
    assert archived.num_rows == stored.num_rows == len(rows)
    assert archived.column("event_id").to_pylist() == stored.column("event_id").to_pylist()
    assert archived.schema == stored.schema
    assert archived.equals(stored)


# -- misuse --------------------------------------------------------------------------------------


def test_wrong_credentials_stop_the_worker_naming_the_settings_never_the_secret(
    kafka: Any, topics: dict[str, str], tmp_path: Path, s3: S3Server, bucket_url: str
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    env = {**s3.env(secret=wrong), "USAGELOG_ARCHIVE_URL": bucket_url}
    worker = s3_worker(tmp_path, kafka, topics["events"], "badkey", env).start()
    assert worker.wait(timeout=120) != 0
    log = worker.log()
    assert "AWS_SECRET_ACCESS_KEY" in log and "USAGELOG_ARCHIVE_ENDPOINT" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert wrong not in log and s3.secret_key not in log


@pytest.mark.parametrize(
    ("url", "endpoint", "message"),
    [
        ("s3://b/p", "127.0.0.1:8333", "expected http(s)://host:port"),
        ("/var/archive", "http://127.0.0.1:8333", "applies to s3:// archive URLs only"),
        ("s3://b/p", "http://key:topsecret@127.0.0.1:8333", "no credentials in the endpoint"),
    ],
)
def test_a_bad_endpoint_is_refused_naming_the_variable(url: str, endpoint: str, message: str) -> None:
    from usagelog.ingest.settings import SettingsError, load_settings

    env = {"USAGELOG_ARCHIVE_URL": url, "USAGELOG_ARCHIVE_ENDPOINT": endpoint}
    with pytest.raises(SettingsError, match="USAGELOG_ARCHIVE_ENDPOINT") as caught:
        load_settings(environ=env, archiving=True, archive=url)
    assert message in str(caught.value) and "topsecret" not in str(caught.value)
