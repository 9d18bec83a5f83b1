"""User ID sources (``USAGELOG_USER_ID_FROM``): an ordered list, the first non-empty value wins.

- ``jwt:<claim>``: a claim of the Bearer JWT in ``Authorization``. By default the app is
  trusted to have authenticated the token and only the payload is read; with a key or a JWKS
  configured (``USAGELOG_JWT_KEY``, ``USAGELOG_JWT_KEY_FILE``, ``USAGELOG_JWT_JWKS``, see
  :mod:`.jwtverify`) the signature, ``exp`` and ``nbf`` are checked and an unverifiable
  token gives no user ID.
- ``basic``: the user name of HTTP Basic auth (only from a well-formed ``user:password``; a
  credential without a colon, which RFC 7617 does not allow, is likely a bare API key and
  yields nothing).
- ``header:<Name>``: a request header set by the app's gateway (e.g. ``X-User-Id``).
- ``g:<attr>``: an attribute of ``flask.g`` after the view ran.
- ``callable:<module>:<function>``: called with the Flask request; returns the ID or None.

``g`` and ``callable`` sources need the request context, so they are read at request
teardown; the header-based ones are read later, off the request path, from the few
header values kept for that purpose (never stored).

An ID read from the request's headers (``jwt``, ``basic``, ``header``) is only *claimed* when
the app answered 401: the app did not accept the credential, so the event has no user ID and
the claim goes to ``usagelog.user_id_claimed`` (column ``user_id_claimed``) instead; a JWT
whose signature cannot be verified is claimed the same way. A 403 keeps the user ID: the app
authenticated the caller and refused the operation, and who was refused is what an audit
wants. ``g``/``callable`` values come from the app's own code and are never merely claimed.

Memory held for a client's credentials is bounded in bytes: decoded tokens are cached under a
16-byte digest of the header, IDs longer than :data:`USER_ID_MAX_CHARS` are cut, and the cache
holds at most :data:`TOKEN_CACHE_MAX_BYTES` (accounted per entry).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

_logger = logging.getLogger("usagelog")

CONTEXT_SOURCES = ("g", "callable")
USER_ID_MAX_CHARS = 256  # longer IDs are cut: a client must not choose how much we store
TOKEN_CACHE_MAX_BYTES = 1 << 20
_ENTRY_OVERHEAD = 200  # dict slot, key and value objects and the tuple, per cached token (CPython, 64-bit)


class Verifier(Protocol):
    """Checks a JWT's signature and validity; returns its payload, or None if it is not valid."""

    def verify(self, token: str) -> dict[str, Any] | None: ...


