"""Tokens end: a TTL refreshed on use, a cap per user, logout, and websocket tickets instead of tokens."""

from datetime import timedelta

import pytest
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from accounts.tickets import ws_ticket_redeem
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def sign_in(username: str = "ada") -> str:
    response = APIClient().post("/api/v1/auth/token/", {"username": username, "password": PASSWORD}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["token"]


def with_token(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_a_token_expires_after_the_ttl_without_use(settings):
    UserFactory(username="ada")
    token = sign_in()
    stored = AuthToken.objects.get()
    assert timedelta(days=7) - timedelta(minutes=1) < stored.expiry - timezone.now() <= timedelta(days=7)

    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))

    assert with_token(token).get("/api/v1/auth/me/").status_code == 401


def test_using_a_token_pushes_its_end_back():
    UserFactory(username="ada")
    token = sign_in()
    AuthToken.objects.update(expiry=timezone.now() + timedelta(hours=1))

    assert with_token(token).get("/api/v1/auth/me/").status_code == 200

    assert AuthToken.objects.get().expiry > timezone.now() + timedelta(days=6)


def test_at_the_cap_the_least_recently_used_token_gives_way(settings):
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_LIMIT_PER_USER": 2}
    UserFactory(username="ada")
    first, second = sign_in(), sign_in()
    AuthToken.objects.update(expiry=timezone.now() + timedelta(hours=1))  # both last used a while ago
    assert with_token(first).get("/api/v1/auth/me/").status_code == 200  # first is now the most recently used

    third = sign_in()

    assert AuthToken.objects.count() == 2
    assert with_token(second).get("/api/v1/auth/me/").status_code == 401
    assert with_token(first).get("/api/v1/auth/me/").status_code == 200
    assert with_token(third).get("/api/v1/auth/me/").status_code == 200


def test_expired_tokens_do_not_count_towards_the_cap(settings):
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_LIMIT_PER_USER": 2}
    UserFactory(username="ada")
    kept = sign_in()
    sign_in()
    AuthToken.objects.exclude(token_key=kept[:15]).update(expiry=timezone.now() - timedelta(seconds=1))

    sign_in()

    assert AuthToken.objects.count() == 2
    assert with_token(kept).get("/api/v1/auth/me/").status_code == 200


def test_logout_ends_the_calling_token_only():
    UserFactory(username="ada")
    phone, laptop = sign_in(), sign_in()

    assert with_token(phone).post("/api/v1/auth/logout/").status_code == 204

    assert with_token(phone).get("/api/v1/auth/me/").status_code == 401
    assert with_token(laptop).get("/api/v1/auth/me/").status_code == 200


def test_logout_all_ends_every_token_of_the_user_and_no_one_elses():
    UserFactory(username="ada")
    UserFactory(username="bob")
    phone, laptop, bobs = sign_in(), sign_in(), sign_in("bob")

    assert with_token(phone).post("/api/v1/auth/logout-all/").status_code == 204

    assert with_token(laptop).get("/api/v1/auth/me/").status_code == 401
    assert with_token(bobs).get("/api/v1/auth/me/").status_code == 200


def test_logout_with_a_session_ends_the_session(user):
    client = APIClient(enforce_csrf_checks=False)
    client.force_login(user)
    assert client.get("/api/v1/auth/me/").status_code == 200

    assert client.post("/api/v1/auth/logout/").status_code == 204

    assert client.get("/api/v1/auth/me/").status_code in (401, 403)


def test_logout_needs_credentials(api_client):
    assert api_client.post("/api/v1/auth/logout/").status_code == 401
    assert api_client.post("/api/v1/auth/logout-all/").status_code == 401


def test_a_ws_ticket_names_its_user_once(user_client, user):
    response = user_client.post("/api/v1/auth/ws-ticket/")

    assert response.status_code == 201
    body = response.json()
    assert body["expires_in"] == 60
    assert ws_ticket_redeem(body["ticket"]) == user.pk
    assert ws_ticket_redeem(body["ticket"]) is None


def test_a_ws_ticket_needs_credentials(api_client):
    assert api_client.post("/api/v1/auth/ws-ticket/").status_code == 401
