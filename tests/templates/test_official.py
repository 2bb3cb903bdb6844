"""The official templates: shipped by a migration, valid, and each one runs end to end.

Every official template is instantiated through the API and run in the embedded engine against
the fake OpenAI server (and a loopback web page for the URL summary); the provider is the
``provider`` start input, one of the user's providers.
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from templates.models import WorkflowTemplate
from templates.official import official_templates, official_templates_load
from tests.factories import LLMProviderFactory
from tests.fakes.openai_server import Answer
from workflows.engine import validate_graph

OFFICIAL_IDS = {
    "summarise-url": "3f0c6a2e-5d1b-4c8e-9a51-0b7e2f6d1a01",
    "support-triage": "3f0c6a2e-5d1b-4c8e-9a51-0b7e2f6d1a02",
    "translate-with-glossary": "3f0c6a2e-5d1b-4c8e-9a51-0b7e2f6d1a03",
    "extract-json": "3f0c6a2e-5d1b-4c8e-9a51-0b7e2f6d1a04",
    "research-list": "3f0c6a2e-5d1b-4c8e-9a51-0b7e2f6d1a05",
}

PAGE = b"""<!doctype html><html><head><title>Sea otters &amp; kelp</title>
<style>body { color: red }</style><script>var tracking = "do not read me";</script></head>
<body><h1>Sea otters</h1><p>Sea otters keep kelp forests alive by eating urchins.</p></body></html>"""


@pytest.fixture
def web_page():
    """A loopback web server answering PAGE at /otters."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            return

        def do_GET(self):
            status, body = (200, PAGE) if self.path == "/otters" else (404, b"not found")
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def embedded(settings):
    """Runs execute in this process (the embedded engine), whether or not REDIS_URL is set."""
    settings.EMBEDDED = True


@pytest.fixture
def official(db):
    """The official templates as the migration leaves them (a transactional test's flush removes them)."""
    official_templates_load(template_model=WorkflowTemplate)
    return {slug: WorkflowTemplate.objects.get(pk=pk) for slug, pk in OFFICIAL_IDS.items()}


@pytest.fixture
def provider(user, fake_openai, allow_loopback):
    return LLMProviderFactory(owner=user, base_url=fake_openai.base_url, api_key=fake_openai.api_key)


def instantiate_and_run(client, template: WorkflowTemplate, inputs: dict) -> dict:
    response = client.post(f"/api/v1/templates/{template.pk}/instantiate/", {}, format="json")
    assert response.status_code == 201, response.content
    workflow = response.json()
    assert workflow["source_template"] == str(template.pk)
    response = client.post(f"/api/v1/workflows/{workflow['id']}/runs/", {"inputs": inputs, "wait": True})
    assert response.status_code == 200, response.content
    run = response.json()
    assert run["status"] == "succeeded", run["error"]
    return run


@pytest.mark.django_db
def test_the_migration_ships_five_public_official_templates_without_owner():
    shipped = WorkflowTemplate.objects.filter(is_official=True)
    assert {str(pk) for pk in shipped.values_list("pk", flat=True)} >= set(OFFICIAL_IDS.values())
    for template in shipped.filter(pk__in=OFFICIAL_IDS.values()):
        assert (template.owner, template.is_public) == (None, True)
        assert template.name
        assert template.description
        assert template.category


def test_every_official_template_is_a_valid_graph_with_a_provider_input():
    documents = official_templates()
    assert {document["id"] for document in documents} == set(OFFICIAL_IDS.values())
    for document in documents:
        graph = document["template_data"]
        assert validate_graph(graph) == [], document["name"]
        start = next(node for node in graph["nodes"] if node["type"] == "start")
        inputs = {spec["name"]: spec for spec in start["config"]["inputs"]}
        assert inputs["provider"]["required"] is True, document["name"]


@pytest.mark.django_db
def test_loading_again_updates_the_same_rows(official):
    WorkflowTemplate.objects.filter(pk=official["extract-json"].pk).update(name="edited by hand", is_public=False)
    assert official_templates_load(template_model=WorkflowTemplate) == len(OFFICIAL_IDS)
    template = WorkflowTemplate.objects.get(pk=official["extract-json"].pk)
    assert (template.name, template.is_public) == ("Extract JSON from text", True)
    assert WorkflowTemplate.objects.filter(is_official=True, pk__in=OFFICIAL_IDS.values()).count() == 5


