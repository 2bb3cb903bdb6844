"""Notifications of a run's end: a signed webhook through the outbound guard and emails, each sent once
per run end even when two workers race, and a webhook retried after a 503."""

import hashlib
import hmac
import json
import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from alerts.models import Delivery
from alerts.services import deliveries_sweep, delivery_send, policy_set, run_end_handle
from tests.alerts.conftest import Receiver, runs_settle
from tests.factories import RunFactory, TaskFactory
from workflows.execution.services import run_cancel, run_start

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "a-webhook-secret-of-some-length"


@pytest.fixture
def failed_run(failing_workflow):
    run = RunFactory(
        workflow=failing_workflow,
        status="failed",
        error="Node boom failed: division by zero",
        inputs={"city": "Lyon"},
        triggered_by=failing_workflow.owner,
    )
    TaskFactory(run=run, node_id="boom", status="failed", error="division by zero")
    return run


def at_once(function, *, times: int = 2) -> list:
    """Call ``function()`` from ``times`` threads released together; their results."""
    barrier = threading.Barrier(times)
    results: list = [None] * times

    def call(index):
        try:
            barrier.wait(timeout=10)
            results[index] = function()
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(index,)) for index in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_a_webhook_is_signed_and_carries_the_runs_end(user, failing_workflow, failed_run, receiver, allow_loopback):
    policy_set(workflow=failing_workflow, user=user, webhook_url=receiver.url(), webhook_secret=SECRET)

    (delivery,) = run_end_handle(run_id=failed_run.pk)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 1, 200)
    (request,) = receiver.requests
    expected = "sha256=" + hmac.new(SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["x-weft-signature"] == expected
    assert request["headers"]["x-weft-delivery"] == str(delivery.pk)
    assert request["headers"]["x-weft-event"] == "run.failed"
    body = json.loads(request["body"])
    assert body["event"] == "run.failed"
    assert body["run"]["run_id"] == str(failed_run.pk)
    assert body["run"]["failed_node"] == "boom"
    assert body["run"]["error"] == "Node boom failed: division by zero"
    assert body["run"]["inputs"] == {"city": "Lyon"}


def test_two_workers_racing_deliver_a_webhook_once(user, failing_workflow, failed_run, receiver, allow_loopback):
    policy_set(workflow=failing_workflow, user=user, webhook_url=receiver.url(), webhook_secret=SECRET)

    at_once(lambda: run_end_handle(run_id=failed_run.pk))

    assert len(receiver.requests) == 1
    delivery = Delivery.objects.get(run=failed_run)
    assert (delivery.status, delivery.attempts) == ("delivered", 1)


def test_two_senders_racing_on_one_delivery_send_it_once(user, failing_workflow, failed_run, allow_loopback):
    slow = Receiver(statuses=[200]).start()
    try:
        policy_set(workflow=failing_workflow, user=user, webhook_url=slow.url(), webhook_secret=SECRET)
        delivery = Delivery.objects.create(
            policy=failing_workflow.failure_policy,
            run=failed_run,
            event="failed",
            channel="webhook",
            target=slow.url(),
            next_attempt_at=failed_run.finished_at or failed_run.created_at,
        )

        results = at_once(lambda: delivery_send(delivery_id=delivery.pk))
    finally:
        slow.stop()

    assert len(slow.requests) == 1
    assert sorted(result is None for result in results) == [False, True]  # one sent it, the other had nothing to do
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)


def test_a_503_is_retried_later_then_delivered(user, failing_workflow, failed_run, allow_loopback):
    flaky = Receiver(statuses=[503]).start()
    try:
        policy_set(workflow=failing_workflow, user=user, webhook_url=flaky.url(), webhook_secret=SECRET)
        (delivery,) = run_end_handle(run_id=failed_run.pk)

        assert (delivery.status, delivery.attempts, delivery.response_status) == ("pending", 1, 503)
        assert "503" in delivery.last_error
        assert delivery.next_attempt_at > delivery.updated_at
        assert delivery_send(delivery_id=delivery.pk) is None  # not due yet: nothing sent

        retried = delivery_send(delivery_id=delivery.pk, now=delivery.next_attempt_at)
    finally:
        flaky.stop()

    assert (retried.status, retried.attempts, retried.response_status, retried.last_error) == ("delivered", 2, 200, "")
    assert len(flaky.requests) == 2
    assert flaky.requests[0]["body"] == flaky.requests[1]["body"]  # the same delivery, the same signed body


