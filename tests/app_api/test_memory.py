"""Chat memory through the app API: an llm node sees the earlier rounds of the same chat_id."""

import pytest

from history.models import WorkflowNodeHistory
from licensing.models import EnabledStatus
from tests.app_api.conftest import bearer, post_json, run_path
from tests.factories import AppFactory, LicenseFactory, LLMProviderFactory
from tests.fakes.openai_server import Answer
from workflows.releases.services import workflow_publish
from workflows.services import workflow_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("allow_loopback")]

OTHER_SECRET = "other-app-secret-1234"


def chat_graph(provider_id: str, **memory) -> dict:
    return {
        "nodes": [
            {"id": "start", "type": "start", "config": {"inputs": [{"name": "question", "type": "string"}]}},
            {
                "id": "ask",
                "type": "llm",
                "config": {
                    "provider": provider_id,
                    "system": "Be brief.",
                    "prompt": "{{ start.question }}",
                    "memory": {"enabled": True, **memory},
                },
            },
            {"id": "end", "type": "end", "config": {"outputs": {"answer": "{{ ask.text }}"}}},
        ],
        "edges": [{"source": "start", "target": "ask"}, {"source": "ask", "target": "end"}],
    }


@pytest.fixture
def chat_workflow(user, app, fake_openai):
    provider = LLMProviderFactory(owner=user, base_url=fake_openai.base_url, api_key=fake_openai.api_key)
    workflow = workflow_create(owner=user, name="Chat", graph=chat_graph(str(provider.pk)))
    workflow_publish(workflow=workflow, version="1.0.0", user=user)
    LicenseFactory(app=app, group=workflow)
    return workflow


def ask(api_client, app, workflow, question: str, chat_id: str, secret=None, uid: str = "") -> dict:
    headers = bearer(app) if secret is None else bearer(app, secret=secret)
    body = {"inputs": {"question": question}, "wait": True, "chat_id": chat_id, "uid": uid}
    response = post_json(api_client, run_path(workflow), body, **headers)
    assert response.status_code == 200, response.content
    return response.json()


def sent_messages(fake_openai) -> list[dict]:
    return fake_openai.requests[-1]["json"]["messages"]


def test_the_third_call_of_a_chat_carries_the_two_earlier_rounds(api_client, app, chat_workflow, fake_openai):
    ask(api_client, app, chat_workflow, "My name is Ada.", "chat-1")
    ask(api_client, app, chat_workflow, "I live in Lyon.", "chat-1")
    third = ask(api_client, app, chat_workflow, "Who am I?", "chat-1")

    assert third["outputs"] == {"answer": "You said: Who am I?"}
    assert sent_messages(fake_openai) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "You said: My name is Ada."},
        {"role": "user", "content": "I live in Lyon."},
        {"role": "assistant", "content": "You said: I live in Lyon."},
        {"role": "user", "content": "Who am I?"},
    ]
    assert WorkflowNodeHistory.objects.filter(chat_id="chat-1", node_id="ask", app=app).count() == 3


def test_another_chat_id_starts_with_no_memory(api_client, app, chat_workflow, fake_openai):
    ask(api_client, app, chat_workflow, "My name is Ada.", "chat-1")

    ask(api_client, app, chat_workflow, "Who am I?", "chat-2")

    assert sent_messages(fake_openai) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who am I?"},
    ]


def test_without_a_chat_id_nothing_is_remembered(api_client, app, chat_workflow, fake_openai):
    ask(api_client, app, chat_workflow, "My name is Ada.", "")
    ask(api_client, app, chat_workflow, "Who am I?", "")

    assert len(sent_messages(fake_openai)) == 2
    assert not WorkflowNodeHistory.objects.exists()


