"""One settings module for every command and the worker: arguments > environment > defaults,
frozen, every problem reported at once and named by its variable or option."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from usagelog.ingest.errors import SettingsError, UsagelogError
from usagelog.ingest.retention import retention_days
from usagelog.ingest.settings import (
    SPOOL_GROUP_BYTES,
    load_settings,
    load_spool_group_bytes,
    load_worker_settings,
    wait_seconds,
)


def test_defaults_when_nothing_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.clickhouse_url == f"chdb://{tmp_path}/.usagelog/chdb"
    assert (settings.database, settings.wait_seconds, settings.spool_dir) == (
        "usagelog",
        60.0,
        ".usagelog/spool",
    )
    assert settings.worker is None and settings.retention == {}


def test_arguments_win_over_the_environment_which_wins_over_defaults() -> None:
    env = {
        "USAGELOG_CLICKHOUSE_URL": "http://ch:8123",
        "USAGELOG_CLICKHOUSE_DATABASE": "from_env",
        "USAGELOG_CLICKHOUSE_WAIT_SECONDS": "2.5",
        "USAGELOG_SPOOL_DIR": "/env/spool",
    }
    from_env = load_settings(environ=env)
    assert (from_env.clickhouse_url, from_env.database, from_env.wait_seconds, from_env.spool_dir) == (
        "http://ch:8123",
        "from_env",
        2.5,
        "/env/spool",
    )
    given = load_settings(clickhouse="chdb:///data/ch", database="given", spool="/arg/spool", environ=env)
    assert (given.clickhouse_url, given.database, given.spool_dir) == (
        "chdb:///data/ch",
        "given",
        "/arg/spool",
    )


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.database = "other"  # type: ignore[misc]


def test_every_problem_is_reported_at_once_naming_its_source() -> None:
    env = {
        "USAGELOG_CLICKHOUSE_DATABASE": "no-dashes",
        "USAGELOG_CLICKHOUSE_WAIT_SECONDS": "abc",
        "USAGELOG_RETENTION_EVENTS_DAYS": "a week",
        "USAGELOG_BATCH_MAX_SECONDS": "soon",
        "USAGELOG_ARCHIVE_FORMAT": "xml",
    }
    with pytest.raises(SettingsError) as caught:
        load_settings(
            clickhouse="postgres://db", retention=True, kafka=True, source="kafka://k:9092/t", environ=env
        )
    message = str(caught.value)
    for source in (
        "--clickhouse: 'postgres://db'",
        "USAGELOG_CLICKHOUSE_DATABASE: 'no-dashes'",
        "USAGELOG_CLICKHOUSE_WAIT_SECONDS='abc'",
        "USAGELOG_RETENTION_EVENTS_DAYS='a week'",
        "USAGELOG_BATCH_MAX_SECONDS='soon'",
        "USAGELOG_ARCHIVE_FORMAT='xml'",
    ):
        assert source in message
    assert isinstance(caught.value, UsagelogError) and isinstance(caught.value, ValueError)


def test_an_argument_is_named_as_the_caller_calls_it() -> None:
    with pytest.raises(SettingsError, match=r"^url: 'chdb://memory'"):
        load_settings(clickhouse="chdb://memory", names={"clickhouse": "url"}, environ={})
    with pytest.raises(SettingsError, match=r"^USAGELOG_CLICKHOUSE_URL: 'chdb://memory'"):
        load_settings(environ={"USAGELOG_CLICKHOUSE_URL": "chdb://memory"})


def test_wait_seconds_accepts_zero_and_refuses_words_and_negatives() -> None:
    assert wait_seconds({"USAGELOG_CLICKHOUSE_WAIT_SECONDS": "0"}) == 0
    assert wait_seconds({"USAGELOG_CLICKHOUSE_WAIT_SECONDS": ""}) == 60
    for bad in ("abc", "-1"):
        with pytest.raises(SettingsError, match=f"^USAGELOG_CLICKHOUSE_WAIT_SECONDS={bad!r}: expected"):
            wait_seconds({"USAGELOG_CLICKHOUSE_WAIT_SECONDS": bad})


def test_the_worker_memory_bound_store_slice_and_stage_ahead_accept_zero_and_name_a_bad_value() -> None:
    source = "kafka://k:9092/t"

    def figures(worker: Any) -> tuple[Any, ...]:
        return (worker.max_memory_mb, worker.store_slice_seconds, worker.stage_ahead_batches)

    worker = load_settings(kafka=True, source=source, environ={}).worker
    assert worker is not None and figures(worker) == (448, 5.0, 16)
    env = {
        "USAGELOG_WORKER_MAX_MEMORY_MB": "0",
        "USAGELOG_WORKER_STORE_SLICE_SECONDS": "0",
        "USAGELOG_WORKER_STAGE_AHEAD_BATCHES": "0",
    }
    worker = load_settings(kafka=True, source=source, environ=env).worker
    assert worker is not None and figures(worker) == (0, 0.0, 0)
    env = {
        "USAGELOG_WORKER_MAX_MEMORY_MB": "1.5G",
        "USAGELOG_WORKER_STORE_SLICE_SECONDS": "-1",
        "USAGELOG_WORKER_STAGE_AHEAD_BATCHES": "2.5",
    }
    with pytest.raises(SettingsError) as caught:
        load_settings(kafka=True, source=source, environ=env)
    assert "USAGELOG_WORKER_MAX_MEMORY_MB='1.5G': expected whole megabytes" in str(caught.value)
    assert "USAGELOG_WORKER_STORE_SLICE_SECONDS='-1'" in str(caught.value)
    assert "USAGELOG_WORKER_STAGE_AHEAD_BATCHES='2.5': expected a number of batches" in str(caught.value)


def test_worker_settings_share_the_clickhouse_settings() -> None:
    env = {
        "USAGELOG_KAFKA_BROKERS": "k1:9092,k2:9092",
        "USAGELOG_CLICKHOUSE_URL": "http://ch:8123",
        "USAGELOG_CLICKHOUSE_WAIT_SECONDS": "5",
        "USAGELOG_KAFKA_DEAD_LETTER_TOPIC": "",  # empty on purpose: dead letters to the table only
        "USAGELOG_KAFKA_CONFIG": "security.protocol=SSL",
    }
    worker = load_worker_settings(worker_id="w-1", environ=env)
    assert (worker.brokers, worker.topic, worker.dead_letter_topic) == (
        "k1:9092,k2:9092",
        "usagelog.events",
        "",
    )
    assert (worker.clickhouse_url, worker.database, worker.wait_seconds) == (
        "http://ch:8123",
        "usagelog",
        5.0,
    )
    assert worker.worker_id == "w-1" and worker.kafka_config == {"security.protocol": "SSL"}
    assert worker.consumer_config()["security.protocol"] == "SSL"


def test_the_prefetch_queue_holds_a_batch_and_refills_without_librdkafkas_one_second_pause() -> None:
    kafka = {"USAGELOG_KAFKA_BROKERS": "k:9092"}
    worker = load_worker_settings(environ={**kafka, "USAGELOG_BATCH_MAX_BYTES": "8388608"})
    config = worker.consumer_config()
    assert (config["queued.max.messages.kbytes"], config["fetch.queue.backoff.ms"]) == (8192, 20)
    mine = load_worker_settings(environ={**kafka, "USAGELOG_KAFKA_CONFIG": "fetch.queue.backoff.ms=1000"})
    assert mine.consumer_config()["fetch.queue.backoff.ms"] == "1000"


def test_spool_groups_are_twice_a_workers_batch_unless_the_batch_size_is_set() -> None:
    kafka = {"USAGELOG_KAFKA_BROKERS": "k:9092"}
    assert (
        load_spool_group_bytes(environ={})
        == SPOOL_GROUP_BYTES
        == 2 * load_worker_settings(environ=kafka).batch_max_bytes
    )
    assert load_spool_group_bytes(environ={"USAGELOG_BATCH_MAX_BYTES": "8388608"}) == 8388608
    with pytest.raises(SettingsError, match="USAGELOG_BATCH_MAX_BYTES"):
        load_spool_group_bytes(environ={"USAGELOG_BATCH_MAX_BYTES": "lots"})


def test_from_url_sets_brokers_and_the_events_or_monitored_topic() -> None:
    settings = load_settings(kafka=True, source="kafka://k:9092/mine", environ={})
    assert settings.worker is not None
    assert (settings.worker.brokers, settings.worker.topic) == ("k:9092", "mine")
    tail = load_settings(kafka=True, source="kafka://k:9092/watched", monitored=True, environ={})
    assert tail.worker is not None
    assert (tail.worker.topic, tail.worker.monitored_topic) == ("usagelog.events", "watched")


def test_kafka_needs_brokers_and_a_worker_id_names_its_source() -> None:
    with pytest.raises(SettingsError, match=r"USAGELOG_KAFKA_BROKERS .* is required"):
        load_worker_settings(environ={})
    with pytest.raises(SettingsError, match=r"--worker-id='a b'"):
        load_worker_settings(worker_id="a b", environ={"USAGELOG_KAFKA_BROKERS": "k:9092"})
    with pytest.raises(SettingsError, match=r"USAGELOG_WORKER_ID='a/b'"):
        load_worker_settings(environ={"USAGELOG_KAFKA_BROKERS": "k:9092", "USAGELOG_WORKER_ID": "a/b"})


def test_retention_days_per_table_from_the_settings() -> None:
    settings = load_settings(retention=True, environ={"USAGELOG_RETENTION_ROLLUP_DAYS": "400"})
    days = retention_days(days=settings.retention)
    assert days["usage_rollup_1m"] == days["usage_rollup_1h"] == 400
    assert (days["usage_events"], days["monitored_events"], days["dead_letters"]) == (0, 7, 30)
