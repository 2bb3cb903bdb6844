"""The workflow page's Triggers and "When a run fails" panels in headless Chromium against a real
server: a webhook trigger is made (its URL shown once), called, switched off and rotated; a
failure policy is saved, kept across a reload, and a bad field's 400 is shown next to that field."""

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import DEMO_LINE, STARTUP_TIMEOUT_S, LiveConsole
from tests.platform.live import daphne, database_migrate, free_port, manage, server_env

pytestmark = pytest.mark.slow

VIEWER = ("e2e-viewer", "viewer-password-0123-e2e")
CREATE_VIEWER = (
    "from django.contrib.auth import get_user_model; "
    f"get_user_model().objects.create_user({VIEWER[0]!r}, password={VIEWER[1]!r})"
)


@pytest.fixture(scope="module")
def live_console(tmp_path_factory) -> Iterator[LiveConsole]:
    """As tests/e2e/conftest.py's, with a second user (no workflow of their own) to share one with."""
    tmp = tmp_path_factory.mktemp("triggers")
    env = server_env(DATABASE_URL=f"sqlite:///{tmp / 'e2e.sqlite3'}", DEBUG="1")
    database_migrate(env)
    demo = DEMO_LINE.search(manage("weft_demo", env=env))
    assert demo, "weft_demo printed no password for the demo user"
    manage("shell", "-c", CREATE_VIEWER, env=env)
    port = free_port()
    with daphne(port=port, env=env) as process:
        base_url = f"http://127.0.0.1:{port}"
        process.wait_until_answering(f"{base_url}/login/", timeout=STARTUP_TIMEOUT_S)
        yield LiveConsole(base_url=base_url, username="demo", password=demo.group(1), slow_url="", process=process)


# fetch() from the signed-in page: the session cookie and the page's CSRF token, as the console's own calls.
API_FROM_PAGE = """async ([method, path, body]) => {
  const response = await fetch(`/api/v1/${path}`, {
    method,
    headers: {
      "Content-Type": "application/json",
      "X-CSRFToken": document.querySelector('meta[name="csrf-token"]').content,
    },
    body: body === null ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}"""

ERROR_WORKFLOW = {
    "name": "On failure (e2e)",
    "description": "Started when a run of another workflow fails.",
    "graph": {
        "nodes": [
            {
                "id": "start",
                "type": "start",
                "name": "Start",
                "config": {"inputs": [{"name": "failure", "type": "object", "required": True}]},
            },
            {"id": "end", "type": "end", "name": "End", "config": {"outputs": {"run": "{{ start.failure }}"}}},
        ],
        "edges": [{"source": "start", "target": "end"}],
    },
}

# Which of the two panels is wider than the window or than itself (and whether the page is).
PANELS_OVERFLOW = """() => ["#triggers-panel", "#failure-panel"].filter((selector) => {
  const panel = document.querySelector(selector);
  return panel.getBoundingClientRect().right > window.innerWidth + 0.5 || panel.scrollWidth > panel.clientWidth;
}).concat(document.documentElement.scrollWidth > window.innerWidth + 1 ? ["the page"] : [])"""


def call_hook(url: str) -> int:
    return httpx.post(url, json={"name": "Ada"}, timeout=10).status_code


def open_greeting(page) -> None:
    page.goto("/")
    page.get_by_role("link", name="Greeting", exact=True).click()
    page.wait_for_url(re.compile(r"/workflows/[0-9a-f-]{36}/$"))
    page.wait_for_selector("#trigger-list li")
    page.wait_for_selector("#delivery-table tbody tr")


