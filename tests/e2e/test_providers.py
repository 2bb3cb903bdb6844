"""The Providers and Apps pages in headless Chromium against a real server and the suite's
OpenAI-compatible fake: the LLM demo fails naming the provider it lacks, a provider is added,
tested and chosen, and the demo then runs; an app is created with a license, its secret shown once."""

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import DEMO_LINE, STARTUP_TIMEOUT_S, LiveConsole
from tests.fakes.openai_server import FakeOpenAI
from tests.platform.live import daphne, database_migrate, free_port, manage, server_env
from workflows.management.commands.weft_demo import MISSING_PROVIDER

pytestmark = pytest.mark.slow

FAKE_KEY = "sk-e2e-fake-key-never-shown-0123"


@pytest.fixture(scope="module")
def fake_llm() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=FAKE_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def live_console(tmp_path_factory, fake_llm) -> Iterator[LiveConsole]:
    """As tests/e2e/conftest.py's, with the outbound guard letting the server reach the fake."""
    tmp = tmp_path_factory.mktemp("providers")
    env = server_env(
        DATABASE_URL=f"sqlite:///{tmp / 'e2e.sqlite3'}",
        DEBUG="1",
        WEFT_OUTBOUND_ALLOW=f"127.0.0.1:{fake_llm.port}",
    )
    database_migrate(env)
    demo = DEMO_LINE.search(manage("weft_demo", env=env))
    assert demo, "weft_demo printed no password for the demo user"
    port = free_port()
    with daphne(port=port, env=env) as process:
        base_url = f"http://127.0.0.1:{port}"
        process.wait_until_answering(f"{base_url}/login/", timeout=STARTUP_TIMEOUT_S)
        yield LiveConsole(base_url=base_url, username="demo", password=demo.group(1), slow_url="", process=process)


def run_llm_demo(page, *, provider_missing: bool = False) -> None:
    page.goto("/")
    page.get_by_role("link", name="Trip advice (LLM)", exact=True).click()
    page.wait_for_selector('#graph svg g.node[data-node-id="ask"]')
    if provider_missing:  # the workflow page says so before the run
        notice = page.get_by_test_id("provider-missing")
        notice.wait_for()
        assert "needs an LLM provider you do not have" in notice.inner_text()
    page.fill("#input-city", "Oslo")
    page.fill("#input-temperature", "5")
    page.get_by_test_id("start-run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}/$"))
    page.wait_for_selector('body[data-finished="true"]')


def add_provider(page, *, name: str, base_url: str, api_key: str = "", model: str = "fake-model"):
    page.fill("#provider-name", name)
    page.fill("#provider-base-url", base_url)
    page.fill("#provider-api-key", api_key)
    page.fill("#provider-model", model)
    page.get_by_test_id("add-provider").click()
    row = page.locator(f'#provider-table tr[data-provider-name="{name}"]')
    row.wait_for()
    return row


def test_the_llm_demo_runs_once_a_provider_is_added_tested_and_chosen(open_page, fake_llm, screenshot):
    page = open_page().page

    # Without a provider the run fails, and the run page says which one is missing and where to add it.
    run_llm_demo(page, provider_missing=True)
    assert page.locator("#run-status").get_attribute("data-status") == "failed"
    notice = page.get_by_test_id("provider-missing")
    assert MISSING_PROVIDER in notice.inner_text()
    screenshot(page, "console-run-provider-missing")
    notice.get_by_test_id("providers-link").click()
    page.wait_for_url(re.compile(r"/providers/\?workflow=[0-9a-f-]{36}$"))
    waiting = page.get_by_test_id("missing-providers")
    waiting.wait_for()
    assert "Trip advice (LLM)" in waiting.inner_text()
    assert "Add a provider below first." in waiting.inner_text()

    # Add one pointing at the fake: the key is sent, and never shown again.
    row = add_provider(page, name="Fake", base_url=fake_llm.base_url, api_key=FAKE_KEY)
    assert page.locator("#provider-api-key").input_value() == ""
    assert "key set" in row.inner_text()
    assert FAKE_KEY not in page.content()
    row.get_by_test_id("test-provider").click()
    page.wait_for_selector('#provider-table [data-testid="test-result"][data-ok="true"]')

    # Point the demo's llm node at it: it is no longer waiting, and the provider lists it as a user.
    waiting.get_by_test_id("use-provider").click()
    waiting.wait_for(state="hidden")
    used_by = page.locator('#provider-table tr[data-provider-name="Fake"] .uses')
    used_by.wait_for()
    assert "Trip advice (LLM)" in used_by.inner_text()
    screenshot(page, "console-providers")

    run_llm_demo(page)
    assert page.locator("#run-status").get_attribute("data-status") == "succeeded"
    card = page.locator('#node-details [data-node-id="ask"]')
    assert "You said: In one sentence" in card.locator(".node-output").text_content()
    assert "Bring a coat to Oslo." in page.locator("#run-outputs").inner_text()
    assert page.get_by_test_id("provider-missing").count() == 0
    assert any(r["path"] == "/v1/chat/completions" for r in fake_llm.requests)


