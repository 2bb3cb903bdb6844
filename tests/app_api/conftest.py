import copy
import email.utils
import json
import secrets
import time

import pytest

from licensing.authentication import sign
from tests.factories import SIMPLE_GRAPH, AppFactory, LicenseFactory
from workflows.releases.services import workflow_publish
from workflows.services import workflow_create

APP_SECRET = "app-secret-canary-9f8e7d6c5b4a"


@pytest.fixture
def app(user):
    return AppFactory(owner=user, api_key="wk_test_key", api_secret=APP_SECRET)


@pytest.fixture
def published(user):
    workflow = workflow_create(owner=user, name="Greeter", graph=copy.deepcopy(SIMPLE_GRAPH))
    workflow_publish(workflow=workflow, version="1.0.0", user=user)
    return workflow


@pytest.fixture
def licensed(app, published):
    return LicenseFactory(app=app, group=published)


def bearer(app, secret=APP_SECRET) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {app.api_key}:{secret}"}


def signed_headers(
    app, *, method: str, path: str, body: bytes, secret: str = APP_SECRET, date: str | None = None, nonce=None
) -> dict:
    date = date or email.utils.formatdate(time.time(), usegmt=True)
    nonce = nonce or secrets.token_hex(12)
    signature = sign(secret=secret, method=method, path=path, date=date, nonce=nonce, body=body)
    return {
        "HTTP_AUTHORIZATION": f"WEFT-HMAC-SHA256 Credential={app.api_key}, Signature={signature}",
        "HTTP_X_WEFT_DATE": date,
        "HTTP_X_WEFT_NONCE": nonce,
    }


def run_path(workflow) -> str:
    return f"/api/v1/app/workflows/{workflow.id}/runs/"


def post_json(client, path: str, body: dict, **headers):
    return client.post(path, data=json.dumps(body).encode(), content_type="application/json", **headers)


@pytest.fixture(autouse=True)
def server_run_loop(settings):
    """Runs execute in the test process; the Celery path has its own integration tests."""
    settings.EMBEDDED = True
