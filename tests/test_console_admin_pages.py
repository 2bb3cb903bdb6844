"""The console's Providers and Apps pages without a browser: sign-in required, in the nav, strict CSP,
and no provider key or app secret ever in the page (the page's script reads the API)."""

import pytest
from django.test import Client

from tests.agents.conftest import CANARY_KEY
from tests.factories import AppFactory, LLMProviderFactory
from tests.test_content_security_policy import assert_strict_page

pytestmark = pytest.mark.django_db

PAGES = {"/providers/": "providers", "/apps/": "apps"}


@pytest.fixture
def browser_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("path", PAGES)
def test_signed_out_you_are_sent_to_sign_in(client, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


@pytest.mark.parametrize(("path", "page"), PAGES.items())
def test_the_page_loads_its_script_with_a_strict_policy(browser_client, path, page):
    response = browser_client.get(path)

    assert_strict_page(response)
    assert f'data-page="{page}"'.encode() in response.content
    assert b"console/main.js" in response.content
    assert b"console/admin-pages.css" in response.content


def test_every_page_links_to_providers_and_apps_marking_the_current_one(browser_client):
    workflows = browser_client.get("/").content.decode()
    assert 'href="/providers/"' in workflows
    assert 'href="/apps/"' in workflows

    providers = browser_client.get("/providers/").content.decode()
    assert 'href="/providers/" aria-current="page"' in providers
    assert 'href="/apps/" aria-current="page"' not in providers


def test_no_key_or_secret_is_ever_in_the_pages(browser_client, user):
    LLMProviderFactory(owner=user, api_key=CANARY_KEY)
    app = AppFactory(owner=user)

    for path in PAGES:
        body = browser_client.get(path).content.decode()
        assert CANARY_KEY not in body
        assert app.api_secret not in body


def test_the_provider_form_sends_the_key_as_a_password_field(browser_client):
    body = browser_client.get("/providers/").content.decode()

    assert 'name="api_key" type="password"' in body
