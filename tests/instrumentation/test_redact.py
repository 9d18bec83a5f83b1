"""Redaction: secrets in bodies, query strings and headers never leave the process."""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

import pytest

from usagelog.instrumentation.config import load_settings
from usagelog.instrumentation.redact import REDACTED, Redactor

BIG = 1 << 20
BINARY_MARKER = re.compile(r"^\[binary (\d+) bytes, ([^,]+), sha256:([0-9a-f]{16})\]$")


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


def full(r: Redactor, body: bytes, ctype: str = "application/json") -> str:
    return r.body(body, ctype, len(body), BIG)


def truncated(r: Redactor, body: bytes, keep: int, ctype: str = "application/json") -> str:
    """What the capture hands over for a body longer than the limit: its first ``keep`` bytes."""
    return r.body(body[:keep], ctype, len(body), keep)


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "userPassword",
        "api_key",
        "X-Api-Key",
        "apiKey",
        "access_token",
        "refresh-token",
        "Authorization",
        "client_secret",
        "card_number",
        "cardNumber",
        "credit_card",
        "cvv",
        "card_cvv",
        "cvc",
        "ssn",
        "pan",
        "card.pan",
        "pwd",
        "session_id",
        "private_key",
        "signature",
    ],
)
def test_secret_names_are_recognised(redactor: Redactor, name: str) -> None:
    assert redactor.is_secret(name)


@pytest.mark.parametrize(
    "name",
    ["span", "company", "pancake", "japan", "spanner", "cvvx", "ssnake", "pwdx", "name", "email", "id"],
)
def test_short_secret_names_match_only_as_whole_words(redactor: Redactor, name: str) -> None:
    """``pan``, ``cvv``, ``ssn``, ``pwd`` (three letters) do not match inside other words."""
    assert not redactor.is_secret(name)


# -- JSON ----------------------------------------------------------------------------------------


def test_json_secrets_are_redacted_at_any_depth_in_dicts_and_lists(redactor: Redactor) -> None:
    doc = {
        "user": "bob",
        "password": "hunter2",
        "items": [{"sku": "a", "card_number": "4111111111111111"}, [{"cvv": 123}]],
        "deep": {"x": {"y": {"api_key": "K-SECRET"}}},
        "Authorization": "Bearer abc.def.ghi",
    }
    out = json.loads(full(redactor, json.dumps(doc).encode()))
    assert out == {
        "user": "bob",
        "password": REDACTED,
        "items": [{"sku": "a", "card_number": REDACTED}, [{"cvv": REDACTED}]],
        "deep": {"x": {"y": {"api_key": REDACTED}}},
        "Authorization": REDACTED,
    }


def test_json_secret_holding_an_object_or_list_is_replaced_whole(redactor: Redactor) -> None:
    doc = {"credentials": {"user": "u", "key": "K-1"}, "tokens": ["T-1", "T-2"]}
    out = full(redactor, json.dumps(doc).encode())
    assert json.loads(out) == {"credentials": REDACTED, "tokens": REDACTED}
    assert "K-1" not in out and "T-1" not in out


def test_json_short_names_do_not_over_match(redactor: Redactor) -> None:
    doc = {
        "span": "s1",
        "company": "acme",
        "pancake": "syrup",
        "japan": "tokyo",
        "pan": "4111",
        "card_pan": "4222",
    }
    out = json.loads(full(redactor, json.dumps(doc).encode()))
    assert out == {
        "span": "s1",
        "company": "acme",
        "pancake": "syrup",
        "japan": "tokyo",
        "pan": REDACTED,
        "card_pan": REDACTED,
    }


def test_json_content_type_parameters_and_suffix_types_are_parsed(redactor: Redactor) -> None:
    body = b'{"password": "p1", "a": 1}'
    for ctype in ("application/json; charset=utf-8", "application/vnd.api+json", "APPLICATION/JSON"):
        assert json.loads(full(redactor, body, ctype)) == {"password": REDACTED, "a": 1}


def test_json_top_level_list_is_walked(redactor: Redactor) -> None:
    out = json.loads(full(redactor, b'[{"token": "t"}, 1, "x"]'))
    assert out == [{"token": REDACTED}, 1, "x"]


