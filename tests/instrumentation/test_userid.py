"""User ID sources: JWT claims, Basic auth, headers, ``flask.g`` and callables, first non-empty wins."""

from __future__ import annotations

import base64
import json
import logging
import sys
import threading
import tracemalloc
from typing import Any

import flask
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usagelog.instrumentation.userid import (
    TOKEN_CACHE_MAX_BYTES,
    USER_ID_MAX_CHARS,
    TokenCache,
    UserResolver,
    basic_user,
    header_environ_keys,
    jwt_claim,
    needs_request_context,
    validate_sources,
)


# Callable sources resolved by name (``callable:<this module>:<name>``); see the ``importable`` fixture.
def user_from_custom_header(request: Any) -> str | None:
    return request.headers.get("X-Custom-User")


def user_that_fails(request: Any) -> str:
    raise RuntimeError("the app's own bug")


def user_empty(request: Any) -> str:
    return ""


def user_numeric(request: Any) -> int:
    return 4242


def _b64url(raw: bytes, *, pad: bool = False) -> str:
    text = base64.urlsafe_b64encode(raw).decode()
    return text if pad else text.rstrip("=")


def make_jwt(payload: Any, *, pad: bool = False) -> str:
    header = _b64url(b'{"alg":"HS256","typ":"JWT"}', pad=pad)
    body = _b64url(json.dumps(payload).encode(), pad=pad)
    return f"{header}.{body}.{_b64url(b'signature-bytes', pad=pad)}"


def basic(user_pass: str) -> str:
    return "Basic " + base64.b64encode(user_pass.encode()).decode()


@pytest.fixture
def importable() -> str:
    """The name this test module is imported under, so ``callable:<name>:<function>`` finds it.

    ``__name__`` is whatever pytest registered in ``sys.modules`` (``test_userid`` or
    ``tests.instrumentation.test_userid`` depending on the import mode), so no path tricks are needed.
    """
    assert sys.modules[__name__].user_from_custom_header is user_from_custom_header
    return __name__


# -- jwt -----------------------------------------------------------------------------------------


def test_jwt_claim_reads_a_top_level_claim() -> None:
    assert jwt_claim("Bearer " + make_jwt({"sub": "alice", "iat": 1}), "sub") == "alice"


def test_jwt_claim_scheme_is_case_insensitive() -> None:
    assert jwt_claim("bearer " + make_jwt({"sub": "alice"}), "sub") == "alice"


def test_jwt_claim_follows_dots_into_nested_objects() -> None:
    token = make_jwt({"ctx": {"tenant": {"user": "u-7"}}, "sub": "other"})
    assert jwt_claim("Bearer " + token, "ctx.tenant.user") == "u-7"


@pytest.mark.parametrize("claim", ["ctx.missing", "ctx.tenant", "sub.deeper", "absent"])
def test_jwt_claim_missing_or_non_scalar_path_is_empty(claim: str) -> None:
    token = make_jwt({"ctx": {"tenant": {"user": "u-7"}}, "sub": "alice"})
    assert jwt_claim("Bearer " + token, claim) == ""


def test_jwt_claim_list_and_null_values_are_empty() -> None:
    token = make_jwt({"roles": ["a", "b"], "sub": None})
    assert jwt_claim("Bearer " + token, "roles") == ""
    assert jwt_claim("Bearer " + token, "sub") == ""


def test_jwt_claim_numbers_become_text() -> None:
    assert jwt_claim("Bearer " + make_jwt({"uid": 1234}), "uid") == "1234"


def test_jwt_claim_accepts_padded_and_unpadded_segments() -> None:
    """JWTs drop base64 padding; the decoder restores it (and tolerates it when present)."""
    lengths = set()
    for sub in ("a", "ab", "abc", "abcd"):
        payload = {"sub": sub}
        lengths.add(len(_b64url(json.dumps(payload).encode())) % 4)
        assert jwt_claim("Bearer " + make_jwt(payload), "sub") == sub
        assert jwt_claim("Bearer " + make_jwt(payload, pad=True), "sub") == sub
    assert lengths >= {0, 2, 3}  # every padding case was exercised


