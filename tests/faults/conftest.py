"""Fixtures of the fault suite: a Kafka broker of its own (scenarios kill it), a fresh pipeline per
scenario, and the scenario report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.stack import Stack
from tests.pipeline import broker_module


@pytest.fixture(scope="package")
def fault_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A dedicated broker (not the session one, which other tests share): a scenario may SIGKILL
    and restart it on the same port and data directory."""
    broker = broker_module().KafkaBroker(tmp_path_factory.mktemp("fault-kafka"), partitions=3)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker(fault_broker: Any) -> Any:
    """The suite's broker, running (started again if an earlier scenario left it down)."""
    if not fault_broker.is_running():
        fault_broker.start()
    return fault_broker


@pytest.fixture
def stack(broker: Any, collector_bin: Path, tmp_path: Path) -> Iterator[Stack]:
    """A fresh pipeline on the suite's broker, not started; everything it started ends with the test."""
    pipeline = Stack(tmp_path, broker, collector_bin)
    try:
        yield pipeline
    finally:
        pipeline.close()
