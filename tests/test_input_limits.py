"""Input the API refuses before it can hurt: JSON nested deeper than WEFT_JSON_MAX_DEPTH is a 400
naming the limit (never a RecursionError's 500), on every way in; a body over
DATA_UPLOAD_MAX_MEMORY_SIZE is a 413 in the API's JSON shape, never Django's HTML page."""

import copy
import json

import pytest
from channels.testing import WebsocketCommunicator
from django.core.exceptions import RequestDataTooBig
from django.test import RequestFactory
from knox.models import AuthToken

from config.api.exceptions import bad_request
from config.api.parsers import json_depth
from tests.factories import SIMPLE_GRAPH, RunFactory, WorkflowFactory

pytestmark = pytest.mark.django_db


def nested(depth: int, leaf=1):
    """``depth`` arrays, one in the other, as JSON text (built without recursion)."""
    return "[" * depth + json.dumps(leaf) + "]" * depth


def post(client, path: str, text: str, **headers):
    return client.post(path, data=text.encode(), content_type="application/json", **headers)


def assert_too_deep(response, limit: int = 64):
    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert body["code"] == "json_too_deep"
    assert body["limit"] == limit
    assert str(limit) in body["detail"]


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("[]", 1),
        ('{"a": [{"b": []}]}', 4),
        ('["[[[[", "]]]]}}}", "\\"[[["]', 1),  # brackets in strings, an escaped quote
        (nested(10_000), 10_000),
    ],
)
def test_depth_is_counted_outside_strings(text, depth):
    assert json_depth(text) == depth


def test_the_token_endpoint_refuses_deep_json_before_parsing_it(api_client):
    assert_too_deep(post(api_client, "/api/v1/auth/token/", f'{{"username": {nested(10_000)}}}'))


def test_the_limit_is_the_setting_and_json_at_it_is_read(api_client, settings):
    settings.WEFT = {**settings.WEFT, "JSON_MAX_DEPTH": 10}
    assert_too_deep(post(api_client, "/api/v1/auth/token/", f'{{"username": {nested(10)}}}'), limit=10)
    at_limit = post(api_client, "/api/v1/auth/token/", f'{{"username": {nested(9)}}}')
    assert at_limit.status_code == 400
    assert at_limit.json().get("code") != "json_too_deep"


@pytest.mark.parametrize("depth", [500, 950, 10_000])
def test_a_deeply_nested_workflow_is_refused_not_saved(user_client, depth):
    graph = copy.deepcopy(SIMPLE_GRAPH)
    text = json.dumps({"name": "deep", "graph": graph}).replace('"city"', nested(depth, "city"), 1)
    assert_too_deep(post(user_client, "/api/v1/workflows/", text))


def test_a_run_start_refuses_deep_inputs(user_client, user):
    workflow = WorkflowFactory(owner=user)
    text = f'{{"inputs": {{"city": {nested(10_000)}}}}}'
    assert_too_deep(post(user_client, f"/api/v1/workflows/{workflow.pk}/runs/", text))


@pytest.mark.django_db(transaction=True)
async def test_a_deep_websocket_message_closes_4400():
    from channels.auth import AuthMiddlewareStack
    from channels.db import database_sync_to_async
    from channels.routing import URLRouter

    from config.routing import websocket_urlpatterns

    @database_sync_to_async
    def run_and_token():
        run = RunFactory()
        return run, AuthToken.objects.create(run.workflow.owner)[1]

    run, token = await run_and_token()
    application = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
    communicator = WebsocketCommunicator(
        application, f"/ws/runs/{run.pk}/", headers=[(b"authorization", f"Token {token}".encode())]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.receive_json_from(timeout=2)  # the snapshot
    await communicator.send_to(text_data=nested(10_000))
    message = await communicator.receive_output(timeout=2)
    assert message == {"type": "websocket.close", "code": 4400}
    await communicator.disconnect()


# --- Oversized bodies ---------------------------------------------------------------------------
def assert_too_large(response, limit: int):
    assert response.status_code == 413, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {
        "detail": f"The request body is larger than {limit} bytes, the most accepted.",
        "code": "request_too_large",
        "limit": limit,
    }


def test_a_body_over_the_limit_is_a_413(api_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    text = json.dumps({"username": "x" * 1000, "password": "y"})
    assert_too_large(post(api_client, "/api/v1/auth/token/", text), 1000)
    assert post(api_client, "/api/v1/auth/token/", json.dumps({"username": "x" * 900})).status_code == 400


def test_djangos_own_400_is_json_under_api_and_html_elsewhere(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    factory = RequestFactory()
    assert_too_large(bad_request(factory.post("/api/v1/workflows/"), RequestDataTooBig()), 1000)
    other = bad_request(factory.post("/api/v1/workflows/"), ValueError())
    assert (other.status_code, json.loads(other.content)["code"]) == (400, "bad_request")
    page = bad_request(factory.post("/login/"), RequestDataTooBig())
    assert page.status_code == 400
    assert page["Content-Type"].startswith("text/html")
