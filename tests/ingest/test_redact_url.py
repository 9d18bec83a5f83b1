"""No secret of a URL in a message: user info (an ``@`` in the password too), secret query
parameters, in a URL alone or inside a library's error text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usagelog.ingest.redact import redact, redact_url

CANARY = "CANARY-s3cr3t"


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (f"http://admin:{CANARY}@db.example:8123", "http://admin:***@db.example:8123"),
        (f"https://admin:pa@ss-{CANARY}@db.example:8443/?database=x", "https://admin:***@db.example:8443/"),
        (f"http://admin:p/a?s#s{CANARY}@db.example:8123/x", "http://admin:***@db.example:8123/x"),
        (f"http://db.example:8123/?user=default&password={CANARY}", "http://db.example:8123/?user=default"),
        (f"http://db.example:8123/?a=1;password={CANARY}#x", "http://db.example:8123/?a=1;password=***#x"),
        (f"http://{CANARY}@db.example", "http://***@db.example"),
        (f"http://:{CANARY}@db.example", "http://***@db.example"),
        (f"s3://AKIAEXAMPLE:{CANARY}@bucket/archive", "s3://AKIAEXAMPLE:***@bucket/archive"),
        (
            f"https://bucket.s3.amazonaws.com/a.parquet?X-Amz-Credential={CANARY}&X-Amz-Signature={CANARY}",
            "https://bucket.s3.amazonaws.com/a.parquet?X-Amz-Credential=***&X-Amz-Signature=***",
        ),
        (
            f"kafka://user:{CANARY}@broker:9092/usagelog.events",
            "kafka://user:***@broker:9092/usagelog.events",
        ),
        (f"user:{CANARY}@broker-1:9092,broker-2:9092", "user:***@broker-1:9092,broker-2:9092"),
        (f"https://h/?token={CANARY}&api_key={CANARY}&sessionid={CANARY}&page=2", "&page=2"),
        ("chdb:///var/lib/usagelog/chdb", "chdb:///var/lib/usagelog/chdb"),
    ],
)
def test_url_secrets_are_hidden_and_the_address_kept(url: str, kept: str) -> None:
    redacted = redact_url(url)
    assert CANARY not in redacted
    assert kept in redacted


def test_webhook_path_tokens_are_hidden_without_the_path() -> None:
    assert redact_url(f"https://hooks.example.com/services/T0/{CANARY}?x=1", path=False) == (
        "https://hooks.example.com/***"
    )


def test_urls_and_secret_pairs_inside_a_message_are_hidden() -> None:
    message = (
        f"cannot open ClickHouse at http://a:{CANARY}@db:8123: HTTPConnectionPool: Max retries "
        f"exceeded with url: /?password={CANARY}&query=1 (sasl.password={CANARY}, 'token: {CANARY}')"
    )
    redacted = redact(message)
    assert CANARY not in redacted
    assert "http://a:***@db:8123" in redacted and "query=1" in redacted
    assert redact("expected key=value, got 'a'") == "expected key=value, got 'a'"


@given(
    st.sampled_from(["http", "https", "s3", "kafka", "clickhouse", "memory"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs")), max_size=12),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs")), max_size=20),
    st.sampled_from(["host", "db.example:8123", "10.0.0.1:9000"]),
    st.sampled_from(["", "/", "/db", "/a/b?database=x"]),
)
def test_no_password_survives_whatever_it_holds(
    scheme: str, user: str, secret: str, host: str, tail: str
) -> None:
    password = f"{secret}{CANARY}{secret}"
    url = f"{scheme}://{user.replace('@', '').replace(':', '')}:{password}@{host}{tail}"
    assert CANARY not in redact_url(url)
    assert CANARY not in redact(f"failed at {url}: refused")
