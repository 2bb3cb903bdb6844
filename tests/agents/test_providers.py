import json
import socket

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from agents.models import LLMProvider
from history.models import AuditLog
from tests.agents.conftest import CANARY_KEY
from tests.factories import LLMProviderFactory

pytestmark = pytest.mark.django_db

PROVIDERS = "/api/v1/providers/"


def detail(provider) -> str:
    return f"{PROVIDERS}{provider.pk}/"


def test_create_list_retrieve_update_never_show_the_key(user, user_client):
    created = user_client.post(
        PROVIDERS,
        {"name": "openai", "base_url": "https://api.example.com/v1", "api_key": CANARY_KEY, "model": "gpt"},
    )
    assert created.status_code == 201, created.content
    assert created.json()["has_api_key"] is True
    provider = LLMProvider.objects.get(pk=created.json()["id"])
    assert provider.api_key == CANARY_KEY
    assert provider.owner == user

    responses = [
        created,
        user_client.get(PROVIDERS),
        user_client.get(detail(provider)),
        user_client.patch(detail(provider), {"model": "gpt-2"}),
        user_client.put(
            detail(provider), {"name": "openai", "base_url": "https://api.example.com/v2", "api_key": CANARY_KEY}
        ),
        user_client.get(f"{PROVIDERS}?search={CANARY_KEY}"),
    ]
    for response in responses:
        assert response.status_code == 200 or response.status_code == 201
        assert CANARY_KEY not in response.content.decode()
        assert "api_key" not in json.dumps(response.json()).replace("has_api_key", "")


def test_update_keeps_the_key_unless_a_new_one_or_an_empty_one_is_given(user_client, user):
    provider = LLMProviderFactory(owner=user, api_key=CANARY_KEY)

    assert user_client.patch(detail(provider), {"name": "renamed"}).json()["has_api_key"] is True
    provider.refresh_from_db()
    assert provider.api_key == CANARY_KEY

    assert user_client.patch(detail(provider), {"api_key": "sk-new"}).status_code == 200
    provider.refresh_from_db()
    assert provider.api_key == "sk-new"

    assert user_client.patch(detail(provider), {"api_key": ""}).json()["has_api_key"] is False
    provider.refresh_from_db()
    assert provider.api_key == ""


def test_a_key_change_is_audited_without_the_key(user_client, user):
    provider = LLMProviderFactory(owner=user, api_key="")
    user_client.patch(detail(provider), {"api_key": CANARY_KEY})
    row = AuditLog.objects.get(action="provider.api_key_change", target_id=str(provider.pk))
    assert row.actor == user
    assert row.after == {"has_api_key": True}
    assert CANARY_KEY not in json.dumps([row.before, row.after, row.payload, row.target_repr])


