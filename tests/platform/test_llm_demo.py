"""The LLM demo through the API: it fails naming the provider it lacks, then runs once given one."""

from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import User
from workflows.management.commands.weft_demo import MISSING_PROVIDER
from workflows.models import Workflow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("allow_loopback")]

INPUTS = {"city": "Oslo", "temperature": 5}


@pytest.fixture
def demo(settings, client_for):
    settings.DEBUG = True
    # Runs in this process's run loop, as under `make run`, whatever Redis the suite has.
    settings.EMBEDDED = True
    call_command("weft_demo", stdout=StringIO())
    user = User.objects.get(username="demo")
    return client_for(user), Workflow.objects.get(owner=user, name="Trip advice (LLM)")


def run(client, workflow) -> dict:
    response = client.post(f"/api/v1/workflows/{workflow.pk}/runs/", {"inputs": INPUTS, "wait": True}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_without_a_provider_the_run_fails_naming_the_missing_provider(demo):
    client, workflow = demo

    body = run(client, workflow)

    assert body["status"] == "failed"
    ask = next(task for task in body["tasks"] if task["node_id"] == "ask")
    assert ask["status"] == "failed"
    assert MISSING_PROVIDER in ask["error"]
    assert "provider" in ask["error"].lower()


def test_given_a_provider_the_llm_demo_succeeds(demo, fake_openai):
    client, workflow = demo
    created = client.post(
        "/api/v1/providers/",
        {"name": "Fake", "base_url": fake_openai.base_url, "api_key": fake_openai.api_key, "model": "fake-model"},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert client.post(f"/api/v1/providers/{created.json()['id']}/test/").json()["ok"] is True
    graph = client.get(f"/api/v1/workflows/{workflow.pk}/").json()["graph"]
    for node in graph["nodes"]:
        if node["type"] == "llm":
            node["config"]["provider"] = created.json()["id"]
    assert client.patch(f"/api/v1/workflows/{workflow.pk}/", {"graph": graph}, format="json").status_code == 200

    body = run(client, workflow)

    assert body["status"] == "succeeded", body
    assert body["outputs"]["summary"] == "Oslo: 5 degrees."
    assert body["outputs"]["advice"] == (
        "You said: In one sentence, advise a traveller. Facts: Oslo: 5 degrees. Advice: Bring a coat to Oslo."
    )
