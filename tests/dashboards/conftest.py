"""A store holding four weeks of generated traffic with known incidents, shared by the dashboard,
alert and offline-rendering tests (generated and loaded once per session, then only read)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from usagelog.demo import history
from usagelog.ingest.retention import apply_retention
from usagelog.ingest.store import Store, connect


@dataclass(frozen=True)
class HistoryStore:
    url: str
    history: history.History

    @property
    def now(self) -> dt.datetime:
        """The end of the generated traffic: the dashboards' and rules' "now"."""
        return dt.datetime.fromtimestamp(self.history.end, dt.timezone.utc)

    def at(self, epoch: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


@pytest.fixture(scope="session")
def history_store(tmp_path_factory: pytest.TempPathFactory) -> HistoryStore:
    url = "chdb://" + str(tmp_path_factory.mktemp("history") / "chdb")
    events = history.generate()
    with connect(url) as store:
        # The history is dated (it ends 2026-11-23): keep every table's rows whatever today is.
        apply_retention(store, {f"USAGELOG_RETENTION_{t}_DAYS": "0" for t in ("MONITORED", "DEAD_LETTERS")})
        history.load(store, events)
    return HistoryStore(url, events)


@pytest.fixture
def store(history_store: HistoryStore) -> Iterator[Store]:
    with connect(history_store.url, migrate_schema=False) as opened:
        yield opened
