"""dashboard/settings.py reads the README's variables from the environment, typed, and refuses a bad
value at startup, naming the variable. Each case starts a Python process of its own with a crafted
environment, since settings are read once, when the process starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer

from collectors import kafka_spans, lag
from collectors.formats import FORMATS
from dashboard.settings import TRACE_FORMATS

ROOT = Path(__file__).resolve().parent.parent
PRINT_SETTINGS = """
import json, sys
from django.conf import settings
print(json.dumps({name: getattr(settings, name) for name in sys.argv[1:]}, default=str))
"""


def start(tmp_path, names, **environment):
    """Starts a process that loads the settings with only ``environment`` (and a secret key) set."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DJANGO_SETTINGS_MODULE": "dashboard.settings",
        "MESHSCOPE_VAR_DIR": str(tmp_path),
        "SECRET_KEY": "test-secret",
        **environment,
    }
    return subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS, *names], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def settings_under(tmp_path, *names, **environment):
    started = start(tmp_path, names, **environment)
    assert started.returncode == 0, started.stderr
    return json.loads(started.stdout)


def refusal(tmp_path, **environment):
    """The last line of what a process that refuses to start says."""
    started = start(tmp_path, ["DEBUG"], **environment)
    assert started.returncode != 0, f"started with {environment}"
    return started.stderr.strip().splitlines()[-1]


