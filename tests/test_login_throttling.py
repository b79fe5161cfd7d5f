"""django-axes: five failed logins for a username from one address lock it out, on the login page, the
admin and the API alike, with a clear message; an administrator can unlock it."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
LOGIN_FORMS = ["/login/", "/admin/login/"]


@pytest.fixture(autouse=True)
def _fast_hashing(settings):
    """Every attempt checks a password: PBKDF2's deliberate slowness would make this file take a minute."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password=PASSWORD, is_staff=True)


def log_in(client, url, password, username="alice", address="10.0.0.1"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def fail(client, url, times, address="10.0.0.1"):
    return [log_in(client, url, "wrong", address=address).status_code for _ in range(times)]


@pytest.mark.parametrize("url", LOGIN_FORMS)
def test_it_lets_four_failures_pass_and_locks_out_at_the_fifth(client, alice, url, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    statuses = fail(client, url, 5)
    assert statuses[:4] == [200] * 4  # the form again, with its error
    assert statuses[4] == 429


@pytest.mark.parametrize("url", LOGIN_FORMS)
def test_it_refuses_even_the_right_password_once_locked_out_and_says_why(client, alice, url):
    fail(client, url, 5)
    response = log_in(client, url, PASSWORD)
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed logins" in page
    assert "30 minutes" in page
    assert int(response["Retry-After"]) == 30 * 60
    assert "_auth_user_id" not in client.session


def test_the_lockout_page_shows_the_username_as_text(client, django_user_model):
    name = "<script>alert(1)</script>"
    django_user_model.objects.create_user(name, password=PASSWORD)
    for _ in range(5):
        response = log_in(client, "/login/", "wrong", username=name)
    assert response.status_code == 429
    assert name not in response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.content.decode()


def test_it_locks_the_username_from_that_address_only(client, alice, django_user_model):
    django_user_model.objects.create_user("bob", password=PASSWORD)
    fail(client, "/login/", 5)
    assert log_in(client, "/login/", PASSWORD, username="bob").status_code == 302
    client.logout()
    assert log_in(client, "/login/", PASSWORD, address="10.0.0.2").status_code == 302


def test_a_success_before_the_limit_forgets_the_failures(client, alice):
    fail(client, "/login/", 4)
    assert log_in(client, "/login/", PASSWORD).status_code == 302
    client.logout()
    assert fail(client, "/login/", 4) == [200] * 4


def test_the_lockout_ends_after_the_cool_off(client, alice):
    fail(client, "/login/", 5)
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=31))
    assert log_in(client, "/login/", PASSWORD).status_code == 302


def test_an_administrator_unlocks_with_axes_reset_username(client, alice):
    fail(client, "/login/", 5)
    call_command("axes_reset_username", "alice")
    assert log_in(client, "/login/", PASSWORD).status_code == 302


def test_an_administrator_sees_and_deletes_lockouts_in_the_admin(client, alice, admin_client):
    fail(client, "/login/", 5)
    listing = admin_client.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200
    assert "alice" in listing.content.decode()
    attempt = AccessAttempt.objects.get(username="alice")
    response = admin_client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert log_in(client, "/login/", PASSWORD).status_code == 302


def test_the_api_token_endpoint_gives_a_token_for_the_right_password(alice):
    api = APIClient()
    response = api.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/services/").status_code == 200


def test_the_api_token_endpoint_takes_a_username_of_whitespace_as_a_wrong_username_not_a_blank_field(alice):
    # "\x1d" is whitespace to Python: trimmed, it would be a 400 "may not be blank" for a valid string.
    for username in ("\x1d", " ", "alice "):
        response = APIClient().post("/api/auth/token/", {"username": username, "password": PASSWORD}, format="json")
        assert response.status_code == 401, (username, response.content)


def test_the_api_token_endpoint_locks_out_with_a_json_message(alice):
    api = APIClient(REMOTE_ADDR="10.0.0.1")
    statuses = [
        api.post("/api/auth/token/", {"username": "alice", "password": "wrong"}, format="json").status_code
        for _ in range(5)
    ]
    assert statuses == [401] * 4 + [429]
    response = api.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 429
    assert "Too many failed logins" in response.json()["detail"]
    assert response["Retry-After"] == str(30 * 60)


def test_a_login_page_lockout_also_locks_the_api_for_that_username_and_address(client, alice):
    fail(client, "/login/", 5)
    api = APIClient(REMOTE_ADDR="10.0.0.1")
    response = api.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert response.status_code == 429


def test_behind_a_trusted_proxy_it_locks_the_client_address_the_proxy_forwarded(client, alice, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.9.9.9"

    def through_proxy(password, forwarded_for):
        return client.post(
            "/login/",
            {"username": "alice", "password": password},
            REMOTE_ADDR=proxy,
            HTTP_X_FORWARDED_FOR=forwarded_for,
        )

    # A client cannot pick its address by sending its own X-Forwarded-For: the proxy appends the real one.
    assert [through_proxy("wrong", f"1.1.1.{i}, 203.0.113.7").status_code for i in range(5)][-1] == 429
    assert AccessAttempt.objects.get().ip_address == "203.0.113.7"
    assert through_proxy(PASSWORD, "198.51.100.2").status_code == 302