def test_invalid_json_falls_back_to_the_textual_layer(redactor: Redactor) -> None:
    out = full(redactor, b'{"password": "hunter2", oops}')
    assert "hunter2" not in out
    assert '"password": "[REDACTED]"' in out


def test_secret_inside_a_json_string_value_is_caught_by_the_textual_layer(redactor: Redactor) -> None:
    out = full(redactor, json.dumps({"note": "retry with password=hunter2 please"}).encode())
    assert "hunter2" not in out
    assert "password=[REDACTED]" in out


# -- truncated JSON: the textual layer -----------------------------------------------------------


def test_truncated_json_still_redacts_secrets_textually(redactor: Redactor) -> None:
    body = json.dumps(
        {
            "user": "bob",
            "password": "hunter2",
            "nested": {"api_key": "K-77", "n": 5},
            "cvv": 321,
            "span": "keep-span",
            "company": "keep-co",
            "pad": "x" * 200,
        }
    ).encode()
    out = truncated(redactor, body, 150)
    assert out.endswith(f"...[truncated, {len(body)} bytes]")
    for secret in ("hunter2", "K-77", "321"):
        assert secret not in out
    assert "keep-span" in out and "keep-co" in out and '"user": "bob"' in out


def test_truncation_inside_a_secret_string_hides_its_prefix(redactor: Redactor) -> None:
    body = b'{"a": 1, "access_token": "abcdefghijklmnop"}'
    cut = body.index(b"ghij")
    out = truncated(redactor, body, cut)
    assert "abcdef" not in out
    assert REDACTED in out


def test_structural_pass_is_skipped_for_truncated_bodies(redactor: Redactor) -> None:
    """A truncated body is not re-serialised: its original spacing survives."""
    body = b'{"a":    1,   "b": "' + b"x" * 100 + b'"}'
    out = truncated(redactor, body, 30)
    assert out.startswith('{"a":    1,   "b": "')


@pytest.mark.parametrize("key", ["cvv_code", "ssn_last4", "pan_number", "pwd_hash"])
def test_truncated_json_redacts_short_secret_names_followed_by_another_word(
    redactor: Redactor, key: str
) -> None:
    body = json.dumps({key: "LEAKED-VALUE", "pad": "x" * 100}).encode()
    assert redactor.is_secret(key)
    assert "LEAKED-VALUE" not in full(redactor, body)  # the structural layer gets it...
    assert "LEAKED-VALUE" not in truncated(redactor, body, 60)  # ...the textual one must too


@pytest.mark.parametrize(
    "value", [["first", "LEAKED-VALUE"], {"user": "u", "secret_part": 1, "pin": "LEAKED-VALUE"}]
)
def test_truncated_json_hides_containers_held_by_secret_keys(redactor: Redactor, value: Any) -> None:
    body = json.dumps({"password": value, "pad": "x" * 200}).encode()
    assert "LEAKED-VALUE" not in full(redactor, body)  # full bodies replace the container whole
    assert "LEAKED-VALUE" not in truncated(redactor, body, 80)


# -- forms, query strings, text --------------------------------------------------------------------


def test_form_body_secrets_are_redacted(redactor: Redactor) -> None:
    body = b"username=bob&password=hunter2&card_number=4111&note=a+b&company=acme"
    out = full(redactor, body, "application/x-www-form-urlencoded")
    assert out == "username=bob&password=[REDACTED]&card_number=[REDACTED]&note=a+b&company=acme"


@pytest.mark.parametrize(
    ("query", "secret"),
    [
        ("api_key=K1&q=x", "K1"),
        ("q=x&access_token=T1", "T1"),
        ("password=P1", "P1"),
        ("card_number=4111111111111111", "4111111111111111"),
        ("cvv=987", "987"),
        ("Authorization=Bearer%20zzz", "zzz"),
        ("pass%77ord=ENCODED", "ENCODED"),  # name is compared after URL-decoding
    ],
)
def test_query_string_secrets_are_redacted(redactor: Redactor, query: str, secret: str) -> None:
    out = redactor.redact_query(query)
    assert secret not in out
    assert "[REDACTED]" in out


def test_query_string_keeps_ordinary_parameters(redactor: Redactor) -> None:
    out = redactor.redact_query("span=3&company=acme&pancake=1&page=2&password=x")
    assert out == "span=3&company=acme&pancake=1&page=2&password=[REDACTED]"
    assert redactor.redact_query("") == ""