def test_a_404_fails_the_delivery_without_a_retry(user, failing_workflow, failed_run, allow_loopback):
    gone = Receiver(statuses=[404]).start()
    try:
        policy_set(workflow=failing_workflow, user=user, webhook_url=gone.url(), webhook_secret=SECRET)
        (delivery,) = run_end_handle(run_id=failed_run.pk)
    finally:
        gone.stop()

    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 1, 404)


def test_the_outbound_guard_refuses_a_loopback_webhook(user, failing_workflow, failed_run, receiver):
    policy_set(workflow=failing_workflow, user=user, webhook_url=receiver.url(), webhook_secret=SECRET)

    (delivery,) = run_end_handle(run_id=failed_run.pk)

    assert delivery.status == "failed"
    assert "Outbound request refused" in delivery.last_error
    assert receiver.requests == []


def test_emails_are_sent_once_per_address_when_two_workers_race(user, failing_workflow, failed_run, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    policy_set(workflow=failing_workflow, user=user, emails=["ops@example.com", "dev@example.com"])

    at_once(lambda: run_end_handle(run_id=failed_run.pk))
    run_end_handle(run_id=failed_run.pk)

    assert sorted(message.to[0] for message in mail.outbox) == ["dev@example.com", "ops@example.com"]
    message = mail.outbox[0]
    assert "Broken" in message.subject
    assert str(failed_run.pk) in message.body
    assert "boom" in message.body
    assert set(Delivery.objects.filter(run=failed_run).values_list("status", flat=True)) == {"delivered"}


def test_only_the_chosen_events_notify(user, greeter, settings, embedded):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    policy_set(workflow=greeter, user=user, emails=["ops@example.com"])  # on failed only
    quiet = run_start(workflow=greeter, user=user, inputs={"city": "Nice"})
    runs_settle()
    assert not Delivery.objects.filter(run=quiet).exists()

    policy_set(workflow=greeter, user=user, emails=["ops@example.com"], on_succeeded=True)
    told = run_start(workflow=greeter, user=user, inputs={"city": "Nice"})
    runs_settle()

    (delivery,) = Delivery.objects.filter(run=told)
    assert (delivery.event, delivery.status) == ("succeeded", "delivered")
    (message,) = mail.outbox
    assert "succeeded" in message.subject


def test_a_pending_run_cancelled_notifies_when_asked(user, greeter, settings, embedded):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    policy_set(workflow=greeter, user=user, emails=["ops@example.com"], on_failed=False, on_cancelled=True)
    run = RunFactory(workflow=greeter, triggered_by=user)
    run_cancel(run=run, user=user)

    (delivery,) = Delivery.objects.filter(run=run)
    assert (delivery.event, delivery.status) == ("cancelled", "delivered")
    assert len(mail.outbox) == 1


def test_the_sweep_sends_what_is_due_and_what_a_dead_worker_left(
    user, failing_workflow, failed_run, receiver, allow_loopback
):
    policy_set(workflow=failing_workflow, user=user, webhook_url=receiver.url(), webhook_secret=SECRET)
    policy = failing_workflow.failure_policy
    now = timezone.now()
    lost_retry = Delivery.objects.create(
        policy=policy,
        run=failed_run,
        event="failed",
        channel="webhook",
        target=receiver.url("/a"),
        attempts=1,
        next_attempt_at=now - timedelta(seconds=5),
    )
    orphaned = Delivery.objects.create(
        policy=policy,
        run=failed_run,
        event="failed",
        channel="webhook",
        target=receiver.url("/b"),
        status="sending",
        attempts=1,
        next_attempt_at=now - timedelta(minutes=5),
        claimed_until=now - timedelta(seconds=1),
    )
    held = Delivery.objects.create(
        policy=policy,
        run=failed_run,
        event="failed",
        channel="webhook",
        target=receiver.url("/c"),
        status="sending",
        attempts=1,
        next_attempt_at=now,
        claimed_until=now + timedelta(minutes=1),
    )

    assert deliveries_sweep(now=now) == 2

    for delivery, expected in ((lost_retry, ("delivered", 2)), (orphaned, ("delivered", 2)), (held, ("sending", 1))):
        delivery.refresh_from_db()
        assert (delivery.status, delivery.attempts) == expected
    assert len(receiver.requests) == 2
