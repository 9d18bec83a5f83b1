"""chDB's connection module imported without importing pyarrow until it is used.

``chdb.state.sqlitelike`` (what ``chdb.connect``, and so clickhouse-connect's chDB backend,
imports) tries ``import pyarrow`` when it is first imported, for its Arrow APIs (ArrowTable
output, record batches), and takes pyarrow as absent when that import fails. Importing pyarrow
and numpy costs about 0.1 s, a third of a short CLI command (``usagelog query 'SELECT 1'``),
which never uses them. So the module is imported with pyarrow hidden, and its ``pa`` is then
set to a stand-in that imports the real pyarrow on first use: chDB's Arrow APIs work as before,
and everyone else imports pyarrow as usual.

Done only when it is safe and useful: pyarrow not imported yet, chDB's module not imported yet,
and no other thread running (hiding pyarrow is process-wide for the moment of the import, so a
thread importing it right then would fail). If chDB's module no longer tolerates a missing
pyarrow, it is imported the ordinary way.
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any

_MODULE = "chdb.state.sqlitelike"


class _DeferredPyarrow(types.ModuleType):
    """Stands for pyarrow in chDB's module: the first attribute read imports it."""

    def __getattr__(self, name: str) -> Any:
        import pyarrow

        return getattr(pyarrow, name)


def import_chdb_state() -> None:
    """Import chDB's connection module, deferring pyarrow when that is safe (see the module)."""
    if _MODULE in sys.modules or "pyarrow" in sys.modules or threading.active_count() > 1:
        return
    import chdb  # the engine itself, with pyarrow visible: only its connection module is hidden from

    sys.modules["pyarrow"] = None  # type: ignore[assignment]  # makes `import pyarrow` fail
    try:
        import chdb.state.sqlitelike as sqlitelike

        deferred = getattr(sqlitelike, "pa", "absent") is None
    except ImportError:
        deferred = False
    finally:
        del sys.modules["pyarrow"]
    if deferred:
        setattr(sqlitelike, "pa", _DeferredPyarrow("pyarrow"))  # noqa: B010  (not an attribute mypy knows)
        return
    # Not the module this was written for: forget what was imported without pyarrow, import it again.
    for name in [n for n in sys.modules if n == "chdb.state" or n.startswith("chdb.state.")]:
        del sys.modules[name]
    import chdb.state.sqlitelike  # noqa: F401