def test_plain_text_name_value_shapes_are_redacted(redactor: Redactor) -> None:
    text = 'Password: hunter2\napi_key=K1; other=1\n"client_secret": "S1"\nspan: visible'
    out = full(redactor, text.encode(), "text/plain")
    for secret in ("hunter2", "K1", "S1"):
        assert secret not in out
    assert "span: visible" in out and "other=1" in out


def test_extra_redact_fields_from_env_apply_structurally_and_textually() -> None:
    settings = load_settings({"USAGELOG_REDACT_FIELDS": "tenant_pin, otp"})
    r = Redactor(settings.redact_fields)
    doc = {
        "tenant_pin": "1111",
        "tenantPin": "2222",
        "otp": "3333",
        "sms_otp": "4444",
        "hotpot": "keep",
        "a": "x" * 80,
    }
    body = json.dumps(doc).encode()
    out = json.loads(full(r, body))
    assert out["tenant_pin"] == out["tenantPin"] == out["otp"] == out["sms_otp"] == REDACTED
    assert out["hotpot"] == "keep"
    cut = truncated(r, body, body.index(b'"a"'))
    for secret in ("1111", "2222", "3333", "4444"):
        assert secret not in cut
    assert r.redact_query("otp=5555&x=1") == "otp=[REDACTED]&x=1"
    assert not Redactor().is_secret("tenant_pin")  # extras are additive, not built in


# -- headers -------------------------------------------------------------------------------------


def test_credential_headers_are_dropped_entirely(redactor: Redactor) -> None:
    headers = [
        ("Authorization", "Bearer abc"),
        ("Cookie", "sid=xyz"),
        ("Set-Cookie", "sid=xyz"),
        ("Proxy-Authorization", "Basic eA=="),
        ("Accept", "application/json"),
    ]
    assert redactor.redact_headers(headers) == {"accept": "application/json"}


def test_secret_looking_headers_keep_their_name_but_not_their_value(redactor: Redactor) -> None:
    out = redactor.redact_headers([("X-Api-Key", "K1"), ("X-Auth-Token", "T1"), ("X-Request-Id", "r1")])
    assert out == {"x-api-key": REDACTED, "x-auth-token": REDACTED, "x-request-id": "r1"}


def test_header_values_are_remembered_only_when_they_hold_nothing_to_redact(redactor: Redactor) -> None:
    headers = [("Accept", "application/json"), ("X-Api-Key", "k-123"), ("X-Note", "token=abc")]
    first = redactor.redact_headers(headers)
    assert first == {"accept": "application/json", "x-api-key": REDACTED, "x-note": f"token={REDACTED}"}
    assert redactor.redact_headers(headers) == first  # the second time, from what was remembered
    assert redactor._clean_header_values == {("accept", "application/json")}  # no secret kept


def test_header_values_get_the_textual_pass(redactor: Redactor) -> None:
    out = redactor.redact_headers([("X-Forwarded-Query", "q=1&token=abc")])
    assert out == {"x-forwarded-query": "q=1&token=[REDACTED]"}


# -- binary, non-UTF-8, truncation ---------------------------------------------------------------


def test_binary_body_becomes_a_marker_with_size_and_digest(redactor: Redactor) -> None:
    data = b"\x89PNG\r\n\x1a\n" + b"password=hunter2" + bytes(range(256))
    out = redactor.body(data, "image/png", 9000, BIG)
    m = BINARY_MARKER.match(out)
    assert m, out
    assert m.group(1) == "9000"
    assert m.group(2) == "image/png"
    assert m.group(3) == hashlib.sha256(data).hexdigest()[:16]
    assert "hunter2" not in out and "PNG" not in out


def test_utf8_decodable_body_of_a_binary_type_is_still_a_marker(redactor: Redactor) -> None:
    out = full(redactor, b"password=hunter2", "application/octet-stream")
    assert BINARY_MARKER.match(out)
    assert "hunter2" not in out


def test_non_utf8_text_body_becomes_a_marker(redactor: Redactor) -> None:
    data = "caf\u00e9 password=hunter2".encode("latin-1")
    out = full(redactor, data, "text/plain")
    m = BINARY_MARKER.match(out)
    assert m and m.group(1) == str(len(data))
    assert "hunter2" not in out and "caf" not in out


