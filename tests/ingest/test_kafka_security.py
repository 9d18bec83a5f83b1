"""TLS and SASL settings of the Kafka worker, tail and replay (USAGELOG_KAFKA_SECURITY_PROTOCOL,
_SASL_MECHANISM, _SASL_USERNAME, _SASL_PASSWORD[_FILE], _CA_FILE): librdkafka settings from
them, every bad value named by its variable, the password never shown. The end-to-end check on
a real SASL_SSL broker is tests/e2e/test_secure_pipeline.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from usagelog.ingest.errors import SettingsError
from usagelog.ingest.settings import load_worker_settings

BROKERS = {"USAGELOG_KAFKA_BROKERS": "k1:9093"}
SECRET = "s3cr3t-pa55word"


def _settings(**env: str) -> object:
    return load_worker_settings(environ={**BROKERS, **env}, worker_id="w1")


def test_plaintext_without_a_login_when_nothing_is_set() -> None:
    settings = load_worker_settings(environ=BROKERS, worker_id="w1")
    config = settings.consumer_config()
    assert not any(k.startswith(("security.", "sasl.", "ssl.")) for k in config)
    assert settings.security.describe() == "PLAINTEXT"


def test_a_sasl_user_means_sasl_ssl_with_scram_sha_512_for_consumer_and_producer(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_worker_settings(
        environ={
            **BROKERS,
            "USAGELOG_KAFKA_SASL_USERNAME": "worker",
            "USAGELOG_KAFKA_SASL_PASSWORD": SECRET,
            "USAGELOG_KAFKA_CA_FILE": str(ca),
        },
        worker_id="w1",
    )
    expected = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "worker",
        "sasl.password": SECRET,
        "ssl.ca.location": str(ca),
    }
    for config in (settings.consumer_config(), settings.producer_config()):
        assert expected.items() <= config.items()
    assert settings.security.describe() == "SASL_SSL (SCRAM-SHA-512 as worker)"


def test_the_password_is_in_no_repr_and_may_come_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "kafka-password"
    secret_file.write_text(SECRET + "\n")
    settings = load_worker_settings(
        environ={
            **BROKERS,
            "USAGELOG_KAFKA_SASL_USERNAME": "worker",
            "USAGELOG_KAFKA_SASL_PASSWORD_FILE": str(secret_file),
            "USAGELOG_KAFKA_CONFIG": f"sasl.oauthbearer.config=x,ssl.key.password={SECRET}",
        },
        worker_id="w1",
    )
    assert settings.consumer_config()["sasl.password"] == SECRET
    assert SECRET not in repr(settings) and SECRET not in str(settings)


def test_usagelog_kafka_config_still_wins_over_the_named_settings() -> None:
    settings = load_worker_settings(
        environ={
            **BROKERS,
            "USAGELOG_KAFKA_SASL_USERNAME": "worker",
            "USAGELOG_KAFKA_SASL_PASSWORD": SECRET,
            "USAGELOG_KAFKA_CONFIG": "sasl.mechanism=PLAIN",
        },
        worker_id="w1",
    )
    assert settings.consumer_config()["sasl.mechanism"] == "PLAIN"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"USAGELOG_KAFKA_SECURITY_PROTOCOL": "TLS"}, "USAGELOG_KAFKA_SECURITY_PROTOCOL='TLS'"),
        (
            {"USAGELOG_KAFKA_SASL_USERNAME": "w", "USAGELOG_KAFKA_SASL_PASSWORD": SECRET,
             "USAGELOG_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "USAGELOG_KAFKA_SASL_MECHANISM='GSSAPI'",
        ),
        ({"USAGELOG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "USAGELOG_KAFKA_SASL_USERNAME is required"),
        ({"USAGELOG_KAFKA_SASL_USERNAME": "w"}, "USAGELOG_KAFKA_SASL_PASSWORD (or"),
        (
            {"USAGELOG_KAFKA_SECURITY_PROTOCOL": "SSL", "USAGELOG_KAFKA_SASL_PASSWORD": SECRET},
            "uses no SASL",
        ),
        ({"USAGELOG_KAFKA_CA_FILE": "/etc/ca.pem"}, "USAGELOG_KAFKA_CA_FILE is set but"),
        (
            {"USAGELOG_KAFKA_SECURITY_PROTOCOL": "ssl", "USAGELOG_KAFKA_CA_FILE": "/nonexistent/ca.pem"},
            "USAGELOG_KAFKA_CA_FILE='/nonexistent/ca.pem': not a readable file",
        ),
        (
            {"USAGELOG_KAFKA_SASL_USERNAME": "w", "USAGELOG_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"},
            "USAGELOG_KAFKA_SASL_PASSWORD_FILE='/nonexistent/pw': cannot read it",
        ),
        (
            {"USAGELOG_KAFKA_SASL_USERNAME": "w", "USAGELOG_KAFKA_SASL_PASSWORD": SECRET,
             "USAGELOG_KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"},
            "are both set",
        ),
    ],
)  # fmt: skip
def test_a_bad_value_names_its_variable_and_never_shows_the_password(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as raised:
        _settings(**env)
    assert named in str(raised.value)
    assert SECRET not in str(raised.value)


def test_a_malformed_usagelog_kafka_config_is_named_without_echoing_its_items() -> None:
    with pytest.raises(SettingsError) as raised:
        _settings(USAGELOG_KAFKA_CONFIG=f"acks=all,sasl.password:{SECRET}")
    assert "USAGELOG_KAFKA_CONFIG: item 2 is not key=value" in str(raised.value)
    assert SECRET not in str(raised.value)
