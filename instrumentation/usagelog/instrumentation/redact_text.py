"""The textual redaction layer: secrets in text that was not (or could not be) parsed.

Used for truncated bodies, text types other than JSON and forms, every string value inside
parsed JSON, and header values. Each scanner finds a candidate *name* with a generic pattern
and asks the caller's ``is_secret`` about it, so the textual layer recognises exactly the
names the structural one does (``pass.word``, ``userPwd``, ``pass\\u0077ord``, ...):

- JSON-like keys ``"name": value`` at any escape level (JSON held in a JSON string, as
  ``{\\"password\\": \\"x\\"}``), whatever the value's type, up to the end of a cut-off text;
- name/value pair objects ``{"name": "password", "value": "x"}`` (also ``key``/``field``/...);
- XML elements ``<password>x</password>`` (their whole content, to the end of a cut-off text)
  and attributes ``password="x"``;
- ``name=value``, ``name: value``, ``'name': 'value'`` shapes and ``scheme://user:password@``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote_plus

REDACTED = "[REDACTED]"

# Members naming the pair in name/value pair objects, and the members holding its value.
NAME_KEYS = frozenset({"name", "key", "field", "param", "parameter", "header", "attribute", "property"})
VALUE_KEYS = frozenset({"value", "val", "values", "data", "content", "text"})

# One character of a JSON key as it appears in text: anything but a quote or a backslash, or
# an escape (``\u0077``, ``\n``) at any escape level. Runs of backslashes are consumed whole,
# so the pattern cannot backtrack exponentially.
_KEY_CHAR = r'(?:[^"\\\r\n]|\\+u[0-9a-fA-F]{4}|\\+(?!u[0-9a-fA-F]{4})[^"\\\r\n])'
# Backslash runs before a quote are bounded (escape levels beyond five do not occur), so a long run
# without a quote costs linear time, not quadratic, whatever USAGELOG_BODY_MAX_BYTES is.
_JSON_KEY = re.compile(rf'(\\{{0,31}})"({_KEY_CHAR}{{1,256}})\\{{0,31}}"\s*:\s*')
_QUOTE_OR_BRACKET = re.compile(r'(\\{0,63})"|[{}\[\]]')
_QUOTE = re.compile(r'(\\{0,63})"')
_XML_TAG = re.compile(r"<([A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?)((?:\s[^<>]*?)?)(/?)(>|\Z)")
_XML_ATTR = re.compile(r"""([A-Za-z_][\w.\-:]*)(\s*=\s*)("[^"<]*"?|'[^'<]*'?)""")
_PAIR = re.compile(r"""(?<![\w.%\-])([\w.%\-]{1,128})(\s*=\s*)("[^"]*"?|'[^']*'?|[^&\s;]*)""")
_COLON = re.compile(r"(?<![\w.\-])([\w.\-]{1,128})([ \t]*:[ \t]*)([^\r\n,]*)")
_SINGLE_QUOTED = re.compile(r"""(?<![\w.\-])'([\w.\-]{1,128})'(\s*:\s*)('(?:[^'\\]|\\.)*'?|[^,}\]\s]*)""")
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.\-]*://[^/\s:@]*:)([^@\s/]+)(@)")
_ESCAPED_UNICODE = re.compile(r"\\+u([0-9a-fA-F]{4})")
_ESCAPED_CHAR = re.compile(r"\\+(.)")

IsSecret = Callable[[str], bool]


def decode_key(raw: str) -> str:
    """A key as written in (possibly escaped) JSON text, unescaped enough to compare its name."""
    if "\\" not in raw:
        return raw
    raw = _ESCAPED_UNICODE.sub(lambda m: chr(int(m.group(1), 16)), raw)
    return _ESCAPED_CHAR.sub(r"\1", raw)


def _quote_level(run: int) -> int:
    """The escape level a quote preceded by ``run`` backslashes delimits strings of.

    Level 0 is the text itself; level 1 is JSON held in a JSON string (its quotes written ``\\"``),
    and so on. An even run is a level-0 quote after literal backslashes; in general the level is
    the number of trailing one bits of ``run``.
    """
    return (run ^ (run + 1)).bit_length() - 1


def end_of_value(text: str, start: int, level: int) -> int:
    """Index just past the JSON value starting at ``start`` at escape ``level`` (or the end of
    a cut-off text). A quote of a shallower level (an enclosing string that ends) ends it too."""
    n = len(text)
    if start >= n:
        return n
    delimiter = "\\" * ((1 << level) - 1) + '"'
    if text.startswith(delimiter, start):
        for match in _QUOTE.finditer(text, start + len(delimiter)):
            if _quote_level(len(match.group(1))) <= level:
                return match.end()
        return n
    if text[start] in "[{":
        depth, in_string = 0, False
        for match in _QUOTE_OR_BRACKET.finditer(text, start):
            if match.group(0)[-1] == '"':
                quote_level = _quote_level(len(match.group(1)))
                if quote_level < level:
                    return match.start()  # the enclosing string ended: so does this value
                if quote_level == level:
                    in_string = not in_string
            elif not in_string:
                if match.group(0) in "[{":
                    depth += 1
                else:
                    depth -= 1
                    if depth == 0:
                        return match.end()
        return n
    i = start
    while i < n and text[i] not in ',}] \t\r\n\\"':
        i += 1
    return i


def _placeholder(level: int) -> str:
    quote = "\\" * ((1 << level) - 1) + '"'
    return quote + REDACTED + quote


