"""Reading a store without changing it, enforced by the engine's ``readonly`` setting.

What each level refuses, checked on chDB (ClickHouse 26) by ``tests/ingest/test_readonly.py``:

- ``readonly = 1`` (:data:`READ_ONLY`, the default of ``usagelog query``, :mod:`usagelog.analytics`
  and the dashboards): every change — ``DROP``, ``TRUNCATE``, ``ALTER ... DELETE``, ``INSERT``,
  ``CREATE`` (``File`` tables too), ``OPTIMIZE``, ``SYSTEM`` — and every setting change (``SET``,
  a ``SETTINGS`` clause, ``readonly = 0`` itself). Table functions need a temporary table, which
  this level refuses too: ``file()``, ``url()``, ``s3()``, ``remote()``, ``mysql()`` cannot read
  or write anything outside the store. ``numbers()`` and ``system.*`` still work.
- ``readonly = 2`` (:data:`TABLE_FUNCTIONS`): tables cannot change either, but settings and
  temporary tables can, so table functions work: ``file()`` reads any file the process can read
  and ``INSERT INTO FUNCTION file(...)`` writes one. Only for callers that read archive files in
  place and accept that.

The level is set on the client, not on a statement — chDB: the session of this client's own
engine handle; a server: a parameter of every HTTP request — so nothing inside the SQL can lift
it, and other clients in the process are not affected.

chDB writes ``SELECT ... INTO OUTFILE`` whatever ``readonly`` says (the embedded engine's client
side does it; a ClickHouse server refuses ``INTO OUTFILE``), and runs several statements given
at once. :meth:`ReadOnlyStore.check_statement`, for SQL typed by a person, asks the engine's own
parser: ``formatQuery`` refuses more than one statement, and ``EXPLAIN AST`` of the one statement
shows whether it has an output file.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import QueryError, StoreError
from .store import Store

__all__ = ["READ_ONLY", "TABLE_FUNCTIONS", "ReadOnlyStore"]

READ_ONLY = 1
TABLE_FUNCTIONS = 2

# Client calls that change the store; refused before they reach the engine.
_WRITES = frozenset({"command", "insert", "insert_df", "insert_arrow", "raw_insert", "insert_file"})


class ReadOnlyStore(Store):
    """``store``, read-only from now on (its client's session too: open a store for reading).

    ``level`` is the engine's ``readonly`` value, :data:`READ_ONLY` unless the caller needs
    table functions (:data:`TABLE_FUNCTIONS`).
    """

    level: int

    def __init__(self, store: Store, level: int = READ_ONLY) -> None:
        if isinstance(store, ReadOnlyStore) and store.level <= level:
            client: Any = store.client
        else:
            client = _ReadOnlyClient(store.client, level)
        super().__init__(client, store.database)
        self.level = level

    def migrate(self, upto: int | None = None) -> list[str]:
        raise QueryError("the store is open read-only: migrations need a writable store")

    def check_statement(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        """Raise :class:`QueryError` unless ``sql`` is one statement without ``INTO OUTFILE``
        (on chDB; a server refuses both itself)."""
        if not getattr(self.client, "embedded", False):
            return
        params = dict(parameters or {})
        try:
            rows = self.client.query("SELECT formatQuery({sql:String})", parameters={"sql": sql})
        except QueryError as exc:  # the parser's word: a syntax error, or several statements
            raise QueryError(re.sub(r" *: In scope SELECT formatQuery\(.*\)\.", "", str(exc))) from exc
        single = str(rows.result_rows[0][0])
        ast = self.client.query(f"EXPLAIN AST {single}", parameters=params).result_rows
        # EXPLAIN AST prints one node per line, indented by depth. A query's output file is a
        # literal right under the root (with COMPRESSION's, which only comes with one).
        if any(str(line).startswith(" Literal ") for (line, *_) in ast):
            raise QueryError("INTO OUTFILE writes a file: leave it out, or run the query with --write")


class _ReadOnlyClient:
    def __init__(self, client: Any, level: int) -> None:
        self._client = client
        try:
            client.set_client_setting("readonly", str(level))
        except Exception as exc:
            # A server user whose profile is read-only already cannot set it; it is enough
            # that the session is read-only, which the check below makes sure of.
            failure: Exception | None = exc
        else:
            failure = None
        current = client.query("SELECT toUInt8(getSetting('readonly'))").result_rows[0][0]
        if not current:
            raise StoreError(f"cannot make the ClickHouse session read-only: {failure}")

    def __getattr__(self, name: str) -> Any:
        if name in _WRITES:
            raise AttributeError(name)
        return getattr(self._client, name)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        raise QueryError("the store is open read-only")

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        raise QueryError("the store is open read-only")