def test_missing_content_type_is_text_if_utf8_else_marker(redactor: Redactor) -> None:
    assert full(redactor, b"token=abc", "") == "token=[REDACTED]"
    out = full(redactor, b"\xff\xfe\x00token=abc", "")
    assert BINARY_MARKER.match(out) and "unknown type" in out and "abc" not in out


def test_empty_body_is_empty(redactor: Redactor) -> None:
    assert redactor.body(b"", "application/json", 0, 10) == ""


def test_truncation_marker_states_the_full_size(redactor: Redactor) -> None:
    out = redactor.body(b"a" * 50, "text/plain", 50, 10)
    assert out == "a" * 10 + "...[truncated, 50 bytes]"


def test_body_truncated_before_the_limit_is_marked_with_its_total_size(redactor: Redactor) -> None:
    """The capture keeps only a prefix; ``total_size`` larger than the data means truncated."""
    assert redactor.body(b"hello", "text/plain", 12345, 4096) == "hello...[truncated, 12345 bytes]"


@pytest.mark.parametrize("keep", [10, 11])
def test_multibyte_character_cut_at_the_limit_still_decodes_as_text(redactor: Redactor, keep: int) -> None:
    data = ("x" * 9 + "\u20ac" + "tail").encode()  # the euro sign is 3 bytes, at offsets 9..11
    out = redactor.body(data, "text/plain; charset=utf-8", len(data), keep)
    assert out == "x" * 9 + f"...[truncated, {len(data)} bytes]"


def test_incomplete_utf8_at_the_end_of_a_complete_body_is_binary(redactor: Redactor) -> None:
    data = ("x" * 9).encode() + "\u20ac".encode()[:2]
    assert BINARY_MARKER.match(full(redactor, data, "text/plain"))


def test_four_byte_character_cut_keeps_the_text_before_it(redactor: Redactor) -> None:
    data = "ab\U0001f600cd".encode()
    for keep in (3, 4, 5):
        assert redactor.body(data, "text/plain", len(data), keep) == f"ab...[truncated, {len(data)} bytes]"


# -- property: a canary under a secret key never survives ------------------------------------------

SECRET_KEYS = [
    "password",
    "api_key",
    "apiKey",
    "access_token",
    "Authorization",
    "client_secret",
    "card_number",
    "cvv",
    "card_cvv",
    "X-Auth-Token",
    "userPassword",
    "session",
    "ssn",
    "refresh-token",
    "pan",
]
PLAIN_KEYS = [
    "id",
    "name",
    "items",
    "span",
    "company",
    "pancake",
    "data",
    "value",
    "meta",
    "notes",
    "city",
    "japan",
    "list",
    "x",
    "é",
    "\u4e2d\u6587",
]
STRING_ALPHABET = 'abcXYZ019 ,:;{}[]"\\/=&\n\t\u00e9\u4e2d\U0001f600'


def _random_scalar(rng: random.Random) -> Any:
    kind = rng.randrange(6)
    if kind == 0:
        return "".join(rng.choice(STRING_ALPHABET) for _ in range(rng.randrange(12)))
    if kind == 1:
        return rng.randrange(-1000, 1000)
    if kind == 2:
        return rng.random() * 100
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    return rng.choice(PLAIN_KEYS)


