"""MESHSCOPE_HTTPS=1 behind a TLS-terminating proxy: `manage.py check --deploy` has nothing to say, and
the Procfile runs the processes the README describes."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def deploy_env(tmp_path, **extra):
    """A production-like environment: a strong key, DEBUG off, a real host name, nothing inherited."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "meshscope.example.com",
        "DATABASE_URL": os.environ.get("DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite3'}"),
        "MESHSCOPE_VAR_DIR": str(tmp_path),
        **extra,
    }


def manage(env, *args):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def settings_under(env, *names):
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n, None) for n in {list(names)!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "dashboard.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_check_deploy_reports_nothing_under_meshscope_https(tmp_path):
    result = manage(deploy_env(tmp_path, MESHSCOPE_HTTPS="1"), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_check_deploy_names_what_is_missing_without_it(tmp_path):
    result = manage(deploy_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr


def test_meshscope_https_trusts_the_proxy_header_and_secures_cookies(tmp_path):
    values = settings_under(
        deploy_env(tmp_path, MESHSCOPE_HTTPS="yes"),
        "SECURE_PROXY_SSL_HEADER",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_REDIRECT_EXEMPT",
    )
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["SECURE_SSL_REDIRECT"] and values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"]
    assert values["SECURE_HSTS_SECONDS"] >= 31536000
    # Probes reach the process in plain HTTP: a redirect would fail them.
    assert values["SECURE_REDIRECT_EXEMPT"] == ["^healthz$", "^readyz$"]


def test_without_it_nothing_trusts_a_forwarded_proto_header(tmp_path):
    values = settings_under(deploy_env(tmp_path), "SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT")
    assert values == {"SECURE_PROXY_SSL_HEADER": None, "SECURE_SSL_REDIRECT": False}


@pytest.mark.parametrize("value", ["maybe", "2", "https"])
def test_it_refuses_a_meshscope_https_that_is_not_a_boolean(tmp_path, value):
    result = manage(deploy_env(tmp_path, MESHSCOPE_HTTPS=value), "check")
    assert result.returncode != 0
    assert f"MESHSCOPE_HTTPS={value!r} is not valid" in result.stderr


def test_the_procfile_runs_web_worker_spans_and_broadcast():
    processes = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line and not line.startswith("#")
    )
    assert set(processes) == {"web", "worker", "spans", "broadcast"}
    assert processes["web"].split()[0] == "daphne" and "dashboard.asgi:application" in processes["web"]
    assert "--beat" in processes["worker"] and "-Q celery" in processes["worker"]
    assert "-Q spans" in processes["spans"] and "-P solo" in processes["spans"]
    assert processes["broadcast"].split() == ["python", "manage.py", "broadcast"]
