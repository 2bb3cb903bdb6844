"""The app API keeps the app, its license and the workflow's release between calls (licensing.access), and
drops them the moment any of them changes: each change below is refused or seen on the very next call."""

import copy

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from config.generations import ACCESS, generation, generation_move
from licensing.access import access_now
from licensing.models import EnabledStatus
from licensing.services import app_rotate_credentials, app_set_status, license_revoke, license_set_status
from tests.app_api.conftest import bearer, post_json, run_path
from tests.factories import SIMPLE_GRAPH
from workflows.models import WorkflowVersion
from workflows.releases.services import flow_withdraw, workflow_publish
from workflows.services import workflow_update

pytestmark = pytest.mark.django_db(transaction=True)

ACCESS_TABLES = ('"ai_app"', '"license"', '"flow"')


def call(api_client, app, workflow, *, secret=None):
    headers = bearer(app) if secret is None else bearer(app, secret=secret)
    return post_json(api_client, run_path(workflow), {"inputs": {"city": "Oslo"}, "wait": True}, **headers)


def access_reads(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if any(f"FROM {table}" in q["sql"] for table in ACCESS_TABLES)]


def test_a_second_call_reads_no_app_license_or_release(api_client, app, licensed, published):
    assert call(api_client, app, published).status_code == 200

    with CaptureQueriesContext(connection) as queries:
        response = call(api_client, app, published)

    assert response.status_code == 200, response.json()
    assert access_reads(queries) == []


def test_another_process_changing_access_makes_every_process_read_again(api_client, app, licensed, published):
    assert call(api_client, app, published).status_code == 200
    before = generation(ACCESS)

    generation_move(ACCESS)  # as a change committed by another process does

    assert generation(ACCESS) != before
    with CaptureQueriesContext(connection) as queries:
        assert call(api_client, app, published).status_code == 200
    assert len(access_reads(queries)) == 3


def test_a_license_switched_off_or_revoked_is_refused_on_the_next_call(api_client, app, user, licensed, published):
    assert call(api_client, app, published).status_code == 200

    license_set_status(license=licensed, status=EnabledStatus.DISABLED, actor=user)
    assert call(api_client, app, published).json()["code"] == "license_disabled"

    license_set_status(license=licensed, status=EnabledStatus.ENABLED, actor=user)
    assert call(api_client, app, published).status_code == 200

    license_revoke(license=licensed, actor=user)
    assert call(api_client, app, published).json()["code"] == "no_license"


def test_a_disabled_app_and_a_rotated_secret_are_refused_on_the_next_call(api_client, app, user, licensed, published):
    assert call(api_client, app, published).status_code == 200

    app_set_status(app=app, status=EnabledStatus.DISABLED, actor=user)
    assert call(api_client, app, published).status_code == 401

    app_set_status(app=app, status=EnabledStatus.ENABLED, actor=user)
    assert call(api_client, app, published).status_code == 200

    new_secret = app_rotate_credentials(app=app, actor=user)
    app.refresh_from_db()
    assert call(api_client, app, published).status_code == 401
    assert call(api_client, app, published, secret=new_secret).status_code == 200


def test_a_new_release_runs_on_the_next_call_and_a_withdrawn_one_no_more(api_client, app, user, licensed, published):
    assert call(api_client, app, published).json()["outputs"] == {"text": "Weather for Oslo"}
    graph = copy.deepcopy(SIMPLE_GRAPH)
    graph["nodes"][1]["config"]["template"] = "Forecast for {{ start.city }}"
    workflow_update(workflow=published, user=user, graph=graph)
    workflow_publish(workflow=published, version="1.1.0", user=user)

    assert call(api_client, app, published).json()["outputs"] == {"text": "Forecast for Oslo"}

    for flow in WorkflowVersion.objects.filter(workflow=published):
        flow_withdraw(flow=flow, user=user)
    response = call(api_client, app, published)
    assert response.status_code == 404
    assert response.json()["detail"] == "No released version matches."


def test_what_a_call_changes_on_its_instances_never_reaches_the_next_call(app, licensed, published):
    access = access_now()
    access.latest_release(workflow_id=published.pk).release_data["nodes"].clear()
    access.license(app_id=app.pk, workflow_id=published.pk).group.name = "changed"

    assert access.latest_release(workflow_id=published.pk).release_data["nodes"] != []
    assert access.license(app_id=app.pk, workflow_id=published.pk).group.name == published.name
