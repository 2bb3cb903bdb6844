"""Canary secrets written through the API and the admin never come back out.

An LLM provider key and an app secret, each written through the API and through the admin, and a
tool's Authorization header written through the API, are
then looked for in the answer of every GET operation of the OpenAPI schema (with real ids filled
in), in every admin page of every registered model (changelist, add, change, delete, history),
in error bodies, and in every log record. The only place a secret may appear is the one answer
that hands it out: an app's create (or rotate) response, or the admin page that answers it.
"""

import logging
import re
import secrets

import pytest
from django.contrib import admin
from django.test import Client, RequestFactory
from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from tests.factories import (
    AgentFactory,
    LicenseFactory,
    MessageFactory,
    RunFactory,
    ScheduledWorkflowFactory,
    SessionFactory,
    SessionWorkflowFactory,
    TaskFactory,
    ToolFactory,
    WorkflowFactory,
    WorkflowMemberFactory,
    WorkflowTemplateFactory,
    WorkflowVersionFactory,
)
from workflows.execution.large_outputs import OutputStore

# Admin pages rendered for up to this many rows of each model.
ADMIN_ROWS_PER_MODEL = 3
SECRET_SHOWN_ONCE = re.compile(r"shown only this once, is: (\S+)")


def canary(kind: str) -> str:
    return f"canary-{kind}-{secrets.token_hex(16)}"


def body_of(response) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return response.content


def assert_no_canary(canaries: list[str], text: str, where: str) -> None:
    for secret in canaries:
        assert secret not in text, f"a secret appeared in {where}"


def results_of(payload) -> list[dict]:
    if isinstance(payload, dict) and isinstance(payload.get("results"), list):
        payload = payload["results"]
    return [item for item in payload if isinstance(item, dict)] if isinstance(payload, list) else []


# Path parameters that are not named after the field that fills them.
PARAM_FIELDS = {"version": ("version", "sequence_number")}


def id_for(item: dict, param: str):
    """The value of an item that fills the path parameter ``param``."""
    for key in (*PARAM_FIELDS.get(param, (param,)), param.removesuffix("_id"), "id", "pk"):
        if key in item and item[key] is not None:
            value = item[key]
            return value["id"] if isinstance(value, dict) else value
    return None


class ApiSweep:
    """GETs every GET operation of the schema, filling path parameters with ids from the lists.

    ``clients`` maps a path prefix to the client that calls it (the longest prefix wins), and
    ``known_ids`` a collection path to the ids to use where there is no list to take them from.
    """

    def __init__(self, clients: dict[str, object], known_ids: dict[str, list]):
        self.clients = clients
        self.known_ids = known_ids
        self.bodies: dict[str, bytes] = {}
        self.statuses: dict[str, int] = {}

    def client_for(self, path: str):
        return self.clients[max((prefix for prefix in self.clients if path.startswith(prefix)), key=len)]

    def get(self, path: str) -> bytes:
        if path not in self.bodies:
            response = self.client_for(path).get(path, HTTP_ACCEPT="application/json")
            assert response.status_code < 500, f"GET {path} answered {response.status_code}"
            self.bodies[path] = body_of(response)
            self.statuses[path] = response.status_code
        return self.bodies[path]

    def expand(self, template: str) -> list[str]:
        """Every concrete path for ``template``: for each parameter, left to right, up to 3 ids."""
        match = re.search(r"\{(\w+)\}", template)
        if match is None:
            return [template]
        collection = template[: match.start()]
        if collection in self.known_ids:
            values = self.known_ids[collection]
        else:
            response = self.client_for(collection).get(collection, HTTP_ACCEPT="application/json")
            values = []
            if response.status_code == 200 and response.get("Content-Type", "").startswith("application/json"):
                values = [id_for(item, match.group(1)) for item in results_of(response.json())]
        paths = []
        for value in [value for value in values if value is not None][:3]:
            paths.extend(self.expand(f"{collection}{value}{template[match.end() :]}"))
        return paths


@pytest.fixture
def admin_client(staff_user):
    client = Client()
    client.force_login(staff_user)
    return client


