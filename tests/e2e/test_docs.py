"""The API docs in headless Chromium under the Content-Security-Policy: Swagger UI and Redoc draw
the API, get nothing from another origin, and log no error (a refused script would be one)."""

import re

import pytest

pytestmark = pytest.mark.slow


def answers_from_elsewhere(watched, base_url: str) -> list[str]:
    """The URLs of other origins that answered the page (a request the policy refused gets no answer)."""
    urls: list[str] = []
    own = (base_url, f"blob:{base_url}")  # Redoc runs its search in a worker made from a blob.
    watched.page.on("response", lambda response: response.url.startswith(own) or urls.append(response.url))
    return urls


def test_swagger_ui_draws_the_api_from_this_origin_only(open_page, live_console):
    watched = open_page()
    elsewhere = answers_from_elsewhere(watched, live_console.base_url)
    watched.page.goto("/api/docs/")
    watched.page.wait_for_selector('.opblock-summary-path[data-path="/api/v1/auth/token/"]')
    assert elsewhere == []


def test_redoc_draws_the_api_from_this_origin_only(open_page, live_console):
    watched = open_page()
    elsewhere = answers_from_elsewhere(watched, live_console.base_url)
    # Redoc's bundle always shows Redocly's logo from Redocly's site: the policy refuses it (and
    # Chromium logs that as an error), the page goes on without it.
    refused = re.compile(r"logo-mini\.svg.*violates .*img-src")
    with watched.page.expect_console_message(lambda message: refused.search(message.text)):
        watched.page.goto("/api/redoc/")
    watched.page.get_by_role("heading", name="Weft API").first.wait_for()
    watched.page.locator("text=/api/v1/auth/token/").first.wait_for()
    assert elsewhere == []
    watched.errors[:] = [error for error in watched.errors if not refused.search(error)]