class TokenCache:
    """Decoded credentials by a digest of the header: bounded in bytes whatever clients send."""

    def __init__(self, max_bytes: int = TOKEN_CACHE_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0  # accounted size of what is held
        self._entries: dict[bytes, tuple[str, bool]] = {}
        # Events are usually built by the background thread, but a request thread may build a
        # backlog batch at the same time (see Recorder): evictions must not interleave.
        self._lock = threading.Lock()

    @staticmethod
    def key(source: str, authorization: str) -> bytes:
        digest = hashlib.blake2b(source.encode("utf-8", "surrogatepass") + b"\0", digest_size=16)
        digest.update(authorization.encode("utf-8", "surrogatepass"))
        return digest.digest()

    @staticmethod
    def cost(value: str) -> int:
        return _ENTRY_OVERHEAD + 16 + len(value.encode("utf-8", "surrogatepass"))

    def get(self, key: bytes) -> tuple[str, bool] | None:
        return self._entries.get(key)

    def put(self, key: bytes, value: tuple[str, bool]) -> None:
        cost = self.cost(value[0])
        with self._lock:
            entries = self._entries
            if key in entries:
                return
            while entries and self.bytes + cost > self.max_bytes:
                # Oldest first (dicts keep insertion order).
                self.bytes -= self.cost(entries.pop(next(iter(entries)))[0])
            entries[key] = value
            self.bytes += cost

    def __len__(self) -> int:
        return len(self._entries)


def cap(value: str) -> str:
    """A user ID cut to :data:`USER_ID_MAX_CHARS` and made encodable as UTF-8."""
    return value[:USER_ID_MAX_CHARS].encode("utf-8", "replace").decode("utf-8")


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


def bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return ""
    return token


def jwt_payload(token: str) -> Any:
    """The (unverified) payload of a compact JWT, or None."""
    try:
        return json.loads(_b64decode(token.split(".")[1]))
    except (ValueError, binascii.Error, UnicodeDecodeError, IndexError, RecursionError):
        return None


def claim_of(payload: Any, claim: str) -> str:
    value: Any = payload
    for part in claim.split("."):
        if not isinstance(value, dict):
            return ""
        value = value.get(part)
    if value is None or isinstance(value, (dict, list)):
        return ""
    # A JSON escape can smuggle a lone surrogate into a claim; OTLP strings must be UTF-8.
    return cap(str(value))


def jwt_claim(authorization: str, claim: str) -> str:
    """A claim of the Bearer JWT in an ``Authorization`` value, read without verification."""
    token = bearer_token(authorization)
    return claim_of(jwt_payload(token), claim) if token else ""


def basic_user(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return ""
    user, colon, _ = decoded.partition(":")
    # RFC 7617 requires user-id ":" password. Without the colon the credential is most likely
    # a bare API key sent as Basic: recording it as a user ID would store the secret.
    return cap(user) if colon else ""


class UserResolver:
    """Resolves the user ID of one request from the configured sources."""

    def __init__(self, sources: Sequence[str], verifier: Verifier | None = None) -> None:
        validate_sources(sources)
        self.sources = tuple(sources)
        self.header_keys = header_environ_keys(self.sources)
        self.needs_context = needs_request_context(self.sources)
        self.verifier = verifier
        self._callables: dict[str, Callable[[Any], Any] | None] = {}
        # Kept in memory only, as long as the process; never written anywhere.
        self.token_cache = TokenCache()
        # Each source split once: (source, kind, argument, its environ key for a header source).
        self._parsed = tuple(
            (source, kind, arg, "HTTP_" + arg.upper().replace("-", "_"))
            for source in self.sources
            for kind, _, arg in [source.partition(":")]
        )
        # The last Authorization header's credentials by source: a client sends the same header
        # request after request, and a batch meets it again without a digest per source and event.
        self._last: tuple[str, dict[str, tuple[str, bool]]] = ("", {})

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

    def _from_authorization(self, kind: str, arg: str, authorization: str) -> tuple[str, bool]:
        """(ID, trusted) of a ``jwt``/``basic`` source; untrusted: a JWT failing verification."""
        if kind == "basic":
            return basic_user(authorization), True
        token = bearer_token(authorization)
        if not token:
            return "", True
        value = claim_of(jwt_payload(token), arg)
        if not value or self.verifier is None:
            return value, True
        try:
            verified = self.verifier.verify(token) is not None
        except Exception:  # a verifier bug must not lose the event
            _logger.debug("usagelog: JWT verification failed", exc_info=True)
            verified = False
        return value, verified

    def identify(
        self, headers: dict[str, str], context_values: dict[str, str] | None, status_code: int = 0
    ) -> tuple[str, str]:
        """(user ID, claimed ID): the first trusted non-empty value in source order, and the
        first value that was only claimed before it (see the module docstring)."""
        claimed = ""
        for source, kind, arg, header in self._parsed:
            trusted = True
            if kind in CONTEXT_SOURCES:
                value = cap((context_values or {}).get(source, ""))
            elif kind in ("jwt", "basic"):
                authorization = headers.get("HTTP_AUTHORIZATION", "")
                if not authorization:
                    continue
                value, trusted = self._credential(source, kind, arg, authorization)
            else:
                value = cap(headers.get(header, ""))
            if not value:
                continue
            if trusted and not (status_code == 401 and kind not in CONTEXT_SOURCES):
                return value, claimed
            if not claimed:
                claimed = value
        return "", claimed

    def _credential(self, source: str, kind: str, arg: str, authorization: str) -> tuple[str, bool]:
        """(ID, trusted) of a ``jwt``/``basic`` source for this header: decoded (and verified)
        once per header and source, whatever the number of requests sending it."""
        last = self._last
        if last[0] != authorization:
            # Replaced whole: a request thread building a backlog batch meanwhile sees either.
            last = self._last = (authorization, {})
        found = last[1].get(source)
        if found is None:
            key = TokenCache.key(source, authorization)
            found = self.token_cache.get(key)
            if found is None:
                found = self._from_authorization(kind, arg, authorization)
                self.token_cache.put(key, found)
            last[1][source] = found
        return found

    def resolve(self, headers: dict[str, str], context_values: dict[str, str] | None) -> str:
        """The user ID of a request the app did not reject."""
        return self.identify(headers, context_values)[0]
