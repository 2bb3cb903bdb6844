"""Sign-in lockout (django-axes): by username and by address, on the console, the admin and the API."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core.cache.backends.locmem import LocMemCache
from django.test import Client
from django.utils import timezone

from history.models import AuditLog
from tests.factories import UserFactory
from tests.fakes.caches import cache_use

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
TOKEN = "/api/v1/auth/token/"


@pytest.fixture(autouse=True)
def lockout(settings):
    settings.AXES_FAILURE_LIMIT = 3
    # The audit's once-per-cool-off keys in a cache of this test's own: clearing the shared Redis
    # database would also wipe what the tests of other xdist workers hold there at that moment.
    cache_use(settings, LocMemCache)


def form_sign_in(path: str, username: str, password: str, address: str = "203.0.113.1"):
    return Client(REMOTE_ADDR=address).post(path, {"username": username, "password": password})


def signed_in(response) -> bool:
    return response.status_code == 302 and "sessionid" in response.cookies


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"])
def test_a_username_is_locked_out_after_the_limit_even_with_the_right_password(path):
    UserFactory(username="ada", is_staff=True)

    failures = [form_sign_in(path, "ada", "wrong", address=f"203.0.113.{i}").status_code for i in range(2)]
    locking = form_sign_in(path, "ada", "wrong", address="203.0.113.9")
    right = form_sign_in(path, "ada", PASSWORD, address="198.51.100.1")

    assert failures == [200, 200]  # the form again, with its error
    assert locking.status_code == right.status_code == 429
    assert not signed_in(right)
    assert "Too many failed sign-ins" in right.content.decode()
    assert int(right["Retry-After"]) == 15 * 60


def test_an_address_is_locked_out_whatever_username_it_tries():
    UserFactory(username="ada")
    for name in ("bob", "carol", "dave"):
        form_sign_in("/login/", name, "wrong", address="203.0.113.5")

    assert form_sign_in("/login/", "ada", PASSWORD, address="203.0.113.5").status_code == 429
    assert signed_in(form_sign_in("/login/", "ada", PASSWORD, address="203.0.113.6"))


def test_the_lockout_ends_after_the_cool_off():
    UserFactory(username="ada")
    for _ in range(3):
        form_sign_in("/login/", "ada", "wrong")
    assert form_sign_in("/login/", "ada", PASSWORD).status_code == 429

    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))

    assert signed_in(form_sign_in("/login/", "ada", PASSWORD))


def test_a_successful_sign_in_resets_the_count():
    UserFactory(username="ada")
    for _ in range(2):
        form_sign_in("/login/", "ada", "wrong")
    assert signed_in(form_sign_in("/login/", "ada", PASSWORD))

    assert [form_sign_in("/login/", "ada", "wrong").status_code for _ in range(2)] == [200, 200]


def test_the_token_endpoint_counts_too_and_answers_the_contracts_json(api_client):
    UserFactory(username="ada")
    failures = [
        api_client.post(TOKEN, {"username": "ada", "password": "wrong"}, REMOTE_ADDR=f"203.0.113.{i}").status_code
        for i in range(2)
    ]
    form_sign_in("/login/", "ada", "wrong")  # the console's failures count for the API as well

    refused = api_client.post(TOKEN, {"username": "ada", "password": PASSWORD}, REMOTE_ADDR="198.51.100.1")

    assert failures == [400, 400]
    assert refused.status_code == 429
    body = refused.json()
    assert (body["code"], body["limit"], body["retry_after"]) == ("locked_out", 3, 15 * 60)
    assert "Too many failed sign-ins" in body["detail"]
    assert refused["Retry-After"] == str(15 * 60)


def test_a_lockout_is_audited_once_per_username_and_address():
    UserFactory(username="ada")
    for _ in range(5):
        form_sign_in("/login/", "ada", "wrong", address="203.0.113.7")

    rows = list(AuditLog.objects.filter(action="auth.locked_out").values("target_id", "payload"))
    assert rows == [{"target_id": "ada", "payload": {"ip_address": "203.0.113.7", "path": "/login/"}}]
