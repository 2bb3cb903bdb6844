"""Every HTML page carries a Content-Security-Policy that runs scripts from this origin only, and
runs no inline script without the request's nonce; the API docs load nothing from other origins."""

import re
from html.parser import HTMLParser

import pytest
from django.test import Client
from drf_spectacular.settings import spectacular_settings

from tests.factories import RunFactory, WorkflowFactory

pytestmark = pytest.mark.django_db

EXECUTABLE_TYPES = {"", "text/javascript", "module", "application/javascript"}


class _Assets(HTMLParser):
    """The URLs a page loads (scripts, styles, icons, images) and its inline scripts' nonces."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.inline_script_nonces: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            if attrs.get("src"):
                self.urls.append(attrs["src"])
            elif (attrs.get("type") or "").lower() in EXECUTABLE_TYPES:
                self.inline_script_nonces.append(attrs.get("nonce"))
        elif tag in ("link", "img", "iframe", "source") and (attrs.get("href") or attrs.get("src")):
            self.urls.append(attrs.get("href") or attrs.get("src"))


def _directives(header: str) -> dict[str, list[str]]:
    parts = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in parts}


def _same_origin(url: str) -> bool:
    return url.startswith("data:") or (url.startswith("/") and not url.startswith("//"))


def assert_strict_page(response) -> _Assets:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    policy = _directives(response["Content-Security-Policy"])
    script_src = policy["script-src"]
    assert "'self'" in script_src
    assert "'unsafe-inline'" not in script_src
    assert "'unsafe-eval'" not in script_src
    # Nothing but this origin and this answer's nonce.
    assert all(value == "'self'" or re.fullmatch(r"'nonce-[A-Za-z0-9+/=]+'", value) for value in script_src)
    assert policy["object-src"] == ["'none'"]
    assets = _Assets()
    assets.feed(response.content.decode())
    assert [url for url in assets.urls if not _same_origin(url)] == []
    for nonce in assets.inline_script_nonces:
        assert f"'nonce-{nonce}'" in script_src
    return assets


@pytest.fixture
def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff(staff_user) -> Client:
    client = Client()
    client.force_login(staff_user)
    return client


@pytest.mark.parametrize("path", ["/login/", "/admin/login/", "/api/docs/", "/api/redoc/"])
def test_pages_anyone_sees_allow_only_this_origins_scripts(client, path):
    assert_strict_page(client.get(path))


def test_console_pages_allow_only_this_origins_scripts(signed_in, user):
    run = RunFactory(workflow=WorkflowFactory(owner=user))
    for path in ["/", "/templates/", f"/workflows/{run.workflow_id}/", f"/runs/{run.pk}/"]:
        assert_strict_page(signed_in.get(path))


@pytest.mark.parametrize("path", ["/admin/", "/admin/accounts/user/", "/admin/history/usagemetric/"])
def test_admin_pages_allow_only_this_origins_scripts(staff, path):
    assert_strict_page(staff.get(path))


def test_swagger_ui_starts_from_a_script_of_this_origin(client):
    assets = assert_strict_page(client.get("/api/docs/"))
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in assets.urls
    assert assets.inline_script_nonces == []
    start = next(url for url in assets.urls if "script" in url.partition("?")[2])
    script = client.get(start)
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert b"/api/schema/" in script.content


def test_redoc_loads_its_bundle_from_this_origin(client):
    assets = assert_strict_page(client.get("/api/redoc/"))
    assert "/static/drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js" in assets.urls


def test_redoc_settings_run_with_the_nonce(client, monkeypatch):
    monkeypatch.setattr(spectacular_settings, "REDOC_UI_SETTINGS", {"hideDownloadButton": True})
    assets = assert_strict_page(client.get("/api/redoc/"))
    assert len(assets.inline_script_nonces) == 1
