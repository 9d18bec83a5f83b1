"""Settings: keyword argument > ``USAGELOG_*`` variable > default; bad env warns, bad kwargs raise."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from usagelog.instrumentation import config
from usagelog.instrumentation.config import ConfigError, Settings, load_settings


def _usagelog_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "usagelog" and r.levelno == logging.WARNING]


PUBLIC_PEM = Path(__file__).parent / "data" / "jwt-es256-public.pem"

# (variable, raw environment value, settings field, parsed value)
VALID_ENV = [
    ("USAGELOG_ENABLED", "false", "enabled", False),
    ("USAGELOG_ENABLED", " On ", "enabled", True),
    ("USAGELOG_ENABLED", "0", "enabled", False),
    ("USAGELOG_EXPORTER", "SPOOL", "exporter", "spool"),
    ("USAGELOG_EXPORTER", "otlp", "exporter", "otlp"),
    ("USAGELOG_SPOOL_DIR", " /var/spool/usagelog ", "spool_dir", "/var/spool/usagelog"),
    (
        "USAGELOG_USER_ID_FROM",
        "header:X-User-Id, jwt:sub ,g:user_id",
        "user_id_from",
        ("header:X-User-Id", "jwt:sub", "g:user_id"),
    ),
    (
        "USAGELOG_USER_ID_FROM",
        "callable:mod.sub:func,basic",
        "user_id_from",
        ("callable:mod.sub:func", "basic"),
    ),
    ("USAGELOG_CAPTURE_BODY", "Monitored", "capture_body", "monitored"),
    ("USAGELOG_CAPTURE_BODY", "all", "capture_body", "all"),
    ("USAGELOG_BODY_MAX_BYTES", "128", "body_max_bytes", 128),
    ("USAGELOG_REDACT_FIELDS", "pin, otp,,", "redact_fields", ("pin", "otp")),
    (
        "USAGELOG_MONITOR",
        "user:alice,route:/admin/*,path:/debug/*",
        "monitor",
        ("user:alice", "route:/admin/*", "path:/debug/*"),
    ),
    ("USAGELOG_FLUSH_INTERVAL_MS", "50", "flush_interval_ms", 50),
    ("USAGELOG_MAX_QUEUE", "7", "max_queue", 7),
    ("USAGELOG_MAX_QUEUE_BYTES", "1048576", "max_queue_bytes", 1048576),
    ("USAGELOG_JOURNAL", "true", "journal", True),
    ("USAGELOG_SPOOL_SEGMENT_BYTES", "4096", "spool_segment_bytes", 4096),
    ("USAGELOG_SPOOL_SEGMENT_SECONDS", "0.25", "spool_segment_seconds", 0.25),
    ("USAGELOG_SPOOL_FSYNC", "no", "spool_fsync", False),
    ("USAGELOG_USER_ID_HMAC_KEY", "k3y", "user_id_hmac_key", "k3y"),
    ("USAGELOG_CLIENT_IP", "Truncate", "client_ip", "truncate"),
    ("USAGELOG_CLIENT_IP", "none", "client_ip", "none"),
    ("USAGELOG_JWT_KEY", "shared-secret", "jwt_key", "shared-secret"),
    ("USAGELOG_JWT_KEY_FILE", str(PUBLIC_PEM), "jwt_key_file", str(PUBLIC_PEM)),
    (
        "USAGELOG_JWT_JWKS",
        "https://idp.example/.well-known/jwks.json",
        "jwt_jwks",
        "https://idp.example/.well-known/jwks.json",
    ),
]


@pytest.mark.parametrize(("var", "raw", "name", "expected"), VALID_ENV)
def test_each_env_variable_is_parsed_into_its_setting(
    var: str, raw: str, name: str, expected: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A valid value of every ``USAGELOG_*`` variable lands, parsed, in its field, without warnings."""
    with caplog.at_level(logging.WARNING, logger="usagelog"):
        settings = load_settings({var: raw})
    assert getattr(settings, name) == expected
    assert _usagelog_warnings(caplog) == []
    assert settings.warnings == ()


def test_every_documented_variable_has_a_parser() -> None:
    """No variable in ``ALL_VARIABLES`` is silently ignored, and each was exercised above."""
    assert set(config.ALL_VARIABLES) == set(config._PARSERS)
    assert {var for var, *_ in VALID_ENV} == set(config.ALL_VARIABLES)


def test_no_environment_gives_the_defaults() -> None:
    assert load_settings({}) == Settings()
    defaults = Settings()
    assert defaults.enabled is True
    assert defaults.exporter == "otlp"
    assert defaults.spool_dir == ".usagelog/spool"
    assert defaults.user_id_from == ("jwt:sub", "basic")
    assert defaults.capture_body == "none"
    assert defaults.body_max_bytes == 4096
    assert defaults.monitor == ()


