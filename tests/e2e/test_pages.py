"""The console's pages without a browser: signed out they send you to sign in; another user's
workflow or run is a 404; the run page carries the graph the run was started with."""

import json

import pytest
from django.test import Client

from tests.factories import RunFactory, WorkflowFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("path", ["/", "/templates/"])
def test_signed_out_you_are_sent_to_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


def test_the_login_page_signs_you_in_and_sends_you_to_the_workflows(client, user):
    user.set_password("a long passphrase")
    user.save()
    assert client.get("/login/").status_code == 200
    response = client.post("/login/", {"username": user.username, "password": "a long passphrase"})
    assert response.status_code == 302
    assert response["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert b'data-page="workflows"' in page.content
    assert b"console/main.js" in page.content


def test_a_wrong_password_is_refused_with_a_message(client, user):
    response = client.post("/login/", {"username": user.username, "password": "wrong"})
    assert response.status_code == 200
    assert b"did not match" in response.content


def test_your_workflow_page_names_it_and_anothers_is_a_404(browser_client, user, other_user):
    mine = WorkflowFactory(owner=user, name="Mine & <b>yours</b>")
    theirs = WorkflowFactory(owner=other_user)
    response = browser_client.get(f"/workflows/{mine.pk}/")
    assert response.status_code == 200
    assert f'data-workflow="{mine.pk}"'.encode() in response.content
    assert b"Mine &amp; &lt;b&gt;yours&lt;/b&gt;" in response.content
    assert browser_client.get(f"/workflows/{theirs.pk}/").status_code == 404


def test_the_run_page_carries_the_runs_own_graph_and_anothers_run_is_a_404(browser_client, user, other_user):
    run = RunFactory(workflow=WorkflowFactory(owner=user))
    response = browser_client.get(f"/runs/{run.pk}/")
    assert response.status_code == 200
    script = response.content.decode().split('<script id="run-graph" type="application/json">')[1]
    assert json.loads(script.split("</script>")[0]) == run.graph
    assert browser_client.get(f"/runs/{RunFactory(workflow=WorkflowFactory(owner=other_user)).pk}/").status_code == 404


def test_signing_out_ends_the_session(browser_client):
    assert browser_client.post("/logout/").status_code == 302
    assert browser_client.get("/").status_code == 302


@pytest.mark.parametrize(
    ("path", "template"),
    [("/", "console/workflows.html"), ("/templates/", "console/templates.html")],
)
def test_each_page_has_its_own_template_on_the_base(browser_client, path, template):
    response = browser_client.get(path)
    assert [used.name for used in response.templates][:2] == [template, "console/base.html"]


def test_the_workflow_page_names_the_dsl_schema_that_the_console_serves(browser_client, user):
    from workflows.engine import dsl_schema

    workflow = WorkflowFactory(owner=user)
    page = browser_client.get(f"/workflows/{workflow.pk}/")
    assert page.templates[0].name == "console/workflow.html"
    assert b'data-dsl-schema="/dsl/v1.schema.json"' in page.content
    response = Client().get("/dsl/v1.schema.json")
    assert response.status_code == 200
    assert response.json() == dsl_schema()