def test_jwt_claim_uses_the_url_safe_alphabet() -> None:
    payload = {"sub": "u>>>?"}
    segment = make_jwt(payload).split(".")[1]
    assert "-" in segment or "_" in segment  # would not decode with the standard alphabet
    assert jwt_claim("Bearer " + make_jwt(payload), "sub") == "u>>>?"


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Basic " + make_jwt({"sub": "alice"}),
        "Token " + make_jwt({"sub": "alice"}),
        "Bearer not-a-jwt",
        "Bearer a.b",
        "Bearer a.b.c.d",
        "Bearer header.!!!notbase64!!!.sig",
        "Bearer header." + _b64url(b"not json") + ".sig",
        "Bearer header." + _b64url(b"\xff\xfe\x00garbage") + ".sig",
        "Bearer header." + _b64url(b'["sub", "alice"]') + ".sig",
        "Bearer header.a.sig",  # one base64 character: an impossible length
    ],
)
def test_jwt_claim_is_empty_for_anything_but_a_readable_bearer_jwt(authorization: str) -> None:
    assert jwt_claim(authorization, "sub") == ""


# -- basic ---------------------------------------------------------------------------------------


def test_basic_user_is_the_part_before_the_first_colon() -> None:
    assert basic_user(basic("alice:s3cr:et")) == "alice"


@pytest.mark.parametrize("credential", ["sk_live_SECRET", "service-account", ""])
def test_basic_credential_without_a_colon_gives_no_user(credential: str) -> None:
    """RFC 7617 needs ``user:password``; a bare value is most likely an API key: never a user ID."""
    assert basic_user(basic(credential)) == ""
    resolver = UserResolver(["jwt:sub", "basic"])
    assert resolver.identify({"HTTP_AUTHORIZATION": basic(credential)}, None, 200) == ("", "")
    assert resolver.identify({"HTTP_AUTHORIZATION": basic(credential)}, None, 401) == ("", "")


def test_basic_user_scheme_is_case_insensitive_and_allows_padding_whitespace() -> None:
    token = base64.b64encode(b"bob:pw").decode()
    assert basic_user("basic " + token + " ") == "bob"


def test_basic_user_decodes_utf8_names() -> None:
    assert basic_user(basic("zoë:pw")) == "zoë"


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Basic",
        "Basic ###not-base64###",
        "Basic YWxpY2U6cHc",  # missing padding: rejected by strict validation
        "Basic " + base64.b64encode(b"\xff\xfe:pw").decode(),  # not UTF-8
        "Bearer " + base64.b64encode(b"alice:pw").decode(),
        "Digest username=alice",
    ],
)
def test_basic_user_is_empty_for_malformed_or_other_schemes(authorization: str) -> None:
    assert basic_user(authorization) == ""


# -- resolve: header-based sources and order -------------------------------------------------------


def test_header_source_reads_the_wsgi_environ_key() -> None:
    resolver = UserResolver(["header:X-User-Id"])
    assert resolver.header_keys == ("HTTP_X_USER_ID",)
    assert resolver.resolve({"HTTP_X_USER_ID": "gw-user"}, None) == "gw-user"
    assert resolver.resolve({}, None) == ""


def test_first_non_empty_source_wins_in_configured_order() -> None:
    headers = {
        "HTTP_AUTHORIZATION": "Bearer " + make_jwt({"sub": "jwt-user"}),
        "HTTP_X_USER_ID": "header-user",
    }
    assert UserResolver(["jwt:sub", "header:X-User-Id"]).resolve(headers, None) == "jwt-user"
    assert UserResolver(["header:X-User-Id", "jwt:sub"]).resolve(headers, None) == "header-user"


def test_empty_sources_are_skipped() -> None:
    headers = {"HTTP_AUTHORIZATION": basic("carol:pw"), "HTTP_X_USER_ID": ""}
    resolver = UserResolver(["header:X-User-Id", "jwt:sub", "basic"])
    assert resolver.resolve(headers, None) == "carol"


def test_default_sources_read_jwt_then_basic() -> None:
    resolver = UserResolver(["jwt:sub", "basic"])
    assert resolver.header_keys == ("HTTP_AUTHORIZATION",)
    assert resolver.resolve({"HTTP_AUTHORIZATION": "Bearer " + make_jwt({"sub": "j"})}, None) == "j"
    assert resolver.resolve({"HTTP_AUTHORIZATION": basic("b:pw")}, None) == "b"
    assert resolver.resolve({"HTTP_AUTHORIZATION": "Bearer garbage"}, None) == ""


def test_no_source_yields_empty_user() -> None:
    assert UserResolver([]).resolve({"HTTP_AUTHORIZATION": basic("x:y")}, None) == ""


