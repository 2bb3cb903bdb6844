"""With Redis, the run's end is acted on by a Celery worker: real daphne and worker processes.

A run of computing nodes executes in the daphne process that starts it; its end reaches the
receiver there, which queues ``alerts.run_end_handle`` for a worker: the worker starts the error
workflow (which a worker executes too) and delivers the signed webhook to a loopback receiver.
"""

import copy
import hashlib
import hmac
import json

import httpx
import pytest
from knox.models import AuthToken

from alerts.models import Delivery, ErrorWorkflowRun
from alerts.services import policy_set
from tests.alerts.conftest import FAILING_WITH_CITY, HANDLER_GRAPH, Receiver
from tests.factories import UserFactory
from tests.integration.conftest import wait_for
from workflows.models import Run
from workflows.services import workflow_create

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SECRET = "a-webhook-secret-of-some-length"


def test_a_worker_starts_the_error_workflow_and_delivers_the_webhook(cluster_settings):
    weft = cluster_settings  # the cluster, the test process pointed at its queue
    user = UserFactory()
    _, token = AuthToken.objects.create(user=user)
    failing = workflow_create(owner=user, name="Broken", graph=copy.deepcopy(FAILING_WITH_CITY))
    handler = workflow_create(owner=user, name="On failure", graph=copy.deepcopy(HANDLER_GRAPH))
    receiver = Receiver().start()
    try:
        policy_set(
            workflow=failing, user=user, error_workflow=handler, webhook_url=receiver.url(), webhook_secret=SECRET
        )

        started = httpx.post(
            f"{weft.http_url}/api/v1/workflows/{failing.pk}/runs/",
            json={"inputs": {"city": "Oslo"}},
            headers={"Authorization": f"Token {token}"},
            timeout=10,
        )
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]

        delivery = wait_for(
            lambda: Delivery.objects.filter(run_id=run_id, status="delivered").first(),
            timeout=30,
            what="the webhook delivered",
        )
        start = wait_for(
            lambda: ErrorWorkflowRun.objects.filter(failed_run_id=run_id, error_run__isnull=False).first(),
            timeout=30,
            what="the error workflow started",
        )
        handled = wait_for(
            lambda: Run.objects.filter(pk=start.error_run_id, status__in=("succeeded", "failed")).first(),
            timeout=30,
            what="the error workflow's run to end",
        )
    finally:
        receiver.stop()

    assert handled.status == "succeeded", handled.error
    assert handled.outputs["report"].startswith(f"{run_id}|boom|Oslo|")
    (request,) = receiver.requests
    assert request["headers"]["x-weft-delivery"] == str(delivery.pk)
    expected = "sha256=" + hmac.new(SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["x-weft-signature"] == expected
    assert json.loads(request["body"])["run"]["run_id"] == run_id