def test_webhook_trigger_and_failure_policy_from_the_workflow_page(open_page, screenshot):
    watched = open_page()
    page = watched.page
    page.goto("/")
    created = page.evaluate(API_FROM_PAGE, ["POST", "workflows/", ERROR_WORKFLOW])
    assert created["status"] == 201, created
    error_workflow = created["body"]["id"]

    open_greeting(page)
    page.wait_for_selector("#trigger-form:not([hidden])")

    # The workflow's runs come out as CSV from a link of the Runs panel (the signed-in session).
    exported = page.request.get(page.get_by_test_id("export-csv").get_attribute("href"))
    assert exported.status == 200
    assert exported.text().splitlines()[0].startswith("id,workflow,status,trigger")

    # A webhook: its URL shown once, with a Copy button and a dismiss.
    page.fill("#trigger-name", "e2e hook")
    page.select_option("#trigger-version", "draft")
    page.get_by_test_id("add-trigger").click()
    once = page.get_by_test_id("trigger-once")
    once.wait_for()
    url = page.get_by_test_id("trigger-once-url").inner_text()
    assert re.search(r"/api/v1/hooks/[^/]+/$", url), url
    item = page.locator("#trigger-list li", has_text="e2e hook")
    item.wait_for()
    assert item.get_attribute("data-enabled") == "true"

    # At 420 px the panels, the long URL included, stay within the window.
    page.set_viewport_size({"width": 420, "height": 900})
    assert page.evaluate(PANELS_OVERFLOW) == []
    screenshot(page, "triggers-panel-narrow")
    page.set_viewport_size({"width": 1280, "height": 900})

    page.get_by_test_id("trigger-once-dismiss").click()
    once.wait_for(state="hidden")
    token = url.rstrip("/").rsplit("/", 1)[1]
    assert token not in page.content()

    assert call_hook(url) == 202

    # Switched off, the URL answers 403.
    item.get_by_test_id("trigger-toggle").click()
    page.locator('#trigger-list li[data-enabled="false"]', has_text="e2e hook").wait_for()
    assert call_hook(url) == 403

    # Rotated (a second click confirms): a new URL shown once, the old one gone.
    rotate = page.locator("#trigger-list li", has_text="e2e hook").get_by_test_id("trigger-rotate")
    rotate.click()
    rotate.click()
    once.wait_for()
    new_url = page.get_by_test_id("trigger-once-url").inner_text()
    assert new_url != url
    assert "/api/v1/hooks/" in new_url
    page.get_by_test_id("trigger-once-dismiss").click()
    assert call_hook(url) == 404
    assert call_hook(new_url) == 403  # still switched off

    # The failure policy: a short webhook secret is refused, next to its field.
    page.check("#failure-enabled")
    page.check("#failure-on-failed")
    page.select_option("#failure-error-workflow", error_workflow)
    page.fill("#failure-webhook-url", "https://example.com/weft-hook")
    page.fill("#failure-emails", "ops@example.com, Second@Example.com")
    page.fill("#failure-webhook-secret", "too-short")
    page.get_by_test_id("save-failure-policy").click()
    secret_error = page.locator('#failure-form [data-field="webhook_secret"]')
    secret_error.wait_for()
    assert "16" in secret_error.inner_text()
    assert page.locator('#failure-form [data-field="emails"]').is_hidden()
    # The browser logs that refused PUT; it was meant.
    assert len([e for e in watched.errors if "status of 400" in e]) == 1
    watched.errors[:] = [e for e in watched.errors if "status of 400" not in e]

    page.fill("#failure-webhook-secret", "a-long-enough-webhook-secret")
    page.get_by_test_id("save-failure-policy").click()
    page.wait_for_selector("#failure-status:has-text('Saved')")
    assert secret_error.is_hidden()

    # A schedule of this workflow is listed in the same panel, and paused and resumed there.
    workflow_id = page.url.rstrip("/").rsplit("/", 1)[1]
    schedule = {"workflow": workflow_id, "name": "nightly", "cron": "0 3 * * *", "inputs": {"name": "Ada"}}
    made = page.evaluate(API_FROM_PAGE, ["POST", "schedules/", schedule])
    assert made["status"] == 201, made

    # Kept across a reload; the secret never comes back, only that one is set.
    page.reload()
    page.wait_for_selector("#failure-secret-state:has-text('set')")
    assert page.input_value("#failure-error-workflow") == error_workflow
    assert page.input_value("#failure-emails") == "ops@example.com, second@example.com"
    assert page.input_value("#failure-webhook-url") == "https://example.com/weft-hook"
    assert page.input_value("#failure-webhook-secret") == ""
    assert page.is_checked("#failure-enabled")
    assert page.is_checked("#failure-on-failed")
    assert not page.is_checked("#failure-on-succeeded")
    # The trigger is listed (switched off), its token never.
    page.locator('#trigger-list li[data-enabled="false"]', has_text="e2e hook").wait_for()
    assert new_url.rstrip("/").rsplit("/", 1)[1] not in page.content()

    item = page.locator(f'#schedule-list li[data-schedule-id="{made["body"]["id"]}"]')
    assert "0 3 * * *" in item.inner_text()
    item.get_by_test_id("schedule-toggle").click()
    item.locator(".badge", has_text="paused").wait_for()
    item = page.locator(f'#schedule-list li[data-schedule-id="{made["body"]["id"]}"]')
    item.get_by_test_id("schedule-toggle").click()
    item.locator(".badge", has_text="active").wait_for()


def test_a_viewer_sees_the_panels_read_only(open_page, browser, live_console):
    owner = open_page().page
    open_greeting(owner)
    workflow_id = owner.url.rstrip("/").rsplit("/", 1)[1]
    shared = owner.evaluate(
        API_FROM_PAGE, ["POST", f"workflows/{workflow_id}/members/", {"user": VIEWER[0], "role": "viewer"}]
    )
    assert shared["status"] == 201, shared

    context = browser.new_context(base_url=live_console.base_url)
    context.set_default_timeout(15_000)
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto("/login/")
        page.fill('input[name="username"]', VIEWER[0])
        page.fill('input[name="password"]', VIEWER[1])
        page.click('button[type="submit"]')
        page.wait_for_url(f"{live_console.base_url}/")
        page.goto(f"/workflows/{workflow_id}/")
        page.wait_for_selector("#failure-readonly:not([hidden])")
        page.wait_for_selector("#trigger-list li:has-text('owner and editors')")
        assert page.locator("#trigger-form").is_hidden()
        assert page.locator("#trigger-list button").count() == 0
        assert page.locator('[data-testid="save-failure-policy"]').is_hidden()
        assert page.locator("#failure-enabled").is_disabled()
        assert page.locator("#failure-emails").is_disabled()
        page.wait_for_selector("#delivery-table tbody tr")
        assert errors == []
    finally:
        context.close()
