"""User ID sources (``USAGELOG_USER_ID_FROM``): an ordered list, the first non-empty value wins.

- ``jwt:<claim>``: a claim of the Bearer JWT in ``Authorization``. The app has already
  authenticated the token, so only the payload is read (no signature check here).
- ``basic``: the user name of HTTP Basic auth.
- ``header:<Name>``: a request header set by the app's gateway (e.g. ``X-User-Id``).
- ``g:<attr>``: an attribute of ``flask.g`` after the view ran.
- ``callable:<module>:<function>``: called with the Flask request; returns the ID or None.

``g`` and ``callable`` sources need the request context, so they are read at request
teardown; the header-based ones are read later, off the request path, from the few
header values kept for that purpose (never stored).
"""

from __future__ import annotations

import base64
import binascii
import importlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

_logger = logging.getLogger("usagelog")

TOKEN_CACHE_SIZE = 4096
CONTEXT_SOURCES = ("g", "callable")


def validate_sources(sources: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the first malformed source."""
    for source in sources:
        kind, _, arg = source.partition(":")
        if kind == "basic" and not arg:
            continue
        if kind in ("jwt", "header", "g") and arg:
            continue
        if kind == "callable" and arg.count(":") == 1 and all(arg.split(":")):
            continue
        raise ValueError(
            f"bad user ID source {source!r} (expected jwt:<claim>, basic, header:<Name>, "
            "g:<attr> or callable:<module>:<function>)"
        )


def needs_request_context(sources: Sequence[str]) -> bool:
    return any(source.partition(":")[0] in CONTEXT_SOURCES for source in sources)


def header_environ_keys(sources: Sequence[str]) -> tuple[str, ...]:
    """WSGI environ keys whose values the header-based sources need."""
    keys: list[str] = []
    for source in sources:
        kind, _, arg = source.partition(":")
        if kind in ("jwt", "basic"):
            key = "HTTP_AUTHORIZATION"
        elif kind == "header":
            key = "HTTP_" + arg.upper().replace("-", "_")
        else:
            continue
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def jwt_claim(authorization: str, claim: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return ""
    try:
        payload = json.loads(_b64decode(token.split(".")[1]))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return ""
    value: Any = payload
    for part in claim.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None or isinstance(value, (dict, list)):
        return ""
    # A JSON escape can smuggle a lone surrogate into a claim; OTLP strings must be UTF-8.
    return str(value).encode("utf-8", "replace").decode("utf-8")


def basic_user(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[0]


class UserResolver:
    """Resolves the user ID of one request from the configured sources."""

    def __init__(self, sources: Sequence[str]) -> None:
        validate_sources(sources)
        self.sources = tuple(sources)
        self.header_keys = header_environ_keys(self.sources)
        self.needs_context = needs_request_context(self.sources)
        self._callables: dict[str, Callable[[Any], Any] | None] = {}
        # Kept in memory only, as long as the process; never written anywhere.
        self._token_cache: dict[tuple[str, str], str] = {}

    def _load_callable(self, spec: str) -> Callable[[Any], Any] | None:
        if spec not in self._callables:
            module_name, _, func_name = spec.partition(":")
            try:
                func = getattr(importlib.import_module(module_name), func_name)
            except (ImportError, AttributeError) as exc:
                _logger.warning("usagelog: USAGELOG_USER_ID_FROM callable:%s cannot be loaded: %s", spec, exc)
                func = None
            self._callables[spec] = func
        return self._callables[spec]

    def from_context(self, request: Any) -> dict[str, str]:
        """Values of the ``g:`` and ``callable:`` sources, read inside the request context."""
        import flask

        found: dict[str, str] = {}
        for source in self.sources:
            kind, _, arg = source.partition(":")
            value: Any = None
            try:
                if kind == "g":
                    value = getattr(flask.g, arg, None)
                elif kind == "callable":
                    func = self._load_callable(arg)
                    value = func(request) if func is not None else None
            except Exception:  # the app's code: a failure means "no user from this source"
                _logger.debug("usagelog: user ID source %s failed", source, exc_info=True)
                value = None
            if value is not None and value != "":
                found[source] = str(value)
        return found

    def resolve(self, headers: dict[str, str], context_values: dict[str, str] | None) -> str:
        """The first non-empty value in source order."""
        for source in self.sources:
            kind, _, arg = source.partition(":")
            if kind in CONTEXT_SOURCES:
                value = (context_values or {}).get(source, "")
            elif kind in ("jwt", "basic"):
                # A client sends the same token many times: decode it once.
                authorization = headers.get("HTTP_AUTHORIZATION", "")
                if not authorization:
                    continue
                cache_key = (source, authorization)
                value = self._token_cache.get(cache_key)  # type: ignore[assignment]
                if value is None:
                    value = jwt_claim(authorization, arg) if kind == "jwt" else basic_user(authorization)
                    if len(self._token_cache) >= TOKEN_CACHE_SIZE:
                        self._token_cache.clear()
                    self._token_cache[cache_key] = value
            else:
                value = headers.get("HTTP_" + arg.upper().replace("-", "_"), "")
            if value:
                return value
        return ""
