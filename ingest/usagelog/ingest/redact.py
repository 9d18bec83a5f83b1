"""Secrets out of messages: the one function every message that may hold a URL goes through.

A ClickHouse, Kafka, archive (``s3://``) or webhook URL may carry credentials: a password in
its user info (``user:pass@host``, the password perhaps holding ``@``, ``/`` or ``?`` unescaped),
or a query parameter (``?password=``, ``X-Amz-Signature=``, ``;token=``). :func:`redact_url`
hides them in one URL, :func:`redact` in any text (an error message from a client library that
quotes the URL it failed on, say). Both err on the side of hiding too much: everything up to the
last ``@`` of a URL counts as user info.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact", "redact_url"]

MASK = "***"

# Query parameter names whose values are secrets (case-insensitive, anywhere in the name).
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|key|auth|cred|sig|session", re.IGNORECASE)
# In free text only the unmistakable ones, so that "expected key=value" stays readable.
_SECRET_PAIR = re.compile(
    r"(?i)(?<![\w.\-])([\w.\-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|"
    r"credential|signature)[\w.\-]*)(\s*[=:]\s*)([^\s&;,'\"<>)]+)"
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:(?://)?")
# A URL in free text runs to the next space (a password may hold quotes), less the punctuation
# that ends a sentence or a clause right after it.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S*?(?=[:,.;)'\"\]]*(?:\s|$))")


def redact_url(url: str, *, path: bool = True) -> str:
    """``url`` without the secrets it may hold: the password (or a lone user name, which may be
    a token) of its user info and the values of secret-looking query parameters; with
    ``path=False`` also its path and query (webhooks carry their token in the path)."""
    scheme = _SCHEME.match(url)
    head = scheme.group(0) if scheme else ""
    rest = url[len(head) :]
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        rest = (f"{user}:{MASK}" if colon and user else MASK) + "@" + rest
    if not path:
        at = rest.rfind("@") + 1
        cut = re.search(r"[/?#;]", rest[at:])
        return head + (rest if cut is None else rest[: at + cut.start()] + "/" + MASK)
    split = re.search(r"[?#;]", rest[rest.rfind("@") + 1 :])
    if split is None:
        return head + rest
    start = rest.rfind("@") + 1 + split.start()
    return head + rest[:start] + _redact_parameters(rest[start:])


def _redact_parameters(query: str) -> str:
    def one(match: re.Match[str]) -> str:
        name, value = match.group(2), match.group(4)
        return match.group(1) + name + match.group(3) + (MASK if _SECRET_PARAMETER.search(name) else value)

    return re.sub(r"([?#;&])([^=&;#]*)(=?)([^&;#]*)", one, query)


def redact(text: str) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`), and ``password=...``-like
    pairs outside URLs too."""
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)

    def pair(match: re.Match[str]) -> str:
        value = match.group(3)
        end = value.rstrip(":.,")  # the punctuation after a value belongs to the sentence
        return match.group(1) + match.group(2) + MASK + value[len(end) :] if end != MASK else match.group(0)

    return _SECRET_PAIR.sub(pair, text)