def own_rows_of_every_kind(user, other_user) -> None:
    """At least one row of each kind the API shows, so that detail endpoints have something."""
    workflow = WorkflowFactory(owner=user)
    WorkflowMemberFactory(workflow=workflow, user=other_user, role="viewer")
    run = RunFactory(workflow=workflow)
    TaskFactory(run=run)
    WorkflowVersionFactory(workflow=workflow)
    ScheduledWorkflowFactory(workflow=workflow)
    session = SessionFactory(owner=user)
    MessageFactory(session=session)
    SessionWorkflowFactory(session=session)
    AgentFactory(owner=user)
    ToolFactory(owner=user)
    WorkflowTemplateFactory(owner=user)


@pytest.mark.django_db
def test_canary_secrets_never_appear_in_an_answer_a_page_or_a_log(
    user, other_user, staff_user, user_client, admin_client, caplog
):
    caplog.set_level(logging.DEBUG)
    provider_key, provider_key_rejected, admin_provider_key = canary("key"), canary("bad"), canary("admin-key")

    # --- Written through the API ---
    created = user_client.post(
        "/api/v1/providers/",
        {"name": "Canary", "base_url": "https://llm.example.com/v1", "model": "m", "api_key": provider_key},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["has_api_key"] is True
    provider_id = created.json()["id"]
    rejected = user_client.post(
        "/api/v1/providers/",
        {"name": "", "base_url": "not a url", "model": "m", "api_key": provider_key_rejected, "bogus": 1},
        format="json",
    )
    assert rejected.status_code == 400
    rejected_patch = user_client.patch(
        f"/api/v1/providers/{provider_id}/", {"base_url": "nope", "api_key": provider_key_rejected}, format="json"
    )
    assert rejected_patch.status_code == 400

    tool_token = canary("tool")
    tool = user_client.post(
        "/api/v1/tools/",
        {
            "name": "Canary tool",
            "endpoint": "https://tools.example/crm",
            "visibility": "public",
            "headers": {"Authorization": f"Bearer {tool_token}"},
        },
        format="json",
    )
    assert tool.status_code == 201, tool.content

    trigger_secret = canary("hook")
    alert_secret = canary("alert")
    app = user_client.post("/api/v1/apps/", {"name": "Canary app"}, format="json")
    assert app.status_code == 201, app.content
    app_secret = app.json()["api_secret"]
    assert len(app_secret) >= 20

    # --- Written through the admin ---
    added = admin_client.post(
        reverse("admin:agents_llmprovider_add"),
        {
            "owner": user.pk,
            "name": "Canary via admin",
            "base_url": "https://llm.example.com/v1",
            "model": "m",
            "available_models": "[]",
            "metadata": "{}",
            "new_api_key": admin_provider_key,
        },
    )
    assert added.status_code == 302, added.context["adminform"].form.errors if added.context else added
    rejected_admin = admin_client.post(
        reverse("admin:agents_llmprovider_add"),
        {"owner": user.pk, "name": "", "base_url": "nope", "new_api_key": provider_key_rejected},
    )
    assert rejected_admin.status_code == 200  # the form again, with its errors

    admin_app = admin_client.post(
        reverse("admin:licensing_app_add"),
        {
            "owner": user.pk,
            "name": "Canary app via admin",
            "alias_id": "canary-admin",
            "description": "",
            "status": "enabled",
            "source": "0",
            "actual_source": "0",
            "plat_release_auth": "0",
            "audit_policy": "0",
            "rate_limit_per_minute": "60",
        },
        follow=True,
    )
    shown = SECRET_SHOWN_ONCE.search(admin_app.content.decode())
    assert shown, admin_app.context["adminform"].form.errors if admin_app.context.get("adminform") else admin_app
    admin_app_secret = shown.group(1).rstrip(".")

    canaries = [
        provider_key,
        provider_key_rejected,
        admin_provider_key,
        app_secret,
        admin_app_secret,
        tool_token,
        trigger_secret,
        alert_secret,
    ]
    for response, where in (
        (created, "the provider's create answer"),
        (rejected, "a 400 body"),
        (rejected_patch, "a 400 body of PATCH"),
        (rejected_admin, "the admin's form with errors"),
        (tool, "the tool's create answer"),
    ):
        assert_no_canary(canaries, response.content.decode(), where)
    assert_no_canary([provider_key, admin_provider_key], app.content.decode(), "the app's create answer")

    # --- Everything a user can GET ---
    own_rows_of_every_kind(user, other_user)
    LicenseFactory(app_id=app.json()["id"], group=WorkflowFactory(owner=user))
    schema = SchemaGenerator().get_schema(request=None, public=True)
    get_templates = sorted(path for path, operations in schema["paths"].items() if "get" in operations)
    assert "/api/v1/providers/{id}/" in get_templates
    app_client = APIClient()
    app_client.credentials(HTTP_AUTHORIZATION=f"Bearer {app.json()['api_key']}:{app_secret}")
    app_run = RunFactory(workflow=WorkflowFactory(owner=user), app_id=app.json()["id"], trigger="app")
    # A webhook trigger with a secret, on one of the newest workflows (the sweep reads the first ones).
    trigger = user_client.post(
        f"/api/v1/workflows/{app_run.workflow_id}/triggers/",
        {"name": "Canary hook", "secret": trigger_secret},
        format="json",
    )
    assert trigger.status_code == 201, trigger.content
    assert_no_canary(canaries, trigger.content.decode(), "the trigger's create answer")
    # A failure policy's webhook secret, on the same workflow.
    policy = user_client.put(
        f"/api/v1/workflows/{app_run.workflow_id}/failure-policy/",
        {"webhook_url": "https://hooks.example.com/weft", "webhook_secret": alert_secret},
        format="json",
    )
    assert policy.status_code == 200, policy.content
    assert_no_canary(canaries, policy.content.decode(), "the failure policy's answer")
    # A stored (large) output on the newest run (the first the sweep reads) and on the app's run.
    stored_run = RunFactory(workflow=app_run.workflow)
    stored_keys = {
        run.pk: OutputStore(run_id=run.pk).write(b'{"text": "stored"}')["key"] for run in (stored_run, app_run)
    }
    sweep = ApiSweep(
        clients={"/": user_client, "/api/v1/app/": app_client},
        known_ids={
            "/api/v1/app/runs/": [app_run.id],
            "/api/v1/app/chats/": ["canary-chat"],
            f"/api/v1/runs/{stored_run.pk}/outputs/": [stored_keys[stored_run.pk]],
            f"/api/v1/app/runs/{app_run.pk}/outputs/": [stored_keys[app_run.pk]],
        },
    )
    unfilled = []
    for template in get_templates:
        paths = sweep.expand(template)
        if not paths:
            unfilled.append(template)
        for path in paths:
            assert_no_canary(canaries, sweep.get(path).decode(errors="replace"), f"GET {path}")
    assert f"/api/v1/providers/{provider_id}/" in sweep.bodies
    assert f"/api/v1/runs/{stored_run.pk}/outputs/{stored_keys[stored_run.pk]}/" in sweep.bodies
    assert unfilled == [], "no row to fill these paths with: add one to own_rows_of_every_kind"
    # With real ids every GET answers 200, but for "the version before" of a session with one version.
    missed = {path: code for path, code in sweep.statuses.items() if code != 200 and not path.endswith("/previous/")}
    assert missed == {}

    # --- Every admin page of every registered model ---
    operator_request = RequestFactory().get("/admin/")
    operator_request.user = staff_user
    pages = 0
    for model, model_admin in admin.site._registry.items():
        info = model._meta.app_label, model._meta.model_name
        urls = [reverse("admin:{}_{}_changelist".format(*info))]
        if model_admin.has_add_permission(operator_request):
            urls.append(reverse("admin:{}_{}_add".format(*info)))
        for obj in model._default_manager.all()[:ADMIN_ROWS_PER_MODEL]:
            for view in ("change", "delete", "history"):
                urls.append(reverse(f"admin:{info[0]}_{info[1]}_{view}", args=[obj.pk]))
        for url in urls:
            response = admin_client.get(url)
            assert response.status_code in (200, 302, 403), f"{url} answered {response.status_code}"
            assert_no_canary(canaries, response.content.decode(), f"the admin page {url}")
            pages += 1
    assert pages > 20

    # --- Every log line ---
    for record in caplog.records:
        text = f"{record.getMessage()} {record.exc_text or ''} {record.__dict__!r}"
        assert_no_canary(canaries, text, f"the log record {record.name}: {record.getMessage()[:200]}")