def redact_json_keys(text: str, is_secret: IsSecret) -> str:
    """Replace the value after every secret ``"name":`` in JSON-like text, at any escape level."""
    out: list[str] = []
    pos = 0
    for match in _JSON_KEY.finditer(text):
        if match.start() < pos or not is_secret(decode_key(match.group(2))):
            continue
        level = _quote_level(len(match.group(1)))
        out.append(text[pos : match.end()])
        out.append(_placeholder(level))
        pos = max(end_of_value(text, match.end(), level), match.end())
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _string_value(text: str, start: int, level: int) -> str | None:
    """The (unescaped) string value starting at ``start``, or None if it is not a string."""
    delimiter = "\\" * ((1 << level) - 1) + '"'
    if not text.startswith(delimiter, start):
        return None
    end = end_of_value(text, start, level)
    return decode_key(text[start + len(delimiter) : max(end - len(delimiter), start + len(delimiter))])


def _enclosing_objects(text: str, positions: list[int], level: int) -> list[tuple[int, int]]:
    """For each position (ascending), the start and end of the innermost JSON-like object at
    escape ``level`` holding it (the text's ends where it was cut off), in one pass: strings at
    ``level`` are skipped, brackets are matched with a stack."""
    starts: list[int] = []
    ends: list[int] = []
    stack: list[tuple[int, list[int]]] = []  # open brackets: (start, the positions directly inside)
    outside: list[int] = []  # positions in no object
    in_string = False
    i = 0

    def take(before: int) -> None:
        nonlocal i
        while i < len(positions) and positions[i] < before:
            starts.append(stack[-1][0] if stack else 0)
            ends.append(len(text))
            (stack[-1][1] if stack else outside).append(i)
            i += 1

    for match in _QUOTE_OR_BRACKET.finditer(text):
        take(match.start())
        token = match.group(0)
        if token[-1] == '"':
            if _quote_level(len(match.group(1))) == level:
                in_string = not in_string
        elif not in_string:
            if token in "[{":
                stack.append((match.start(), []))
            elif stack:
                for k in stack.pop()[1]:
                    ends[k] = match.end()
    take(len(text) + 1)
    return list(zip(starts, ends, strict=True))


def redact_named_pairs(text: str, is_secret: IsSecret) -> str:
    """In JSON-like objects whose name member names a secret (``{"name": "password", "value":
    "x"}``, in either order, whatever the value holds), replace the value members."""
    named: dict[int, list[int]] = {}  # escape level -> positions of name members naming a secret
    for match in _JSON_KEY.finditer(text):
        if decode_key(match.group(2)).lower() not in NAME_KEYS:
            continue
        level = _quote_level(len(match.group(1)))
        value = _string_value(text, match.end(), level)
        if value and is_secret(value):
            named.setdefault(level, []).append(match.start())
    if not named:
        return text
    objects = sorted({b for level, found in named.items() for b in _enclosing_objects(text, found, level)})
    out: list[str] = []
    pos = 0
    for start, end in objects:
        for member in _JSON_KEY.finditer(text, max(start, pos), end):
            if member.start() < pos or decode_key(member.group(2)).lower() not in VALUE_KEYS:
                continue
            level = _quote_level(len(member.group(1)))
            out.append(text[pos : member.end()])
            out.append(_placeholder(level))
            pos = max(end_of_value(text, member.end(), level), member.end())
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def redact_xml(text: str, is_secret: IsSecret) -> str:
    """Secret elements lose their content (to the end of a cut-off text) and attribute values;
    secret attributes lose their value; so do the value attributes (and the content) of an
    element naming a secret, as ``<param name="password" value="x"/>``."""
    out: list[str] = []
    pos = 0
    for tag in _XML_TAG.finditer(text):
        if tag.start() < pos:
            continue
        qname, attrs, self_closing = tag.group(1), tag.group(2), tag.group(3)
        tag_secret = is_secret(qname.rpartition(":")[2])
        named = hide_content = tag_secret
        if attrs and not tag_secret:
            found = list(_XML_ATTR.finditer(attrs))
            named = any(m.group(1).lower() in NAME_KEYS and is_secret(m.group(3).strip("\"'")) for m in found)
            hide_content = named and not any(m.group(1).lower() in VALUE_KEYS for m in found)

        def attr(m: re.Match[str], tag_secret: bool = tag_secret, named: bool = named) -> str:
            name = m.group(1).lower()
            if tag_secret or (name not in NAME_KEYS and ((named and name in VALUE_KEYS) or is_secret(name))):
                return m.group(1) + m.group(2) + m.group(3)[:1] + REDACTED + m.group(3)[:1]
            return m.group(0)

        new_attrs = _XML_ATTR.sub(attr, attrs) if attrs else attrs
        if not hide_content and new_attrs == attrs:
            continue
        out.append(text[pos : tag.start()])
        out.append(f"<{qname}{new_attrs}{self_closing}{tag.group(4)}")
        pos = tag.end()
        if hide_content and not self_closing:
            close = re.compile(rf"</{re.escape(qname)}\s*>").search(text, pos)
            out.append(REDACTED)
            pos = close.start() if close else len(text)
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def redact_shapes(text: str, is_secret: IsSecret) -> str:
    """``name=value``, ``name: value``, ``'name': value`` and URL user-info passwords."""

    def pair(m: re.Match[str]) -> str:
        name = m.group(1)
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if not m.group(3) or m.group(3).strip("\"'") == REDACTED or not is_secret(name):
            return m.group(0)
        return m.group(1) + m.group(2) + REDACTED

    text = _SINGLE_QUOTED.sub(
        lambda m: m.group(0) if not is_secret(m.group(1)) else f"'{m.group(1)}'{m.group(2)}'{REDACTED}'",
        text,
    )
    text = _PAIR.sub(pair, text)
    text = _COLON.sub(pair, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    return text
