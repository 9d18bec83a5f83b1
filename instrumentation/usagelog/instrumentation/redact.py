"""Redaction of secrets in bodies, query strings and headers, applied before anything leaves the process.

Two layers, both always on:
1. structural: JSON bodies (any depth, and JSON held in string values), form bodies and query
   strings (``&`` or ``;`` separated) are parsed; values of fields whose names look secret are
   replaced with ``[REDACTED]``, as are the values of name/value pair objects naming a secret
   (``{"name": "password", "value": "..."}``);
2. textual (:mod:`.redact_text`): every string value and whatever was not parsed (truncated
   JSON, XML, other text types) gets a pass over ``"name": value`` (at any escape level),
   ``<name>value</name>``, ``name="value"``, ``name=value`` and ``name: value`` shapes.
Names are compared normalised: case, separators (``-``, ``_``, ``.``, spaces) and JSON/URL
escapes do not matter, and camelCase words count as words (``userPwd`` holds ``pwd``).
``Authorization`` and ``Cookie`` headers are never recorded at all; other headers whose names
hold ``key`` as a word (``X-Key``, ``X-Access-Key``) are redacted on top of the secret names.
Binary and non-UTF-8 bodies are recorded as a marker with their size and a SHA-256 prefix.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from . import redact_text as rt
from .redact_text import NAME_KEYS, REDACTED, VALUE_KEYS

# Matched case-insensitively: names of four letters or more as substrings of the field name
# with every separator removed, shorter ones only as a whole word (see Redactor.is_secret).
BUILTIN_SECRET_NAMES = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "authorization",
    "auth",
    "cookie",
    "session",
    "credential",
    "privatekey",
    "cardnumber",
    "creditcard",
    "ccnumber",
    "pan",
    "cvv",
    "cvc",
    "ssn",
    "signature",
)
# Header names holding one of these as a word are secret too (a header carries one value: an
# ``X-Key`` is a credential, where a JSON ``key`` member usually is not).
HEADER_SECRET_WORDS = frozenset({"key"})
# Headers dropped entirely, whatever the configuration.
NEVER_RECORDED_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})

_TEXT_TYPES = (
    "text/",
    "application/json",
    "application/x-www-form-urlencoded",
    "application/xml",
    "+json",
    "+xml",
)
_SEPARATORS = re.compile(r"[\W_]+")
# Words of a name: separators split, and so does camelCase (``userPwd``, ``cardPAN``, ``SSNLast4``).
_WORDS = re.compile(r"[A-Z]{2,}(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+|[^\W\d_]+")
_QUERY_SEPARATORS = re.compile(r"([&;])")
_NAME_CACHE_MAX_ENTRIES = 4096
_NAME_CACHE_MAX_CHARS = 64  # longer names are checked each time, not kept
# Header values that hold nothing to redact, remembered: most requests repeat their client's
# (accept, user agent, host). Only such values are kept, so no secret stays in the cache.
_CLEAN_VALUE_CACHE_MAX_ENTRIES = 4096
_CLEAN_VALUE_CACHE_MAX_CHARS = 256
_MAX_DEPTH = 64  # JSON nesting walked structurally; deeper documents go to the textual layer


# For ASCII text, deleting every ASCII character that is not a letter or a digit is the same as
# _SEPARATORS, and quicker.
_ASCII_SEPARATORS = str.maketrans("", "", "".join(chr(c) for c in range(128) if not chr(c).isalnum()))


def _squash(name: str) -> str:
    if name.isascii():
        return name.lower().translate(_ASCII_SEPARATORS)
    return _SEPARATORS.sub("", name.lower())


def _words(name: str) -> list[str]:
    return [w.lower() for w in _WORDS.findall(name)]


class _TooDeep(Exception):
    pass


class Redactor:
    """Decides which names are secret and rewrites values accordingly."""

    def __init__(self, extra_names: Iterable[str] = ()) -> None:
        names = [_squash(n) for n in (*BUILTIN_SECRET_NAMES, *extra_names) if n.strip()]
        names = [n for n in dict.fromkeys(names) if n]
        # Names of four letters or more match anywhere in a field name ("access_token",
        # "userPassword"); shorter ones only as a whole word, so "span" or "company" stay.
        self._long = tuple(n for n in names if len(n) > 3)
        self._short = frozenset(n for n in names if len(n) <= 3)
        # The textual layer only runs when the text might hold a secret name.
        self._any_name = re.compile("|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)))
        self._cache: dict[str, bool] = {}
        self._header_cache: dict[str, bool] = {}
        self._clean_header_values: set[tuple[str, str]] = set()

    def is_secret(self, name: str) -> bool:
        cached = self._cache.get(name)
        if cached is None:
            cached = any(n in _squash(name) for n in self._long) or any(
                word in self._short for word in _words(name)
            )
            if len(name) <= _NAME_CACHE_MAX_CHARS and len(self._cache) < _NAME_CACHE_MAX_ENTRIES:
                self._cache[name] = cached
        return cached

    def is_secret_header(self, name: str) -> bool:
        cached = self._header_cache.get(name)
        if cached is None:
            cached = self.is_secret(name) or any(word in HEADER_SECRET_WORDS for word in _words(name))
            if len(name) <= _NAME_CACHE_MAX_CHARS and len(self._header_cache) < _NAME_CACHE_MAX_ENTRIES:
                self._header_cache[name] = cached
        return cached

    def _names_a_secret(self, obj: dict[Any, Any]) -> bool:
        """Whether a name/value pair object names a secret (``{"name": "password", ...}``)."""
        for key, value in obj.items():
            if isinstance(value, str) and str(key).lower() in NAME_KEYS and self.is_secret(value):
                return True
        return False

    # -- structured values -------------------------------------------------------------
    def redact_json_value(self, value: Any, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise _TooDeep
        if isinstance(value, str):
            return self.redact_string(value, depth)
        if isinstance(value, dict):
            named = any(str(k).lower() in VALUE_KEYS for k in value) and self._names_a_secret(value)
            out: dict[Any, Any] = {}
            for k, v in value.items():
                key = str(k)
                if v not in (None, "") and (self.is_secret(key) or (named and key.lower() in VALUE_KEYS)):
                    out[k] = REDACTED
                else:
                    out[self.redact_text(k) if isinstance(k, str) else k] = self.redact_json_value(
                        v, depth + 1
                    )
            return out
        if isinstance(value, list):
            return [self.redact_json_value(v, depth + 1) for v in value]
        return value

    def redact_string(self, text: str, depth: int = 0) -> str:
        """A string value: JSON held in it is redacted structurally (and re-serialised only if
        something changed), anything else textually."""
        if text[:1] in "{[" or text.lstrip()[:1] in "{[":
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                parsed = None
            if isinstance(parsed, (dict, list)):
                try:
                    redacted = self.redact_json_value(parsed, depth + 1)
                except _TooDeep:
                    return self.redact_text(text)
                if redacted == parsed:
                    return text
                return json.dumps(redacted, ensure_ascii=False, separators=(",", ":"))
        return self.redact_text(text)

    def redact_pairs(self, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(k, REDACTED if self.is_secret(k) and v else v) for k, v in pairs]

    def redact_query(self, query: str) -> str:
        """A query string or form body (``&`` or ``;`` separated), rewritten in place: secret
        parameters lose their value; other values get the string pass, re-encoded if changed."""
        if not query:
            return ""
        if not self._may_hold_secret(query):
            return query
        parts = _QUERY_SEPARATORS.split(query)
        for i in range(0, len(parts), 2):
            name, eq, value = parts[i].partition("=")
            if not eq:
                continue
            if value and self.is_secret(unquote_plus(name)):
                parts[i] = name + "=" + REDACTED
            elif value:
                plain = unquote_plus(value)
                redacted = self.redact_string(plain)
                if redacted != plain:
                    parts[i] = name + "=" + quote_plus(redacted, safe="[]/:,")
        return "".join(parts)

    def _may_hold_secret(self, text: str) -> bool:
        # Every textual pattern needs a secret name (or an escape hiding one, or a URL's user
        # info). For ASCII text one search over a squashed copy rules that out cheaply.
        # (Non-ASCII text always runs them: case folding can map other letters onto ASCII.)
        if not text.isascii() or "\\" in text or "%" in text or "://" in text:
            return True
        return self._any_name.search(_squash(text)) is not None

    def redact_text(self, text: str) -> str:
        if not self._may_hold_secret(text):
            return text
        is_secret = self.is_secret
        text = rt.redact_named_pairs(text, is_secret)
        text = rt.redact_json_keys(text, is_secret)
        if "<" in text:
            text = rt.redact_xml(text, is_secret)
        return rt.redact_shapes(text, is_secret)

    def redact_headers(self, headers: Iterable[tuple[str, str]]) -> dict[str, str]:
        out: dict[str, str] = {}
        clean = self._clean_header_values
        for name, value in headers:
            lower = name.lower()
            if lower in NEVER_RECORDED_HEADERS:
                continue
            if (lower, value) in clean:
                out[lower] = value
            elif self.is_secret_header(lower):
                out[lower] = REDACTED
            else:
                out[lower] = redacted = self.redact_text(value)
                if (
                    redacted == value
                    and len(value) <= _CLEAN_VALUE_CACHE_MAX_CHARS
                    and len(clean) < _CLEAN_VALUE_CACHE_MAX_ENTRIES
                ):
                    clean.add((lower, value))
        return out

    # -- bodies ------------------------------------------------------------------------
    def body(self, data: bytes, content_type: str, total_size: int, max_bytes: int) -> str:
        """A safe, redacted, possibly truncated text form of a body ('' for none)."""
        if not data:
            return ""
        ctype = content_type.split(";", 1)[0].strip().lower()
        truncated = total_size > len(data) or len(data) > max_bytes
        data = data[:max_bytes]
        is_text = not ctype or any(t in ctype for t in _TEXT_TYPES)
        text: str | None = None
        if is_text:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                # A cut through a multi-byte character at the truncation point is still text.
                if truncated and exc.start >= len(data) - 3:
                    text = data[: exc.start].decode("utf-8", errors="strict")
        if text is None:
            digest = hashlib.sha256(data).hexdigest()[:16]
            return f"[binary {total_size} bytes, {ctype or 'unknown type'}, sha256:{digest}]"
        result: str | None = None
        # One cheap look at the whole text rules out most bodies: without a secret name (or an
        # escape that could hide one) anywhere, no field, pair or string in it can be secret, and
        # the body is kept as it was sent.
        if not self._may_hold_secret(text):
            result = text
        elif not truncated:
            if "json" in ctype:
                try:
                    result = json.dumps(
                        self.redact_json_value(json.loads(text)), ensure_ascii=False, separators=(",", ":")
                    )
                except (ValueError, RecursionError, _TooDeep):
                    result = None  # not JSON, or nested too deep to walk: the textual layer
            elif ctype == "application/x-www-form-urlencoded":
                result = self.redact_query(text)
        if result is None:
            result = self.redact_text(text)
        if truncated:
            result += f"...[truncated, {total_size} bytes]"
        return result