def test_another_app_with_the_same_chat_id_does_not_see_the_rounds(api_client, user, app, chat_workflow, fake_openai):
    other = AppFactory(owner=user, api_secret=OTHER_SECRET)
    LicenseFactory(app=other, group=chat_workflow)
    ask(api_client, app, chat_workflow, "My name is Ada.", "chat-1")

    ask(api_client, other, chat_workflow, "Who am I?", "chat-1", secret=OTHER_SECRET)

    assert len(sent_messages(fake_openai)) == 2


def test_a_failed_llm_call_writes_no_round(api_client, app, chat_workflow, fake_openai):
    ask(api_client, app, chat_workflow, "My name is Ada.", "chat-1")
    fake_openai.script(Answer(status=400, error="bad request"))

    failed = ask(api_client, app, chat_workflow, "Forget this.", "chat-1")
    ask(api_client, app, chat_workflow, "Who am I?", "chat-1")

    assert failed["status"] == "failed"
    assert WorkflowNodeHistory.objects.count() == 2
    assert [m["content"] for m in sent_messages(fake_openai) if m["role"] == "user"] == [
        "My name is Ada.",
        "Who am I?",
    ]


# --- GET /api/v1/app/chats/<chat_id>/history/ ----------------------------------------------------


def history(api_client, app, chat_id: str, secret=None, query: str = ""):
    headers = bearer(app) if secret is None else bearer(app, secret=secret)
    return api_client.get(f"/api/v1/app/chats/{chat_id}/history/{query}", **headers)


def test_the_app_reads_its_chat_history_newest_last(api_client, app, chat_workflow):
    ask(api_client, app, chat_workflow, "One", "chat-1")
    ask(api_client, app, chat_workflow, "Two", "chat-1")
    ask(api_client, app, chat_workflow, "Elsewhere", "chat-2")

    response = history(api_client, app, "chat-1")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert [(r["question"], r["answer"]) for r in body["results"]] == [
        ("One", "You said: One"),
        ("Two", "You said: Two"),
    ]
    assert body["results"][0]["workflow"] == str(chat_workflow.pk)
    assert body["results"][0]["version"] == "1.0.0"
    assert body["results"][0]["node"] == "ask"
    last_page = history(api_client, app, "chat-1", query="?page_size=1&page=last").json()
    assert [r["question"] for r in last_page["results"]] == ["Two"]


def test_another_app_never_reads_the_history_even_with_the_same_chat_id(api_client, user, app, chat_workflow):
    ask(api_client, app, chat_workflow, "Private", "chat-1")
    other = AppFactory(owner=user, api_secret=OTHER_SECRET)
    LicenseFactory(app=other, group=chat_workflow)

    response = history(api_client, other, "chat-1", secret=OTHER_SECRET)

    assert response.status_code == 200
    assert response.json()["count"] == 0


def test_rounds_of_a_workflow_whose_license_is_off_are_hidden(api_client, app, chat_workflow):
    ask(api_client, app, chat_workflow, "One", "chat-1")
    app.licenses.update(status=EnabledStatus.DISABLED)

    assert history(api_client, app, "chat-1").json()["count"] == 0


def test_the_history_needs_app_credentials(api_client, app):
    assert api_client.get("/api/v1/app/chats/chat-1/history/").status_code == 401
    assert history(api_client, app, "chat-1", query="?workflow=not-a-uuid").status_code == 400


def test_two_end_users_sharing_a_chat_id_never_see_each_others_rounds(api_client, app, chat_workflow, fake_openai):
    ask(api_client, app, chat_workflow, "I am Ada.", "shared-chat", uid="ada")
    ask(api_client, app, chat_workflow, "I am Bob.", "shared-chat", uid="bob")

    ask(api_client, app, chat_workflow, "Who am I?", "shared-chat", uid="ada")

    contents = [message["content"] for message in sent_messages(fake_openai)]
    assert "I am Ada." in contents
    assert "I am Bob." not in contents
    assert set(WorkflowNodeHistory.objects.values_list("uid", flat=True)) == {"ada", "bob"}