def test_a_refused_address_is_explained_and_a_provider_is_removed_with_two_clicks(open_page):
    page = open_page().page
    page.goto("/providers/")
    row = add_provider(page, name="Private", base_url="http://10.1.2.3/v1")
    assert "no key" in row.inner_text()

    row.get_by_test_id("test-provider").click()
    result = row.get_by_test_id("test-result")
    page.wait_for_selector('tr[data-provider-name="Private"] [data-testid="test-result"][data-ok="false"]')
    assert result.get_attribute("data-code") == "blocked"
    assert "public URL" in result.inner_text()

    remove = row.get_by_test_id("remove-provider")
    remove.click()
    assert row.is_visible()
    remove.click()
    row.wait_for(state="detached")


def test_an_app_is_created_with_a_license_and_its_secret_is_shown_once(open_page, live_console, screenshot):
    page = open_page().page
    page.goto("/apps/")
    page.wait_for_selector('#app-workflow option:text-is("Trip advice")', state="attached")
    page.fill("#app-name", "Trip site")
    page.select_option("#app-workflow", label="Trip advice")
    page.get_by_test_id("create-app").click()

    box = page.get_by_test_id("secret-once")
    box.wait_for()
    key = page.get_by_test_id("secret-key").inner_text()
    secret = page.get_by_test_id("secret-value").inner_text()
    assert key
    assert len(secret) >= 20
    card = page.locator('#app-list [data-app-name="Trip site"]')
    page.wait_for_selector('#app-list [data-app-name="Trip site"] li[data-status="enabled"]')
    assert "Trip advice" in card.inner_text()
    assert secret not in card.inner_text()
    screenshot(page, "console-apps-secret-once")

    page.get_by_test_id("secret-dismiss").click()
    assert box.is_hidden()
    assert secret not in page.content()
    page.reload()
    page.wait_for_selector('#app-list [data-app-name="Trip site"]')
    assert secret not in page.content()
    assert key in page.locator('#app-list [data-app-name="Trip site"] [data-testid="app-key"]').inner_text()

    # The pair works, and the license lets the app at the workflow: it only lacks a released version.
    workflow_id = card.locator("li a").get_attribute("href").strip("/").rsplit("/", 1)[1]
    url = f"{live_console.base_url}/api/v1/app/workflows/{workflow_id}/runs/"
    answer = httpx.post(url, json={"inputs": {}}, headers={"Authorization": f"Bearer {key}:{secret}"}, timeout=10)
    assert answer.status_code == 404, answer.text
    assert "released" in answer.json()["detail"]
    wrong = httpx.post(url, json={"inputs": {}}, headers={"Authorization": f"Bearer {key}:wrong"}, timeout=10)
    assert wrong.status_code in (401, 403)

    # Turned off, the license no longer lets the app in.
    card.get_by_test_id("toggle-license").click()
    page.wait_for_selector('#app-list [data-app-name="Trip site"] li[data-status="disabled"]')
    refused = httpx.post(url, json={"inputs": {}}, headers={"Authorization": f"Bearer {key}:{secret}"}, timeout=10)
    assert refused.status_code == 403, refused.text


@pytest.mark.parametrize("path", ["/providers/", "/apps/"])
def test_the_pages_fit_a_phone(open_page, path):
    page = open_page(width=420, height=860, mobile=True).page
    page.goto(path)
    page.wait_for_load_state("networkidle")
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
