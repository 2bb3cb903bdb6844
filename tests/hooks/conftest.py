import copy
import email.utils
import json
import secrets
import time

import pytest

from licensing.authentication import sign
from workflows.services import workflow_create

HOOK_SECRET = "hook-secret-canary-5e4d3c2b1a"

#: A draft whose start input ``city`` is required (``source`` and ``sig`` are optional); the end node
#: answers {"text": "Weather for <city>"}.
GREETER = {
    "nodes": [
        {
            "id": "start",
            "type": "start",
            "config": {
                "inputs": [
                    {"name": "city", "type": "string", "required": True},
                    {"name": "source", "type": "string"},
                    {"name": "sig", "type": "string"},
                ]
            },
        },
        {"id": "greet", "type": "template", "config": {"template": "Weather for {{ start.city }}"}},
        {"id": "end", "type": "end", "config": {"outputs": {"text": "{{ greet.text }}"}}},
    ],
    "edges": [{"source": "start", "target": "greet"}, {"source": "greet", "target": "end"}],
}


@pytest.fixture
def workflow(user):
    return workflow_create(owner=user, name="Greeter", graph=copy.deepcopy(GREETER))


@pytest.fixture
def make_trigger(user_client, workflow):
    """``make_trigger(**fields)``: a trigger created through the API; its answer (with ``token`` and ``url``)."""

    def make(**fields) -> dict:
        response = user_client.post(f"/api/v1/workflows/{workflow.id}/triggers/", fields, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    return make


def hook_path(token: str, query: str = "") -> str:
    return f"/api/v1/hooks/{token}/" + (f"?{query}" if query else "")


def post_hook(client, path: str, body: dict | bytes | None = None, **headers):
    data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
    return client.post(path, data=data, content_type="application/json", **headers)


def signed(path: str, body: bytes, *, secret: str = HOOK_SECRET, nonce: str | None = None, date: str | None = None):
    date = date or email.utils.formatdate(time.time(), usegmt=True)
    nonce = nonce or secrets.token_hex(12)
    signature = sign(secret=secret, method="POST", path=path, date=date, nonce=nonce, body=body)
    return {"HTTP_X_WEFT_SIGNATURE": signature, "HTTP_X_WEFT_DATE": date, "HTTP_X_WEFT_NONCE": nonce}


@pytest.fixture(autouse=True)
def server_run_loop(settings):
    """Runs execute in the test process, as the app API's tests run them."""
    settings.EMBEDDED = True
