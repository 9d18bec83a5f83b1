"""Property: a canary under a secret name survives no shape the generator makes.

Shapes: JSON at any depth (dicts, lists, name/value pair objects, JSON held in JSON strings up to
three levels, any formatting, ``\\u``-escaped keys), query strings and form bodies (``&`` or ``;``),
XML (elements, attributes, name/value elements, namespaces), and every truncation of each.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, quote_plus

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from usagelog.instrumentation.redact import Redactor

REDACTOR = Redactor()
SECRET_NAMES = [
    "password",
    "Password",
    "pass.word",
    "userPwd",
    "user_pwd",
    "api_key",
    "apiKey",
    "X-Api-Key",
    "access_token",
    "refreshToken",
    "client_secret",
    "Authorization",
    "card_number",
    "cardPAN",
    "cvv",
    "ssn",
    "session_id",
    "privateKey",
    "aws.secret.access.key",
]
PLAIN_NAMES = ["id", "name", "user", "items", "data", "value", "span", "company", "note", "city", "x", "é"]
SAFE = st.text(alphabet="abcxyz019 -_.,:;/{}[]=&<>'\"\\é中", max_size=8)
CANARY_BODY = st.text(alphabet="ABCDEFGHKMNPQRSTUVWXYZ23456789", min_size=6, max_size=10)


def canaries() -> st.SearchStrategy[str]:
    return CANARY_BODY.map(lambda s: "QZ" + s)


def scalars() -> st.SearchStrategy[Any]:
    return st.none() | st.booleans() | st.integers(-999, 999) | SAFE | st.sampled_from(PLAIN_NAMES)


def plain_json() -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars(),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(PLAIN_NAMES), inner, max_size=3)
        ),
        max_leaves=8,
    )


@st.composite
def json_holding(draw: st.DrawFn, canary: str) -> Any:
    """A document with the canary under a secret name (or in a name/value pair naming one)."""
    name = draw(st.sampled_from(SECRET_NAMES))
    value: Any = draw(
        st.sampled_from(
            [canary, canary + " tail", [canary], {"inner": canary}, f"prefix {canary}", f'say "{canary}"']
        )
    )
    if draw(st.booleans()):
        node: Any = {name: value}
    else:
        name_key = draw(st.sampled_from(["name", "key", "Name", "field"]))
        value_key = draw(st.sampled_from(["value", "Value", "data"]))
        node = {name_key: name, value_key: value}
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.integers(0, 3))
        siblings = draw(st.dictionaries(st.sampled_from(PLAIN_NAMES), plain_json(), max_size=2))
        if kind == 0:
            node = {**siblings, "wrap": node}
        elif kind == 1:
            node = [*siblings.values(), node]
        elif kind == 2:
            node = (
                {**node, **{k: v for k, v in siblings.items() if k not in node}}
                if isinstance(node, dict)
                else node
            )
        else:  # JSON held in a JSON string
            node = {"payload": json.dumps(node, ensure_ascii=draw(st.booleans()))}
    return node


@st.composite
def json_text(draw: st.DrawFn, canary: str) -> str:
    doc = draw(json_holding(canary))
    text = json.dumps(
        doc,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 2])),
        separators=draw(st.sampled_from([None, (",", ":"), (", ", " : ")])),
    )
    if draw(st.booleans()):  # escape a letter of every secret name's key (still the same JSON)
        for name in SECRET_NAMES:
            text = text.replace(f'"{name}"', '"' + f"\\u{ord(name[0]):04x}" + json.dumps(name)[2:], 1)
    return text


@st.composite
def query_text(draw: st.DrawFn, canary: str) -> str:
    name = draw(st.sampled_from(SECRET_NAMES))
    quote_name = draw(st.sampled_from([lambda s: s, quote, lambda s: quote(s, safe="")]))
    value = draw(st.sampled_from([canary, canary + " x", json.dumps({name: canary}), f"{name}={canary}"]))
    pairs = [
        f"{p}={quote_plus(str(v))}"
        for p, v in draw(st.lists(st.tuples(st.sampled_from(PLAIN_NAMES), SAFE), max_size=4))
    ]
    pairs.insert(draw(st.integers(0, len(pairs))), f"{quote_name(name)}={quote_plus(value)}")
    separator = draw(st.sampled_from(["&", ";"]))
    return separator.join(pairs)


@st.composite
def xml_text(draw: st.DrawFn, canary: str) -> str:
    name = draw(
        st.sampled_from(
            [n for n in SECRET_NAMES if n.replace("_", "a").replace("-", "a").replace(".", "a").isalnum()]
        )
    )
    prefix = draw(st.sampled_from(["", "ns:", "soap:"]))
    shape = draw(st.integers(0, 3))
    if shape == 0:
        node = f"<{prefix}{name}>{canary}</{prefix}{name}>"
    elif shape == 1:
        node = f'<login user="bob" {name}="{canary} z"/>'
    elif shape == 2:
        node = f'<param name="{name}" value="{canary}"/>'
    else:
        node = f"<{prefix}{name}><part>{canary}</part><![CDATA[{canary}]]></{prefix}{name}>"
    for _ in range(draw(st.integers(0, 3))):
        tag = draw(st.sampled_from(["a", "body", "x:env", "user"]))
        node = f"<{tag}><id>7</id>{node}<note>{draw(SAFE).replace('<', '').replace('&', '')}</note></{tag}>"
    return '<?xml version="1.0"?>' + node if draw(st.booleans()) else node


def _assert_redacted(text: str, ctype: str, canary: str, cut: int) -> None:
    data = text.encode()
    assume(canary.encode() in data)
    out = REDACTOR.body(data, ctype, len(data), 1 << 20)
    assert canary not in out, (text, out)
    keep = max(1, min(len(data) - 1, cut))
    out = REDACTOR.body(data[:keep], ctype, len(data), keep)
    assert canary not in out, (data[:keep], out)


FAST = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    st.data(), canaries(), st.sampled_from(["application/json", "text/plain", "", "application/vnd.x+json"])
)
def test_no_canary_survives_json_shapes(data: st.DataObject, canary: str, ctype: str) -> None:
    text = data.draw(json_text(canary))
    _assert_redacted(text, ctype, canary, data.draw(st.integers(1, len(text.encode()))))


@FAST
@given(st.data(), canaries())
def test_no_canary_survives_query_and_form_shapes(data: st.DataObject, canary: str) -> None:
    text = data.draw(query_text(canary))
    assert canary not in REDACTOR.redact_query(text)
    for ctype in ("application/x-www-form-urlencoded", "text/plain"):
        _assert_redacted(text, ctype, canary, data.draw(st.integers(1, len(text))))


@FAST
@given(st.data(), canaries(), st.sampled_from(["application/xml", "text/xml", "application/soap+xml", ""]))
def test_no_canary_survives_xml_shapes(data: st.DataObject, canary: str, ctype: str) -> None:
    text = data.draw(xml_text(canary))
    _assert_redacted(text, ctype, canary, data.draw(st.integers(1, len(text.encode()))))


@FAST
@given(
    st.text(max_size=200),
    st.sampled_from(
        ["application/json", "text/plain", "application/xml", "application/x-www-form-urlencoded"]
    ),
    st.integers(1, 200),
)
def test_redaction_of_any_text_never_raises(text: str, ctype: str, cut: int) -> None:
    data = text.encode("utf-8", "surrogatepass")
    REDACTOR.body(data, ctype, len(data), 1 << 20)
    REDACTOR.body(data[:cut], ctype, len(data), cut)
    REDACTOR.redact_query(text)
    REDACTOR.redact_headers([("X-Thing", text)])