def _random_container(rng: random.Random, depth: int) -> Any:
    if depth <= 0 or rng.random() < 0.3:
        return _random_scalar(rng)
    if rng.random() < 0.5:
        return [_random_container(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {rng.choice(PLAIN_KEYS): _random_container(rng, depth - 1) for _ in range(rng.randrange(4))}


def _document_with_canary(rng: random.Random, canary: Any, depth: int) -> Any:
    """A random document with ``{secret_key: canary}`` somewhere ``depth`` levels down."""
    if depth == 0:
        node = {rng.choice(PLAIN_KEYS): _random_container(rng, 2) for _ in range(rng.randrange(3))}
        node[rng.choice(SECRET_KEYS)] = canary
        for _ in range(rng.randrange(3)):
            node.setdefault(rng.choice(PLAIN_KEYS), _random_container(rng, 2))
        return node
    child = _document_with_canary(rng, canary, depth - 1)
    siblings = [_random_container(rng, 2) for _ in range(rng.randrange(3))]
    if rng.random() < 0.5:
        siblings.insert(rng.randrange(len(siblings) + 1), child)
        return siblings
    node = {k: v for k, v in ((rng.choice(PLAIN_KEYS), s) for s in siblings)}
    node["wrap" + str(depth)] = child
    return node


def test_canary_under_a_secret_key_never_appears_in_full_or_truncated_bodies() -> None:
    rng = random.Random(20240607)
    redactor = Redactor()
    checked = 0
    for n in range(400):
        canary: Any = f"CANARY{n}qz" if rng.random() < 0.7 else 987654321000 + n
        doc = _document_with_canary(rng, canary, rng.randrange(6))
        body = json.dumps(
            doc,
            ensure_ascii=rng.random() < 0.5,
            indent=rng.choice([None, None, 2]),
            separators=rng.choice([None, (",", ":"), (", ", " : ")]),
        ).encode()
        needle = str(canary)
        assert needle in body.decode()
        ctype = rng.choice(["application/json", "application/json; charset=utf-8", "text/plain", ""])
        out = redactor.body(body, ctype, len(body), BIG)
        assert needle not in out, (body, out)
        if "json" in ctype:
            json.loads(out)  # full JSON bodies stay JSON
        for _ in range(4):
            keep = rng.randrange(1, len(body))
            out = truncated(redactor, body, keep, ctype)
            assert needle not in out, (body[:keep], out)
            checked += 1
    assert checked == 1600


# -- shapes the name list alone does not reach ---------------------------------------------------

CANARY = "zq-CANARY-77"


@pytest.mark.parametrize(
    "query",
    [
        f"a=1;password={CANARY}",
        f"password={CANARY};a=1",
        f"a=1&b=2;api_key={CANARY}&c=3",
        f"data=%7B%22password%22%3A%22{CANARY}%22%7D",  # JSON in a parameter's value
        f"pass.word={CANARY}",
        f"userPwd={CANARY}",
        f"pass%5Fword={CANARY}",
    ],
)
def test_query_shapes_are_redacted(redactor: Redactor, query: str) -> None:
    out = redactor.redact_query(query)
    assert CANARY not in out and REDACTED in out


def test_semicolon_separated_query_keeps_its_ordinary_parameters(redactor: Redactor) -> None:
    assert redactor.redact_query("a=1;password=x;b=2") == "a=1;password=[REDACTED];b=2"


@pytest.mark.parametrize("key", ["pass.word", "userPwd", "user_pwd", "cardPAN", "SSNLast4", "Pass Word"])
def test_names_are_compared_without_separators_and_by_camel_case_words(redactor: Redactor, key: str) -> None:
    assert redactor.is_secret(key)
    body = json.dumps({key: CANARY, "pad": "x" * 60}).encode()
    assert CANARY not in full(redactor, body)
    assert CANARY not in truncated(redactor, body, len(body) - 10)
    assert CANARY not in full(redactor, body, "text/plain")


def test_json_held_in_a_json_string_is_redacted_and_stays_json(redactor: Redactor) -> None:
    inner = json.dumps({"password": CANARY, "user": "bob"})
    body = json.dumps({"data": inner, "n": 1}).encode()
    out = full(redactor, body)
    assert CANARY not in out
    data = json.loads(json.loads(out)["data"])
    assert data == {"password": REDACTED, "user": "bob"}


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_json_held_in_json_strings_is_redacted_when_truncated_or_not_json(
    redactor: Redactor, levels: int
) -> None:
    doc: Any = {"password": f"{CANARY} with spaces", "user": "bob"}
    for _ in range(levels):
        doc = {"data": json.dumps(doc), "pad": "y" * 40}
    body = json.dumps(doc).encode()
    assert CANARY not in full(redactor, body)
    assert CANARY not in full(redactor, body, "text/plain")
    cut = body.index(CANARY.encode()) + 4
    for keep in (cut, cut + 20, len(body) - 3):
        assert CANARY[:4] not in truncated(redactor, body, keep)[body.index(CANARY.encode()) - 5 :]
        assert CANARY not in truncated(redactor, body, keep)


@pytest.mark.parametrize(
    "xml",
    [
        f"<login><user>bob</user><password>{CANARY}</password></login>",
        f"<login><ns:Password>{CANARY}</ns:Password></login>",
        f"<login><credentials><user>u</user><key>{CANARY}</key></credentials></login>",
        f'<login user="bob" password="{CANARY} x"/>',
        f"<login><password><![CDATA[{CANARY}]]></password></login>",
        f'<params><param name="password" value="{CANARY}"/></params>',
        f'<params><param name="api_key">{CANARY}</param></params>',
    ],
)
def test_xml_elements_and_attributes_are_redacted(redactor: Redactor, xml: str) -> None:
    for ctype in ("application/xml", "text/xml", "application/soap+xml"):
        out = full(redactor, xml.encode(), ctype)
        assert CANARY not in out and REDACTED in out, out
    if "<user>bob</user>" in xml:
        assert "<user>bob</user>" in full(redactor, xml.encode(), "application/xml")


def test_truncated_xml_hides_a_secret_element_to_the_end(redactor: Redactor) -> None:
    body = f"<login><user>bob</user><password>{CANARY}{'z' * 50}</password></login>".encode()
    out = truncated(redactor, body, body.index(b"zzz"))
    assert CANARY not in out and "<user>bob</user>" in out


@pytest.mark.parametrize(
    "doc",
    [
        {"name": "password", "value": CANARY},
        {"value": CANARY, "name": "api_key"},
        {"Key": "X-Api-Key", "Value": CANARY},
        {"field": "card_number", "data": CANARY, "type": "string"},
    ],
)
def test_name_value_pair_objects_naming_a_secret_are_redacted(redactor: Redactor, doc: Any) -> None:
    body = json.dumps({"params": [{"name": "user", "value": "bob"}, doc], "pad": "p" * 40}).encode()
    out = full(redactor, body)
    assert CANARY not in out
    assert json.loads(out)["params"][0] == {"name": "user", "value": "bob"}
    assert CANARY not in full(redactor, body, "text/plain")
    end = body.index(CANARY.encode()) + len(CANARY) + 2
    naming = next(v for k, v in doc.items() if k.lower() in ("name", "key", "field"))
    if body.index(json.dumps(naming).encode()) < end:  # the cut kept the name before the value
        assert CANARY not in truncated(redactor, body, end)


@pytest.mark.parametrize("header", ["X-Key", "X-Access-Key", "X-Client-Key", "Access-Key", "X-Secret-Key"])
def test_key_headers_are_redacted(redactor: Redactor, header: str) -> None:
    assert redactor.redact_headers([(header, CANARY), ("X-Keyboard", "k")]) == {
        header.lower(): REDACTED,
        "x-keyboard": "k",
    }


@pytest.mark.parametrize("escaped", ["pass\\u0077ord", "\\u0070assword", "api\\u005fkey", "PASS\\u0057ORD"])
def test_truncated_body_with_a_unicode_escaped_key_is_redacted(redactor: Redactor, escaped: str) -> None:
    body = ('{"user": "bob", "' + escaped + '": "' + CANARY + '", "pad": "' + "x" * 80 + '"}').encode()
    assert json.loads(body)  # valid JSON: the key is an ordinary escape
    assert CANARY not in full(redactor, body)
    for keep in (len(body) - 20, body.index(CANARY.encode()) + 3):
        out = truncated(redactor, body, keep)
        assert CANARY not in out and CANARY[:3] not in out.split(escaped)[-1], out


def test_url_user_info_passwords_are_redacted(redactor: Redactor) -> None:
    out = full(redactor, f"connect to postgres://app:{CANARY}@db:5432/x".encode(), "text/plain")
    assert CANARY not in out and "postgres://app:[REDACTED]@db:5432/x" in out


def test_python_style_single_quoted_pairs_are_redacted(redactor: Redactor) -> None:
    out = full(redactor, f"{{'user': 'bob', 'password': '{CANARY} x'}}".encode(), "text/plain")
    assert CANARY not in out and "'user': 'bob'" in out


def test_json_nested_deeper_than_python_recursion_is_still_recorded_redacted(redactor: Redactor) -> None:
    body = ("[" * 5000 + f'{{"password": "{CANARY}"}}' + "]" * 5000).encode()
    out = full(redactor, body)
    assert CANARY not in out and out.startswith("[[[")