def test_context_values_take_their_place_in_source_order() -> None:
    resolver = UserResolver(["g:user", "jwt:sub", "callable:pkg.mod:fn"])
    headers = {"HTTP_AUTHORIZATION": "Bearer " + make_jwt({"sub": "jwt-user"})}
    assert resolver.resolve(headers, {"g:user": "g-user", "callable:pkg.mod:fn": "c"}) == "g-user"
    assert resolver.resolve(headers, {"callable:pkg.mod:fn": "c"}) == "jwt-user"
    assert resolver.resolve({}, {"callable:pkg.mod:fn": "c"}) == "c"
    assert resolver.resolve({}, {"g:user": ""}) == ""
    assert resolver.resolve({}, None) == ""


def test_header_environ_keys_are_deduplicated_in_order() -> None:
    keys = header_environ_keys(["header:x-tenant-user", "jwt:sub", "basic", "g:u", "header:X-Tenant-User"])
    assert keys == ("HTTP_X_TENANT_USER", "HTTP_AUTHORIZATION")


def test_needs_request_context_only_for_g_and_callable() -> None:
    assert not needs_request_context(["jwt:sub", "basic", "header:X"])
    assert needs_request_context(["basic", "g:user"])
    assert needs_request_context(["callable:m:f"])
    assert UserResolver(["g:user"]).needs_context
    assert not UserResolver(["basic"]).needs_context


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sources",
    [["jwt:sub", "basic", "header:X-User", "g:user", "callable:pkg.mod:func"], [], ["jwt:a.b.c"]],
)
def test_validate_sources_accepts_well_formed_sources(sources: list[str]) -> None:
    validate_sources(sources)