def test_without_any_variable_the_settings_are_the_readmes_defaults(tmp_path):
    read = settings_under(
        tmp_path,
        "DEBUG",
        "ALLOWED_HOSTS",
        "CSRF_TRUSTED_ORIGINS",
        "REDIS_URL",
        "CELERY_BROKER_URL",
        "CHANNEL_LAYERS",
        "KAFKA_BOOTSTRAP_SERVERS",
        "TRACE_TOPICS",
        "KAFKA_CONSUMER_GROUP",
        "KAFKA_SECURITY",
        "KAFKA_MAX_POLL_INTERVAL_MS",
        "KAFKA_SESSION_TIMEOUT_MS",
        "SPAN_CONSUMER_RUN_SECONDS",
        "SPAN_MAX_MESSAGE_BYTES",
        "SPAN_PAIRING_GRACE_SECONDS",
        "LAG_CONSUMER_GROUPS",
        "SPAN_RETENTION_HOURS",
        "SPAN_KEEP_RATIO",
        "ROLLUP_RETENTION_DAYS",
        "CONSUL_HTTP_ADDR",
        "CONSUL_DATACENTERS",
        "CONSUL_BLOCKING_WAIT_SECONDS",
        "LOGGING",
        "DATABASES",
    )

    assert read["DEBUG"] is False
    assert read["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "[::1]"]
    assert read["CSRF_TRUSTED_ORIGINS"] == []
    assert read["REDIS_URL"] == read["CELERY_BROKER_URL"] == "redis://127.0.0.1:6379/0"
    assert read["CHANNEL_LAYERS"]["default"]["CONFIG"]["prefix"] == "meshscope"
    assert read["KAFKA_BOOTSTRAP_SERVERS"] == ["127.0.0.1:9092"]
    assert read["TRACE_TOPICS"] == {"zipkin": "zipkin_json", "otlp_spans": "otlp_proto"}
    assert read["KAFKA_CONSUMER_GROUP"] == "meshscope"
    assert read["KAFKA_SECURITY"] == {"security_protocol": "PLAINTEXT"}
    assert (read["KAFKA_MAX_POLL_INTERVAL_MS"], read["KAFKA_SESSION_TIMEOUT_MS"]) == (60000, 10000)
    assert read["SPAN_CONSUMER_RUN_SECONDS"] == 10
    assert read["SPAN_MAX_MESSAGE_BYTES"] == 4194304
    assert read["SPAN_PAIRING_GRACE_SECONDS"] == 60
    assert read["LAG_CONSUMER_GROUPS"] == []
    assert (read["SPAN_RETENTION_HOURS"], read["ROLLUP_RETENTION_DAYS"]) == (24, 14)
    assert read["SPAN_KEEP_RATIO"] == 1.0
    assert (read["CONSUL_HTTP_ADDR"], read["CONSUL_DATACENTERS"]) == ("", [])
    assert read["CONSUL_BLOCKING_WAIT_SECONDS"] == 30
    assert read["LOGGING"]["root"]["level"] == "INFO"
    database = read["DATABASES"]["default"]
    assert (database["ENGINE"], database["NAME"]) == ("django.db.backends.sqlite3", str(tmp_path / "meshscope.sqlite3"))
    assert "PRAGMA journal_mode=WAL" in database["OPTIONS"]["init_command"]


def test_every_typed_setting_is_read_from_the_environment(tmp_path):
    read = settings_under(
        tmp_path,
        "DEBUG",
        "ALLOWED_HOSTS",
        "CELERY_BROKER_URL",
        "CHANNEL_LAYERS",
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_CONSUMER_GROUP",
        "KAFKA_MAX_POLL_INTERVAL_MS",
        "KAFKA_SESSION_TIMEOUT_MS",
        "SPAN_CONSUMER_RUN_SECONDS",
        "SPAN_MAX_MESSAGE_BYTES",
        "SPAN_PAIRING_GRACE_SECONDS",
        "LAG_CONSUMER_GROUPS",
        "SPAN_RETENTION_HOURS",
        "SPAN_KEEP_RATIO",
        "ROLLUP_RETENTION_DAYS",
        "CONSUL_DATACENTERS",
        "CONSUL_BLOCKING_WAIT_SECONDS",
        "LOGGING",
        DEBUG="on",
        ALLOWED_HOSTS="meshscope.example.com, 10.0.0.5",
        REDIS_URL="redis://cache:6380/3",
        CHANNELS_PREFIX="staging",
        KAFKA_BOOTSTRAP_SERVERS="kafka-1:9093,kafka-2:9093",
        KAFKA_CONSUMER_GROUP="meshscope-staging",
        KAFKA_MAX_POLL_INTERVAL_MS="30000",
        KAFKA_SESSION_TIMEOUT_MS="6000",
        SPAN_CONSUMER_RUN_SECONDS="2.5",
        SPAN_MAX_MESSAGE_BYTES="1048576",
        SPAN_PAIRING_GRACE_SECONDS="90",
        LAG_CONSUMER_GROUPS="billing, shipping",
        SPAN_RETENTION_HOURS="6.5",
        SPAN_KEEP_RATIO="0.05",
        ROLLUP_RETENTION_DAYS="3",
        CONSUL_DATACENTERS="dc1,dc2",
        CONSUL_BLOCKING_WAIT_SECONDS="5",
        LOG_LEVEL="WARNING",
    )

    assert read["DEBUG"] is True
    assert read["ALLOWED_HOSTS"] == ["meshscope.example.com", "10.0.0.5"]
    # Celery's broker follows REDIS_URL unless CELERY_BROKER_URL says otherwise.
    assert read["CELERY_BROKER_URL"] == "redis://cache:6380/3"
    config = read["CHANNEL_LAYERS"]["default"]["CONFIG"]
    assert (config["hosts"][0]["address"], config["prefix"]) == ("redis://cache:6380/3", "staging")
    assert read["KAFKA_BOOTSTRAP_SERVERS"] == ["kafka-1:9093", "kafka-2:9093"]
    assert read["KAFKA_CONSUMER_GROUP"] == "meshscope-staging"
    assert (read["KAFKA_MAX_POLL_INTERVAL_MS"], read["KAFKA_SESSION_TIMEOUT_MS"]) == (30000, 6000)
    assert read["SPAN_CONSUMER_RUN_SECONDS"] == 2.5
    assert read["SPAN_MAX_MESSAGE_BYTES"] == 1048576
    assert read["SPAN_PAIRING_GRACE_SECONDS"] == 90
    assert read["LAG_CONSUMER_GROUPS"] == ["billing", "shipping"]
    assert (read["SPAN_RETENTION_HOURS"], read["ROLLUP_RETENTION_DAYS"]) == (6.5, 3)
    assert read["SPAN_KEEP_RATIO"] == 0.05
    assert read["CONSUL_DATACENTERS"] == ["dc1", "dc2"]
    assert read["CONSUL_BLOCKING_WAIT_SECONDS"] == 5
    assert read["LOGGING"]["root"]["level"] == "WARNING"


def test_the_addresses_and_credentials_are_read_as_given(tmp_path):
    read = settings_under(
        tmp_path,
        "CSRF_TRUSTED_ORIGINS",
        "CELERY_BROKER_URL",
        "DATABASES",
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_CACERT",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        CSRF_TRUSTED_ORIGINS="https://meshscope.example.com",
        REDIS_URL="redis://cache:6380/3",
        CELERY_BROKER_URL="redis://broker:6379/1",
        DATABASE_URL="postgres://meshscope:pw@db.example.com:5433/meshscope",
        CONSUL_HTTP_ADDR="https://consul.example.com:8501",
        CONSUL_HTTP_TOKEN="token-1",
        CONSUL_CACERT="/etc/consul/ca.pem",
        CONSUL_CLIENT_CERT="/etc/consul/client.pem",
        CONSUL_CLIENT_KEY="/etc/consul/client.key",
    )

    assert read["CSRF_TRUSTED_ORIGINS"] == ["https://meshscope.example.com"]
    assert read["CELERY_BROKER_URL"] == "redis://broker:6379/1"
    database = read["DATABASES"]["default"]
    assert (database["ENGINE"], database["HOST"], database["PORT"], database["NAME"]) == (
        "django.db.backends.postgresql",
        "db.example.com",
        5433,
        "meshscope",
    )
    assert (read["CONSUL_HTTP_ADDR"], read["CONSUL_HTTP_TOKEN"]) == ("https://consul.example.com:8501", "token-1")
    assert (read["CONSUL_CACERT"], read["CONSUL_CLIENT_CERT"], read["CONSUL_CLIENT_KEY"]) == (
        "/etc/consul/ca.pem",
        "/etc/consul/client.pem",
        "/etc/consul/client.key",
    )


def test_a_trace_topic_without_a_format_is_detected_per_message(tmp_path):
    read = settings_under(tmp_path, "TRACE_TOPICS", TRACE_TOPICS="spans, otlp_spans:otlp_json,zipkin")

    assert read["TRACE_TOPICS"] == {"spans": "auto", "otlp_spans": "otlp_json", "zipkin": "auto"}


def test_the_kafka_sasl_and_tls_variables_become_the_clients_security_settings(tmp_path):
    read = settings_under(
        tmp_path,
        "KAFKA_SECURITY",
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME="meshscope",
        KAFKA_SASL_PASSWORD="s3cret",
        KAFKA_SSL_CAFILE="/etc/kafka/ca.pem",
        KAFKA_SSL_CERTFILE="/etc/kafka/client.pem",
        KAFKA_SSL_KEYFILE="/etc/kafka/client.key",
    )

    assert read["KAFKA_SECURITY"] == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "meshscope",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/kafka/ca.pem",
        "ssl_certfile": "/etc/kafka/client.pem",
        "ssl_keyfile": "/etc/kafka/client.key",
    }