def test_empty_env_value_counts_as_unset(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="usagelog"):
        settings = load_settings({"USAGELOG_BODY_MAX_BYTES": "", "USAGELOG_EXPORTER": ""})
    assert settings == Settings()
    assert _usagelog_warnings(caplog) == []


def test_os_environ_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USAGELOG_CAPTURE_BODY", "all")
    monkeypatch.setenv("USAGELOG_MAX_QUEUE", "11")
    settings = load_settings()
    assert settings.capture_body == "all"
    assert settings.max_queue == 11


INVALID_ENV = [
    ("USAGELOG_ENABLED", "maybe", "enabled"),
    ("USAGELOG_EXPORTER", "kafka", "exporter"),
    ("USAGELOG_SPOOL_DIR", "   ", "spool_dir"),
    ("USAGELOG_USER_ID_FROM", "jwt:sub,cookie:sid", "user_id_from"),
    ("USAGELOG_USER_ID_FROM", "callable:no_function_part", "user_id_from"),
    ("USAGELOG_CAPTURE_BODY", "some", "capture_body"),
    ("USAGELOG_BODY_MAX_BYTES", "4k", "body_max_bytes"),
    ("USAGELOG_BODY_MAX_BYTES", "0", "body_max_bytes"),
    ("USAGELOG_MONITOR", "user:alice,tenant:acme", "monitor"),
    ("USAGELOG_MONITOR", "route:", "monitor"),
    ("USAGELOG_FLUSH_INTERVAL_MS", "-5", "flush_interval_ms"),
    ("USAGELOG_MAX_QUEUE", "1.5", "max_queue"),
    ("USAGELOG_MAX_QUEUE_BYTES", "64MiB", "max_queue_bytes"),
    ("USAGELOG_SPOOL_SEGMENT_BYTES", "lots", "spool_segment_bytes"),
    ("USAGELOG_SPOOL_SEGMENT_SECONDS", "0", "spool_segment_seconds"),
    ("USAGELOG_SPOOL_SEGMENT_SECONDS", "nan", "spool_segment_seconds"),
    ("USAGELOG_SPOOL_FSYNC", "sometimes", "spool_fsync"),
    ("USAGELOG_CLIENT_IP", "hashed", "client_ip"),
    ("USAGELOG_JWT_KEY_FILE", "/no/such/key.pem", "jwt_key_file"),
    ("USAGELOG_JWT_JWKS", "  ", "jwt_jwks"),
]