def test_another_users_provider_does_not_exist(user_client, other_user):
    theirs = LLMProviderFactory(owner=other_user)
    assert user_client.get(PROVIDERS).json()["count"] == 0
    for response in (
        user_client.get(detail(theirs)),
        user_client.patch(detail(theirs), {"name": "mine now"}),
        user_client.delete(detail(theirs)),
        user_client.post(f"{detail(theirs)}test/"),
    ):
        assert response.status_code == 404
    assert LLMProvider.objects.filter(pk=theirs.pk, name=theirs.name).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "p", "base_url": "https://x.example", "colour": "red"}, "colour"),
        ({"name": "p" * 51, "base_url": "https://x.example"}, "name"),
        ({"name": "p", "base_url": "not a url"}, "base_url"),
        ({"name": "p", "base_url": "https://x.example", "metadata": ["not", "an", "object"]}, "metadata"),
        ({"name": "p", "base_url": "https://x.example", "available_models": "gpt"}, "available_models"),
        ({"base_url": "https://x.example"}, "name"),
        ({"name": "p", "base_url": "https://x.example", "kind": "cohere"}, "kind"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(user_client, body, field):
    response = user_client.post(PROVIDERS, body)
    assert response.status_code == 400
    assert field in response.json()


def test_a_duplicate_name_is_a_400_naming_name(user_client, user):
    LLMProviderFactory(owner=user, name="openai")
    response = user_client.post(PROVIDERS, {"name": "openai", "base_url": "https://x.example"})
    assert response.status_code == 400
    assert response.json()["field"] == "name"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def test_testing_an_unreachable_provider_answers_not_ok(user_client, user, allow_loopback):
    port = closed_port()
    provider = LLMProviderFactory(owner=user, base_url=f"http://127.0.0.1:{port}/v1", api_key=CANARY_KEY)
    response = user_client.post(f"{detail(provider)}test/")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is False
    assert body["status"] is None
    assert body["error"]
    assert CANARY_KEY not in response.content.decode()


def test_testing_a_provider_that_answers(user_client, user, fake_openai, allow_loopback):
    provider = LLMProviderFactory(owner=user, base_url=fake_openai.base_url, api_key=fake_openai.api_key)
    response = user_client.post(f"{detail(provider)}test/")
    assert response.json() == {"ok": True, "status": 200, "error": "", "code": ""}


def test_testing_a_provider_with_a_wrong_key(user_client, user, fake_openai, allow_loopback):
    provider = LLMProviderFactory(owner=user, base_url=fake_openai.base_url, api_key=CANARY_KEY)
    response = user_client.post(f"{detail(provider)}test/")
    assert response.status_code == 200
    assert response.json()["ok"] is False
    assert response.json()["status"] == 401
    assert CANARY_KEY not in response.content.decode()


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:{port}/v1", "http://169.254.169.254/latest", "http://10.0.0.1/v1"]
)
def test_the_provider_test_never_reaches_private_addresses(user_client, user, fake_openai, base_url):
    port = fake_openai.base_url.rsplit(":", 1)[1].split("/")[0]
    provider = LLMProviderFactory(owner=user, base_url=base_url.format(port=port), api_key=CANARY_KEY)

    body = user_client.post(f"{detail(provider)}test/").json()

    assert body["ok"] is False
    assert "refused" in body["error"]
    assert fake_openai.requests == []


# --- Kinds ----------------------------------------------------------------------------------------


def test_a_provider_is_openai_compatible_unless_given_another_kind(user_client):
    plain = user_client.post(PROVIDERS, {"name": "plain", "base_url": "https://api.example.com/v1"})
    claude = user_client.post(PROVIDERS, {"name": "claude", "kind": "anthropic", "base_url": "https://a.example/v1"})
    assert (plain.status_code, claude.status_code) == (201, 201)
    assert (plain.json()["kind"], claude.json()["kind"]) == ("openai", "anthropic")
    changed = user_client.patch(f"{PROVIDERS}{claude.json()['id']}/", {"kind": "gemini"}, format="json")
    assert changed.json()["kind"] == "gemini"
    assert LLMProvider.objects.get(pk=claude.json()["id"]).kind == "gemini"


def test_the_database_refuses_an_unknown_kind(user):
    with pytest.raises(IntegrityError), transaction.atomic():
        LLMProviderFactory(owner=user, kind="cohere")


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_testing_a_provider_speaks_its_kinds_protocol(user_client, user, kind, request, allow_loopback):
    fake = request.getfixturevalue(f"fake_{kind}")
    provider = LLMProviderFactory(owner=user, kind=kind, base_url=fake.base_url, api_key=fake.api_key)
    assert user_client.post(f"{detail(provider)}test/").json() == {"ok": True, "status": 200, "error": "", "code": ""}

    provider.api_key = CANARY_KEY
    provider.save(update_fields=["api_key"])
    refused = user_client.post(f"{detail(provider)}test/")
    assert refused.json()["ok"] is False
    assert CANARY_KEY not in refused.content.decode()
    # Each sent the key in its own header, and nowhere in the URL.
    assert [request["path"] for request in fake.requests] == [f"/{fake.base_url.rsplit('/', 1)[1]}/models"] * 2
    assert all(CANARY_KEY not in json.dumps(request["query"]) for request in fake.requests)


def test_the_admin_shows_and_filters_by_kind(operator, user):
    LLMProviderFactory(owner=user, name="claude", kind="anthropic")
    LLMProviderFactory(owner=user, name="gpt", kind="openai")
    changelist = reverse("admin:agents_llmprovider_changelist")
    page = operator.get(f"{changelist}?kind__exact=anthropic").content.decode()
    assert "claude" in page
    assert ">gpt<" not in page
    assert 'name="kind"' in operator.get(reverse("admin:agents_llmprovider_add")).content.decode()
