"""A live meshscope (daphne, the real ASGI app with websockets) on the test database, and Debian's
chromium driven by Playwright.

Daphne runs in a subprocess against the database pytest-django created, with its own channel-layer
prefix; each test's process-side channel layer is pointed at the same prefix, and a broadcaster runs
beside it, so what a test writes reaches the browser as it would in production: the write announces
its views once committed, the broadcaster computes them, daphne forwards the delta.
"""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from demo.embedded import free_port, port_is_open
from tests.browser.chromium import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch):
    """Playwright's sync API runs an event loop in this thread while a browser is open; the ORM calls
    the browser tests make around it are ordinary blocking calls. Only these tests get the switch."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def pytest_collection_modifyitems(items):
    if not Path(CHROMIUM).exists():
        skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests")
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(skip)


class LiveServer:
    def __init__(self, url, prefix, process, log):
        self.url = url
        self.prefix = prefix
        self.process = process
        self.log = log

    def __str__(self):
        return self.url


@pytest.fixture(scope="session")
def live_server_daphne(django_db_setup, django_db_blocker, redis_url, tmp_path_factory):
    from django.db import connection

    with django_db_blocker.unblock():
        db = connection.settings_dict
    database_url = f"postgres://{db['USER'] or 'postgres'}{':' + db['PASSWORD'] if db['PASSWORD'] else ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    if "sqlite" in db["ENGINE"]:
        database_url = f"sqlite:///{db['NAME']}"
    port = free_port()
    prefix = f"browser-{uuid.uuid4().hex[:8]}"
    log_path = tmp_path_factory.mktemp("daphne") / "daphne.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CHANNELS_PREFIX": prefix,
        "SECRET_KEY": os.environ.get("SECRET_KEY", "browser-tests"),
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
    }
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "dashboard.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while not port_is_open("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"daphne did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.1)
    server = LiveServer(f"http://127.0.0.1:{port}", prefix, process, log_path)
    yield server
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def live(live_server_daphne, transactional_db, settings, redis_url, _isolated_channel_layer, broadcaster):
    """The live server, with this process's channel layer and live state on its prefix, and fresh."""
    from channels.layers import channel_layers

    from dashboard.live import broadcast

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": live_server_daphne.prefix},
        }
    }
    channel_layers.backends.clear()
    client = broadcast.redis_client()
    for key in client.scan_iter(f"{live_server_daphne.prefix}:live:*"):
        client.delete(key)
    yield live_server_daphne
    channel_layers.backends.clear()


@pytest.fixture(scope="module")
def browser():
    # Module scope: Playwright's event loop must be gone before the rest of the suite uses the ORM.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def session_cookie(username="sre"):
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(username=username)
    user.set_password("pw-123456")
    user.save()
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


class PageErrors(list):
    pass


@pytest.fixture
def page(browser, live):
    """A logged-in page; JavaScript errors and dialogs (alert!) fail the test."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=live.url)
    context.add_cookies([{"name": "sessionid", "value": session_cookie(), "url": live.url}])
    page = context.new_page()
    errors = PageErrors()
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    page.on(
        "console",
        lambda msg: (
            errors.append(f"console: {msg.text}") if msg.type == "error" and "WebSocket" not in msg.text else None
        ),
    )
    page.on("dialog", lambda dialog: (errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.errors = errors
    yield page
    context.close()
    assert [e for e in errors if "Failed to load resource" not in e] == [], errors


@pytest.fixture
def anonymous_page(browser, live):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=live.url)
    page = context.new_page()
    yield page
    context.close()