@pytest.mark.parametrize(
    "name, value",
    [
        ("SPAN_RETENTION_HOURS", "abc"),
        ("SPAN_RETENTION_HOURS", "-1"),
        ("SPAN_RETENTION_HOURS", "0"),
        ("SPAN_RETENTION_HOURS", "nan"),
        ("SPAN_KEEP_RATIO", "0"),
        ("SPAN_KEEP_RATIO", "1.5"),
        ("SPAN_KEEP_RATIO", "10%"),
        ("SPAN_KEEP_RATIO", "nan"),
        ("ROLLUP_RETENTION_DAYS", "-1"),
        ("ROLLUP_RETENTION_DAYS", "inf"),
        ("SPAN_PAIRING_GRACE_SECONDS", "-1"),
        ("SPAN_PAIRING_GRACE_SECONDS", "1.5"),
        ("SPAN_CONSUMER_RUN_SECONDS", "0"),
        ("SPAN_MAX_MESSAGE_BYTES", "4MB"),
        ("KAFKA_MAX_POLL_INTERVAL_MS", "0"),
        ("KAFKA_SESSION_TIMEOUT_MS", "ten"),
        ("CONSUL_BLOCKING_WAIT_SECONDS", "0"),
        ("TRACE_TOPICS", "zipkin:nosuchformat"),
        ("TRACE_TOPICS", ":otlp_json"),
        ("KAFKA_SECURITY_PROTOCOL", "BOGUS"),
        ("KAFKA_SASL_MECHANISM", "MD5"),
        ("DEBUG", "maybe"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_it_refuses_to_start_with_a_bad_value_and_names_the_variable(tmp_path, name, value):
    said = refusal(tmp_path, **{name: value})

    assert said.startswith(f"django.core.exceptions.ImproperlyConfigured: {name}={value!r} is not valid: expected ")


def test_it_refuses_to_start_without_a_secret_key_unless_debug_is_on(tmp_path):
    environment = {"SECRET_KEY": "insecure-development-key-do-not-use"}

    assert "SECRET_KEY" in refusal(tmp_path, **environment)
    assert settings_under(tmp_path, "DEBUG", DEBUG="1", **environment) == {"DEBUG": True}


def test_the_formats_settings_accept_are_the_decoders_there_are():
    assert TRACE_FORMATS == FORMATS


# --- The settings reach the Kafka clients -----------------------------------------------------------

SECURITY = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-256",
    "sasl_plain_username": "meshscope",
    "sasl_plain_password": "s3cret",
    "ssl_cafile": "/etc/kafka/ca.pem",
    "ssl_certfile": "/etc/kafka/client.pem",
    "ssl_keyfile": "/etc/kafka/client.key",
}


def test_the_span_consumer_connects_with_the_security_and_group_settings(settings):
    settings.KAFKA_SECURITY = SECURITY
    settings.KAFKA_BOOTSTRAP_SERVERS = ["kafka-1:9093"]
    settings.KAFKA_CONSUMER_GROUP = "meshscope-staging"
    settings.KAFKA_MAX_POLL_INTERVAL_MS = 30000
    settings.KAFKA_SESSION_TIMEOUT_MS = 6000

    config = kafka_spans.consumer_config()

    assert config.items() >= SECURITY.items()
    assert (config["bootstrap_servers"], config["group_id"]) == (["kafka-1:9093"], "meshscope-staging")
    assert (config["max_poll_interval_ms"], config["session_timeout_ms"]) == (30000, 6000)
    # Every key is one kafka-python knows: an unknown one would fail only when a worker starts.
    assert set(config) <= set(KafkaConsumer.DEFAULT_CONFIG)


def test_the_lag_collector_connects_with_the_security_settings(settings):
    settings.KAFKA_SECURITY = SECURITY
    settings.KAFKA_BOOTSTRAP_SERVERS = ["kafka-1:9093"]

    config = lag._client_config()

    assert config.items() >= SECURITY.items()
    assert config["bootstrap_servers"] == ["kafka-1:9093"]
    # The collector builds both an admin client and a consumer from it.
    assert set(config) <= set(KafkaAdminClient.DEFAULT_CONFIG) & set(KafkaConsumer.DEFAULT_CONFIG)
