"""Flask hooks that complement WSGI capture: the unhandled exception and request-context user IDs.

Both are Flask signals connected once per process, for every app: ``got_request_exception``
(sent only for unhandled exceptions, so free otherwise) records the exception class and the
matched route, and ``request_tearing_down`` (connected only when a ``g:`` or ``callable:``
user source is configured) reads the user ID while ``flask.g`` and the request still exist.
Both write to the request's exchange, which capture keeps in the environ.
"""

from __future__ import annotations

import logging
from typing import Any

from .capture import exchange_of
from .event import error_type_of
from .userid import UserResolver

_logger = logging.getLogger("usagelog")
_connected: dict[str, Any] = {}


def connect_flask_signals(resolver: UserResolver) -> None:
    import flask

    def on_exception(sender: Any, exception: BaseException, **_: Any) -> None:
        try:
            exchange = exchange_of(flask.request.environ)
            if exchange is None:
                return
            if not exchange.error_type:
                exchange.error_type = error_type_of(exception)
            rule = flask.request.url_rule
            if rule is not None and not exchange.route:
                exchange.route = rule.rule
        except Exception:
            _logger.debug("usagelog: could not record the exception type", exc_info=True)

    def on_teardown(sender: Any, **_: Any) -> None:
        try:
            exchange = exchange_of(flask.request.environ)
            if exchange is not None:
                exchange.context_users = resolver.from_context(flask.request)
        except Exception:
            _logger.debug("usagelog: could not read the user ID at teardown", exc_info=True)

    disconnect_flask_signals()
    flask.got_request_exception.connect(on_exception, weak=False)
    _connected["exception"] = on_exception
    if resolver.needs_context:
        flask.request_tearing_down.connect(on_teardown, weak=False)
        _connected["teardown"] = on_teardown


def disconnect_flask_signals() -> None:
    import flask

    if "exception" in _connected:
        flask.got_request_exception.disconnect(_connected.pop("exception"))
    if "teardown" in _connected:
        flask.request_tearing_down.disconnect(_connected.pop("teardown"))