@pytest.mark.parametrize(
    "bad",
    [
        "jwt",
        "jwt:",
        "basic:user",
        "header:",
        "g:",
        "callable:",
        "callable:mod",
        "callable:mod:",
        "callable::func",
        "callable:a:b:c",
        "cookie:session",
        "",
        "JWT:sub",
    ],
)
def test_validate_sources_names_the_malformed_source(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_sources(["jwt:sub", bad])
    assert repr(bad) in str(info.value)


def test_resolver_rejects_malformed_sources_at_construction() -> None:
    with pytest.raises(ValueError, match="nope"):
        UserResolver(["nope"])


# -- from_context: a real Flask request context ----------------------------------------------------


@pytest.fixture
def app() -> flask.Flask:
    return flask.Flask(__name__)


def test_from_context_reads_flask_g_attribute(app: flask.Flask) -> None:
    resolver = UserResolver(["g:current_user", "g:absent", "basic"])
    with app.test_request_context("/"):
        flask.g.current_user = "g-alice"
        found = resolver.from_context(flask.request)
    assert found == {"g:current_user": "g-alice"}
    assert resolver.resolve({}, found) == "g-alice"


def test_from_context_stringifies_non_string_values_and_skips_empty(app: flask.Flask) -> None:
    resolver = UserResolver(["g:uid", "g:blank", "g:none"])
    with app.test_request_context("/"):
        flask.g.uid = 17
        flask.g.blank = ""
        flask.g.none = None
        found = resolver.from_context(flask.request)
    assert found == {"g:uid": "17"}


def test_from_context_calls_an_importable_callable_with_the_request(
    app: flask.Flask, importable: str
) -> None:
    source = f"callable:{importable}:user_from_custom_header"
    resolver = UserResolver([source])
    with app.test_request_context("/", headers={"X-Custom-User": "callable-dave"}):
        found = resolver.from_context(flask.request)
    assert found == {source: "callable-dave"}
    with app.test_request_context("/"):
        assert resolver.from_context(flask.request) == {}


def test_from_context_callable_returning_int_is_text(app: flask.Flask, importable: str) -> None:
    source = f"callable:{importable}:user_numeric"
    with app.test_request_context("/"):
        assert UserResolver([source]).from_context(flask.request) == {source: "4242"}


def test_from_context_failing_callable_means_no_user_and_does_not_raise(
    app: flask.Flask, importable: str
) -> None:
    failing = f"callable:{importable}:user_that_fails"
    empty = f"callable:{importable}:user_empty"
    resolver = UserResolver([failing, empty, "g:user"])
    with app.test_request_context("/"):
        flask.g.user = "fallback"
        found = resolver.from_context(flask.request)
    assert found == {"g:user": "fallback"}
    assert resolver.resolve({}, found) == "fallback"


def test_unloadable_callable_warns_once_and_yields_nothing(
    app: flask.Flask, importable: str, caplog: pytest.LogCaptureFixture
) -> None:
    missing_func = f"callable:{importable}:no_such_function"
    missing_module = "callable:usagelog_no_such_module_xyz:fn"
    resolver = UserResolver([missing_func, missing_module])
    with caplog.at_level(logging.WARNING, logger="usagelog"):
        for _ in range(3):
            with app.test_request_context("/"):
                assert resolver.from_context(flask.request) == {}
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("no_such_function" in m for m in messages) == 1
    assert sum("usagelog_no_such_module_xyz" in m for m in messages) == 1


def test_from_context_ignores_header_sources(app: flask.Flask) -> None:
    resolver = UserResolver(["jwt:sub", "basic", "header:X-User"])
    with app.test_request_context("/", headers={"X-User": "h", "Authorization": basic("a:b")}):
        assert resolver.from_context(flask.request) == {}


def test_jwt_claim_with_lone_surrogate_escape_is_still_utf8_encodable() -> None:
    """A client-chosen claim like ``"sub": "\\ud800x"`` must not yield an unencodable user ID."""
    body = _b64url(b'{"sub": "\\ud800mallory"}')
    value = jwt_claim(f"Bearer h.{body}.s", "sub")
    assert "mallory" in value
    value.encode("utf-8")


# -- 401: claimed, not accepted -------------------------------------------------------------------


def test_header_derived_ids_are_only_claimed_when_the_app_answered_401() -> None:
    resolver = UserResolver(["jwt:sub", "basic", "header:X-User"])
    jwt_headers = {"HTTP_AUTHORIZATION": "Bearer " + make_jwt({"sub": "mallory"})}
    assert resolver.identify(jwt_headers, None, 401) == ("", "mallory")
    assert resolver.identify(jwt_headers, None, 403) == ("mallory", "")
    assert resolver.identify(jwt_headers, None, 200) == ("mallory", "")
    assert resolver.identify({"HTTP_AUTHORIZATION": basic("eve:pw")}, None, 401) == ("", "eve")
    assert resolver.identify({"HTTP_X_USER": "gw"}, None, 401) == ("", "gw")


def test_context_ids_come_from_the_app_and_stay_users_on_401() -> None:
    resolver = UserResolver(["jwt:sub", "g:user"])
    headers = {"HTTP_AUTHORIZATION": "Bearer " + make_jwt({"sub": "mallory"})}
    assert resolver.identify(headers, {"g:user": "app-user"}, 401) == ("app-user", "mallory")


class CountingVerifier:
    def __init__(self, accept: bool) -> None:
        self.accept = accept
        self.calls = 0

    def verify(self, token: str) -> dict[str, Any] | None:
        self.calls += 1
        return {} if self.accept else None


def test_a_token_failing_verification_is_only_claimed_and_verified_once() -> None:
    verifier = CountingVerifier(accept=False)
    resolver = UserResolver(["jwt:sub", "basic"], verifier)
    headers = {"HTTP_AUTHORIZATION": "Bearer " + make_jwt({"sub": "mallory"})}
    for _ in range(5):
        assert resolver.identify(headers, None, 200) == ("", "mallory")
    assert verifier.calls == 1
    assert resolver.identify({"HTTP_AUTHORIZATION": basic("bob:pw")}, None, 200) == ("bob", "")


def test_a_verifier_that_raises_means_no_user_not_a_lost_event() -> None:
    class Broken:
        def verify(self, token: str) -> dict[str, Any] | None:
            raise RuntimeError("bug")

    headers = {"HTTP_AUTHORIZATION": "Bearer " + make_jwt({"sub": "alice"})}
    assert UserResolver(["jwt:sub"], Broken()).identify(headers, None, 200) == ("", "alice")


# -- memory held for attacker input ----------------------------------------------------------------


def test_user_ids_are_cut_to_a_bounded_length() -> None:
    long_id = "u" * 50_000
    headers = {"HTTP_AUTHORIZATION": "Bearer " + make_jwt({"sub": long_id}), "HTTP_X_USER": long_id}
    assert UserResolver(["jwt:sub"]).resolve(headers, None) == "u" * USER_ID_MAX_CHARS
    assert UserResolver(["header:X-User"]).resolve(headers, None) == "u" * USER_ID_MAX_CHARS
    assert UserResolver(["g:user"]).resolve({}, {"g:user": long_id}) == "u" * USER_ID_MAX_CHARS


def test_distinct_huge_tokens_hold_bounded_memory() -> None:
    """4500 distinct 53 KB bearer tokens (each with a 40 KB claim) used to stay in memory, ~145 MB+."""
    resolver = UserResolver(["jwt:sub", "basic"])
    padding = "p" * 13_000
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for n in range(4500):
            token = make_jwt({"sub": f"{n:05d}" + "s" * 27_000, "pad": padding})
            assert len(token) > 53_000
            user = resolver.resolve({"HTTP_AUTHORIZATION": "Bearer " + token}, None)
            assert user.startswith(f"{n:05d}") and len(user) == USER_ID_MAX_CHARS
            del token, user
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resolver.token_cache.bytes <= TOKEN_CACHE_MAX_BYTES
    assert after - before < 2 * TOKEN_CACHE_MAX_BYTES, after - before
    assert 0 < len(resolver.token_cache) < 4500  # older entries were evicted, newer ones kept


def test_token_cache_accounts_and_evicts_oldest_first() -> None:
    cache = TokenCache(max_bytes=TokenCache.cost("x" * 10) * 3)
    keys = [TokenCache.key("jwt:sub", f"Bearer t{n}") for n in range(5)]
    for key in keys:
        cache.put(key, ("x" * 10, True))
    assert len(cache) == 3 and cache.bytes == TokenCache.cost("x" * 10) * 3
    assert cache.get(keys[0]) is None and cache.get(keys[4]) == ("x" * 10, True)
    assert TokenCache.key("jwt:sub", "Bearer a") != TokenCache.key("jwt:uid", "Bearer a")


def test_token_cache_stays_consistent_when_two_threads_fill_it() -> None:
    """A request thread may build a backlog batch while the background thread builds another."""
    cache = TokenCache(max_bytes=TokenCache.cost("u") * 8)
    errors: list[BaseException] = []

    def fill(offset: int) -> None:
        try:
            for n in range(20_000):
                cache.put(TokenCache.key("basic", f"Basic {offset + n}"), ("u", True))
        except BaseException as exc:  # a race shows up as KeyError or RuntimeError here
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up at once
    try:
        threads = [threading.Thread(target=fill, args=(k * 1_000_000,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(cache) == 8 and cache.bytes == TokenCache.cost("u") * 8


# -- properties: never raises, never returns part of a secret ---------------------------------------

SECRET = "sk_live_9f8e7d6c5b4a"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.sampled_from(["jwt:sub", "basic", "jwt:a.b", "header:X-User"]))
def test_resolving_any_authorization_value_never_raises(authorization: str, source: str) -> None:
    user, claimed = UserResolver([source]).identify({"HTTP_AUTHORIZATION": authorization}, None, 401)
    assert user == "" and isinstance(claimed, str)
    user.encode("utf-8")
    claimed.encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.text(alphabet=st.characters(blacklist_characters=":"), max_size=12),
    suffix=st.text(alphabet=st.characters(blacklist_characters=":"), max_size=12),
    scheme=st.sampled_from(["Basic", "basic", "BASIC"]),
    status=st.sampled_from([200, 401, 403, 500]),
)
def test_a_basic_credential_without_a_colon_never_leaks(
    prefix: str, suffix: str, scheme: str, status: int
) -> None:
    credential = prefix + SECRET + suffix
    header = scheme + " " + base64.b64encode(credential.encode("utf-8", "surrogatepass")).decode()
    resolver = UserResolver(["jwt:sub", "basic"])
    user, claimed = resolver.identify({"HTTP_AUTHORIZATION": header}, None, status)
    for value in (user, claimed):
        assert value == ""


@settings(max_examples=300, deadline=None)
@given(
    user=st.text(alphabet=st.characters(blacklist_characters=":"), max_size=20), status=st.integers(100, 599)
)
def test_a_basic_password_never_becomes_the_user(user: str, status: int) -> None:
    header = "Basic " + base64.b64encode(f"{user}:{SECRET}".encode("utf-8", "surrogatepass")).decode()
    found, claimed = UserResolver(["basic"]).identify({"HTTP_AUTHORIZATION": header}, None, status)
    for value in (found, claimed):
        assert SECRET[4:12] not in value


@settings(max_examples=200, deadline=None)
@given(
    claims=st.dictionaries(
        st.sampled_from(["sub", "uid", "a", "pad"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
            ),
            max_leaves=6,
        ),
        max_size=4,
    ),
    cut=st.integers(0, 200),
)
def test_jwt_claims_of_any_shape_or_cut_never_raise(claims: dict[str, Any], cut: int) -> None:
    token = make_jwt(claims)
    for authorization in ("Bearer " + token, "Bearer " + token[:cut]):
        value = jwt_claim(authorization, "sub")
        assert isinstance(value, str) and len(value) <= USER_ID_MAX_CHARS
        value.encode("utf-8")
