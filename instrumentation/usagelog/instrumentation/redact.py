"""Redaction of secrets in bodies, query strings and headers, applied before anything leaves the process.

Two layers, both always on:
1. structural: JSON bodies (any depth), form bodies and query strings are parsed, and values
   of fields whose names look secret are replaced with ``[REDACTED]``;
2. textual: whatever was not parsed (truncated JSON, other text types) gets a pattern pass over
   ``"name": "value"``, ``name=value`` and ``name: value`` shapes.
``Authorization`` and ``Cookie`` headers are never recorded at all. Binary and non-UTF-8
bodies are recorded as a marker with their size and a SHA-256 prefix, never as bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

REDACTED = "[REDACTED]"

# Matched case-insensitively as substrings of the field name, after removing - and _.
BUILTIN_SECRET_NAMES = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "apikey",
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


class Redactor:
    """Decides which names are secret and rewrites values accordingly."""

    def __init__(self, extra_names: Iterable[str] = ()) -> None:
        names = [self._normalise(n) for n in (*BUILTIN_SECRET_NAMES, *extra_names) if n.strip()]
        names = list(dict.fromkeys(names))
        # Names of four letters or more match anywhere in a field name ("access_token",
        # "userPassword"); shorter ones only as a whole word, so "span" or "company" stay.
        self._long = tuple(n for n in names if len(n) > 3)
        self._short = frozenset(n for n in names if len(n) <= 3)
        self._any_name = re.compile("|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)))
        long_alt = "|".join(
            "[-_]?".join(re.escape(ch) for ch in n) for n in sorted(self._long, key=len, reverse=True)
        )
        short_alt = "|".join(re.escape(n) for n in sorted(self._short))
        name = (
            rf"(?:[\w.\-]*(?:{long_alt})[\w.\-]*"
            rf"|(?:[\w.\-]*[-_.])?(?:{short_alt})(?![a-z0-9])(?:[-_.][\w.\-]*)?)"
        )
        self._json_key = re.compile(rf'"{name}"\s*:\s*', re.IGNORECASE)
        self._pair_pattern = re.compile(rf"(\b{name}=)([^&\s;]*)", re.IGNORECASE)
        self._header_pattern = re.compile(rf"(\b{name}\s*:\s*)([^\r\n,]*)", re.IGNORECASE)
        self._cache: dict[str, bool] = {}

    @staticmethod
    def _normalise(name: str) -> str:
        return name.lower().replace("-", "").replace("_", "").replace(" ", "").strip()

    def is_secret(self, name: str) -> bool:
        cached = self._cache.get(name)
        if cached is None:
            norm = self._normalise(name)
            cached = any(n in norm for n in self._long) or any(
                word in self._short for word in re.split(r"[-_.\s]+", name.lower())
            )
            if len(self._cache) < 4096:
                self._cache[name] = cached
        return cached

    # -- structured values -------------------------------------------------------------
    def redact_json_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: (REDACTED if self.is_secret(str(k)) and v not in (None, "") else self.redact_json_value(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.redact_json_value(v) for v in value]
        return value

    def redact_pairs(self, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(k, REDACTED if self.is_secret(k) and v else v) for k, v in pairs]

    def redact_query(self, query: str) -> str:
        if not query:
            return ""
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False)
        except ValueError:
            return self.redact_text(query)
        return urlencode(self.redact_pairs(pairs), safe="[]/:,")

    def redact_text(self, text: str) -> str:
        # Every pattern below needs a secret name in the text. For ASCII text one search over
        # a normalised copy rules that out cheaply; the patterns only run when it might match.
        # (Non-ASCII text always runs them: case folding can map other letters onto ASCII.)
        if text.isascii() and not self._any_name.search(text.lower().replace("-", "").replace("_", "")):
            return text
        text = self._redact_json_text(text)
        text = self._pair_pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return self._header_pattern.sub(lambda m: m.group(1) + REDACTED, text)

    def _redact_json_text(self, text: str) -> str:
        """Replace the value after every ``"secret-name":`` in JSON-like text, whatever its type,
        up to the end of the text when the value is cut off (truncated bodies)."""
        out: list[str] = []
        pos = 0
        for match in self._json_key.finditer(text):
            if match.start() < pos:
                continue  # inside a value already replaced
            out.append(text[pos : match.end()])
            out.append('"' + REDACTED + '"')
            pos = _end_of_json_value(text, match.end())
        out.append(text[pos:])
        return "".join(out)

    def redact_headers(self, headers: Iterable[tuple[str, str]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in headers:
            lower = name.lower()
            if lower in NEVER_RECORDED_HEADERS:
                continue
            out[lower] = REDACTED if self.is_secret(lower) else self.redact_text(value)
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
        if not truncated:
            if "json" in ctype:
                try:
                    result = json.dumps(
                        self.redact_json_value(json.loads(text)), ensure_ascii=False, separators=(",", ":")
                    )
                except ValueError:
                    result = None
            elif ctype == "application/x-www-form-urlencoded":
                result = self.redact_query(text)
        if result is None:
            result = self.redact_text(text)
        else:
            # Second layer even after a structural pass: cheap, and catches secrets inside strings.
            result = self.redact_text(result)
        if truncated:
            result += f"...[truncated, {total_size} bytes]"
        return result


def _end_of_json_value(text: str, start: int) -> int:
    """Index just past the JSON value starting at ``start`` (or the end of a cut-off text)."""
    n = len(text)
    if start >= n:
        return n
    first = text[start]
    if first == '"':
        i = start + 1
        while i < n:
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                return i + 1
            i += 1
        return n
    if first in "[{":
        depth, i, in_string = 0, start, False
        while i < n:
            ch = text[i]
            if in_string:
                if ch == "\\":
                    i += 1
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return n
    i = start
    while i < n and text[i] not in ",}] \t\r\n":
        i += 1
    return i