@pytest.mark.django_db
def test_the_official_list_shows_them(user_client, official):
    response = user_client.get("/api/v1/templates/", {"kind": "official"})
    assert response.status_code == 200
    names = {row["name"] for row in response.json()["results"]}
    assert {template.name for template in official.values()} <= names


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("embedded")
def test_summarise_a_web_page(user_client, official, provider, fake_openai, web_page):
    fake_openai.script(Answer(text="Sea otters protect kelp forests by eating urchins."))
    run = instantiate_and_run(
        user_client, official["summarise-url"], {"provider": str(provider.pk), "url": f"{web_page}/otters"}
    )
    assert run["outputs"] == {
        "summary": "Sea otters protect kelp forests by eating urchins.",
        "title": "Sea otters & kelp",
        "url": f"{web_page}/otters",
    }
    prompt = fake_openai.requests[-1]["json"]["messages"][-1]["content"]
    assert "Sea otters keep kelp forests alive by eating urchins." in prompt
    assert "at most 120 words" in prompt
    assert "do not read me" not in prompt
    assert "<p>" not in prompt


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("embedded")
def test_triage_routes_a_billing_message_to_the_billing_reply(user_client, official, provider, fake_openai):
    fake_openai.script(Answer(text="Billing"), Answer(text="Sorry about the double charge; we have refunded it."))
    message = "I was charged twice for March."
    run = instantiate_and_run(
        user_client, official["support-triage"], {"provider": str(provider.pk), "message": message}
    )
    assert run["outputs"] == {"category": "billing", "reply": "Sorry about the double charge; we have refunded it."}
    statuses = {task["node_id"]: task["status"] for task in run["tasks"]}
    assert statuses["billing_reply"] == "succeeded"
    assert statuses["technical_reply"] == statuses["handoff"] == "skipped"
    reply_request = fake_openai.requests[-1]["json"]["messages"]
    assert "billing team" in reply_request[0]["content"]
    assert reply_request[-1]["content"] == message


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("embedded")
def test_triage_hands_anything_else_to_a_person(user_client, official, provider, fake_openai):
    fake_openai.script(Answer(text="other"))
    run = instantiate_and_run(
        user_client, official["support-triage"], {"provider": str(provider.pk), "message": "Do you sell gift cards?"}
    )
    assert run["outputs"]["category"] == "else"
    assert run["outputs"]["reply"].startswith("Thank you for your message.")
    assert len(fake_openai.requests) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("embedded")
def test_translate_with_a_glossary(user_client, official, provider, fake_openai):
    fake_openai.script(Answer(text=" Ouvrez le tableau de bord Weft. \n"))
    inputs = {
        "provider": str(provider.pk),
        "text": "Open the Weft dashboard.",
        "glossary": {"dashboard": "tableau de bord", "Weft": "Weft"},
    }
    run = instantiate_and_run(user_client, official["translate-with-glossary"], inputs)
    assert run["outputs"] == {"translation": "Ouvrez le tableau de bord Weft.", "language": "French"}
    system, user_message = fake_openai.requests[-1]["json"]["messages"]
    assert "into French" in system["content"]
    assert "- dashboard → tableau de bord\n" in system["content"]
    assert user_message == {"role": "user", "content": "Open the Weft dashboard."}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("embedded")
def test_extract_json_from_text(user_client, official, provider, fake_openai):
    answer = 'Here it is:\n```json\n{"name": "Ada Lovelace", "email": "ada@example.com", "company": null}\n```'
    fake_openai.script(Answer(text=answer))
    text = "Hi, I'm Ada Lovelace (ada@example.com), writing about the engine."
    run = instantiate_and_run(user_client, official["extract-json"], {"provider": str(provider.pk), "text": text})
    assert run["outputs"] == {
        "data": {"name": "Ada Lovelace", "email": "ada@example.com", "company": None},
        "missing": ["company"],
    }
    assert "name, email, company" in fake_openai.requests[-1]["json"]["messages"][0]["content"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("embedded")
def test_research_a_list_of_topics(user_client, official, provider, fake_openai):
    topics = ["Rust", "Go", "Zig"]
    # Unscripted, the fake answers each request with the prompt it was sent.
    run = instantiate_and_run(user_client, official["research-list"], {"provider": str(provider.pk), "topics": topics})
    findings = run["outputs"]["findings"]
    assert [finding["topic"] for finding in findings] == topics
    for finding in findings:
        assert finding["notes"].startswith(f"You said: Topic: {finding['topic']}\n")
    assert run["outputs"]["notes"].startswith("## Rust\nYou said: Topic: Rust")
    assert run["outputs"]["report"].startswith("You said: Question: Give a three-sentence overview")
    assert all(f"## {topic}" in run["outputs"]["report"] for topic in topics)
    assert len(fake_openai.requests) == len(topics) + 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("embedded", "allow_loopback")
def test_another_users_provider_is_refused(user_client, official, other_user, fake_openai):
    """The provider input must be one of the runner's own providers: the llm node refuses any other."""
    someone_elses = LLMProviderFactory(owner=other_user, base_url=fake_openai.base_url, api_key=fake_openai.api_key)
    response = user_client.post(f"/api/v1/templates/{official['translate-with-glossary'].pk}/instantiate/", {})
    inputs = {"provider": str(someone_elses.pk), "text": "Hi"}
    response = user_client.post(f"/api/v1/workflows/{response.json()['id']}/runs/", {"inputs": inputs, "wait": True})
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "failed"
    assert "No LLM provider" in response.json()["error"]
    assert fake_openai.requests == []
