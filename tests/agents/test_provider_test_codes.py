"""``POST /api/v1/providers/<id>/test/`` says what to fix with a code, against the OpenAI-compatible fake."""

import socket

import pytest

from tests.agents.conftest import CANARY_KEY
from tests.factories import LLMProviderFactory

pytestmark = pytest.mark.django_db


def provider_test_url(provider) -> str:
    return f"/api/v1/providers/{provider.pk}/test/"


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def test_a_provider_that_answers_is_ok_with_no_code(user_client, user, fake_openai, allow_loopback):
    provider = LLMProviderFactory(owner=user, base_url=fake_openai.base_url, api_key=fake_openai.api_key)

    body = user_client.post(provider_test_url(provider)).json()

    assert body == {"ok": True, "status": 200, "error": "", "code": ""}


def test_a_refused_key_is_unauthorized(user_client, user, fake_openai, allow_loopback):
    provider = LLMProviderFactory(owner=user, base_url=fake_openai.base_url, api_key=CANARY_KEY)

    response = user_client.post(provider_test_url(provider))

    assert response.json()["code"] == "unauthorized"
    assert response.json()["status"] == 401
    assert CANARY_KEY not in response.content.decode()


def test_a_base_url_without_models_is_not_found(user_client, user, fake_openai, allow_loopback):
    root = fake_openai.base_url.removesuffix("/v1")
    provider = LLMProviderFactory(owner=user, base_url=root, api_key=fake_openai.api_key)

    body = user_client.post(provider_test_url(provider)).json()

    assert (body["ok"], body["status"], body["code"]) == (False, 404, "not_found")


def test_nothing_listening_is_unreachable(user_client, user, allow_loopback):
    provider = LLMProviderFactory(owner=user, base_url=f"http://127.0.0.1:{closed_port()}/v1", api_key=CANARY_KEY)

    body = user_client.post(provider_test_url(provider)).json()

    assert (body["ok"], body["status"], body["code"]) == (False, None, "unreachable")
    assert body["error"]


def test_a_private_address_is_blocked_and_never_reached(user_client, user, fake_openai):
    # Without allow_loopback, the outbound guard refuses 127.0.0.1 where the fake listens.
    provider = LLMProviderFactory(owner=user, base_url=fake_openai.base_url, api_key=CANARY_KEY)

    body = user_client.post(provider_test_url(provider)).json()

    assert (body["ok"], body["code"]) == (False, "blocked")
    assert fake_openai.requests == []


def test_another_users_provider_cannot_be_tested(other_client, user, fake_openai, allow_loopback):
    provider = LLMProviderFactory(owner=user, base_url=fake_openai.base_url, api_key=fake_openai.api_key)

    assert other_client.post(provider_test_url(provider)).status_code == 404


def test_testing_needs_a_signed_in_user(api_client, user):
    provider = LLMProviderFactory(owner=user)

    assert api_client.post(provider_test_url(provider)).status_code in (401, 403)