@pytest.mark.parametrize(("var", "raw", "name"), INVALID_ENV)
def test_invalid_env_value_warns_once_naming_the_variable_and_uses_the_default(
    var: str, raw: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A deployment typo never raises: one warning naming the variable, then the default."""
    with caplog.at_level(logging.WARNING, logger="usagelog"):
        settings = load_settings({var: raw})
    assert getattr(settings, name) == getattr(Settings(), name)
    records = _usagelog_warnings(caplog)
    assert len(records) == 1
    assert var in records[0].getMessage()
    assert repr(raw) in records[0].getMessage()
    assert settings.warnings == (records[0].getMessage(),)


@pytest.mark.parametrize(
    ("var", "raw", "name"),
    [
        (
            "USAGELOG_JWT_KEY",
            "-----BEGIN PUBLIC KEY-----\nsecretish-garbage\n-----END PUBLIC KEY-----",
            "jwt_key",
        ),
        (
            "USAGELOG_JWT_KEY",
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0aXNoLWdhcmJhZ2U=\n-----END PRIVATE KEY-----",
            "jwt_key",
        ),
        ("USAGELOG_USER_ID_HMAC_KEY", "   ", "user_id_hmac_key"),
    ],
)
def test_invalid_secret_values_warn_without_echoing_them(
    var: str, raw: str, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="usagelog"):
        settings = load_settings({var: raw})
    assert getattr(settings, name) == getattr(Settings(), name)
    [record] = _usagelog_warnings(caplog)
    assert var in record.getMessage() and "<hidden>" in record.getMessage()
    assert "secretish" not in record.getMessage() and "c2VjcmV0" not in record.getMessage()


def test_secret_settings_stay_out_of_the_settings_repr() -> None:
    settings = load_settings({"USAGELOG_USER_ID_HMAC_KEY": "hmac-s3cret", "USAGELOG_JWT_KEY": "jwt-s3cret"})
    assert settings.user_id_hmac_key == "hmac-s3cret" and settings.jwt_key == "jwt-s3cret"
    assert "s3cret" not in repr(settings)


def test_one_bad_variable_does_not_discard_the_good_ones(caplog: pytest.LogCaptureFixture) -> None:
    env = {"USAGELOG_MAX_QUEUE": "many", "USAGELOG_CAPTURE_BODY": "all", "USAGELOG_ENABLED": "nope"}
    with caplog.at_level(logging.WARNING, logger="usagelog"):
        settings = load_settings(env)
    assert settings.capture_body == "all"
    assert settings.max_queue == Settings().max_queue
    assert settings.enabled is True
    messages = [r.getMessage() for r in _usagelog_warnings(caplog)]
    assert len(messages) == 2
    assert sum("USAGELOG_MAX_QUEUE" in m for m in messages) == 1
    assert sum("USAGELOG_ENABLED" in m for m in messages) == 1


def test_bad_user_id_source_in_env_falls_back_to_default_sources(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="usagelog"):
        settings = load_settings({"USAGELOG_USER_ID_FROM": "header:X-User,query:user"})
    assert settings.user_id_from == ("jwt:sub", "basic")
    (record,) = _usagelog_warnings(caplog)
    assert "USAGELOG_USER_ID_FROM" in record.getMessage()
    assert "query:user" in record.getMessage()


def test_bad_monitor_rule_in_env_falls_back_to_no_rules(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="usagelog"):
        settings = load_settings({"USAGELOG_MONITOR": "user:bob,ip:10.0.0.1"})
    assert settings.monitor == ()
    (record,) = _usagelog_warnings(caplog)
    assert "USAGELOG_MONITOR" in record.getMessage()
    assert "ip:10.0.0.1" in record.getMessage()


# -- keyword overrides ---------------------------------------------------------------------------


def test_keyword_overrides_environment_which_overrides_default() -> None:
    env = {"USAGELOG_CAPTURE_BODY": "monitored", "USAGELOG_BODY_MAX_BYTES": "100"}
    settings = load_settings(env, capture_body="all")
    assert settings.capture_body == "all"  # kwarg beats env
    assert settings.body_max_bytes == 100  # env beats default
    assert settings.max_queue == Settings().max_queue  # default when neither


def test_keyword_none_means_not_given_so_env_applies() -> None:
    settings = load_settings({"USAGELOG_EXPORTER": "spool"}, exporter=None)
    assert settings.exporter == "spool"


def test_keyword_overrides_accept_native_python_types() -> None:
    settings = load_settings(
        {},
        enabled=False,
        spool_fsync=True,
        body_max_bytes=512,
        spool_segment_seconds=0.5,
        user_id_from=["header:X-User", "basic"],
        monitor=("user:alice",),
        redact_fields=["pin"],
        exporter="Spool",
    )
    assert settings.enabled is False
    assert settings.spool_fsync is True
    assert settings.body_max_bytes == 512
    assert settings.spool_segment_seconds == 0.5
    assert settings.user_id_from == ("header:X-User", "basic")
    assert settings.monitor == ("user:alice",)
    assert settings.redact_fields == ("pin",)
    assert settings.exporter == "spool"


def test_valid_env_is_still_overridden_by_a_valid_keyword(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="usagelog"):
        settings = load_settings({"USAGELOG_ENABLED": "false"}, enabled=True)
    assert settings.enabled is True
    assert _usagelog_warnings(caplog) == []


@pytest.mark.parametrize(
    ("name", "value", "var"),
    [
        ("enabled", "perhaps", "USAGELOG_ENABLED"),
        ("exporter", "kafka", "USAGELOG_EXPORTER"),
        ("capture_body", "everything", "USAGELOG_CAPTURE_BODY"),
        ("body_max_bytes", 0, "USAGELOG_BODY_MAX_BYTES"),
        ("body_max_bytes", "big", "USAGELOG_BODY_MAX_BYTES"),
        ("max_queue", -1, "USAGELOG_MAX_QUEUE"),
        ("spool_segment_seconds", 0.0, "USAGELOG_SPOOL_SEGMENT_SECONDS"),
        ("spool_dir", "  ", "USAGELOG_SPOOL_DIR"),
        ("user_id_from", ["jwt:"], "USAGELOG_USER_ID_FROM"),
        ("monitor", ["method:GET"], "USAGELOG_MONITOR"),
    ],
)
def test_invalid_keyword_override_raises_config_error_naming_the_setting(
    name: str, value: object, var: str
) -> None:
    """A bad value passed in code fails at setup, naming both the argument and its variable."""
    with pytest.raises(ConfigError) as info:
        load_settings({}, **{name: value})
    assert name in str(info.value)
    assert var in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_keyword_raises_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="capture_bodies"):
        load_settings({}, capture_bodies="all")


def test_invalid_keyword_raises_even_when_env_is_valid() -> None:
    with pytest.raises(ConfigError, match="max_queue"):
        load_settings({"USAGELOG_MAX_QUEUE": "10"}, max_queue=0)


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(AttributeError):
        settings.enabled = False  # type: ignore[misc]


def test_warnings_do_not_affect_settings_equality() -> None:
    """Two loads that resolve to the same values compare equal even if one of them warned."""
    assert load_settings({"USAGELOG_MAX_QUEUE": "x"}) == load_settings({})
