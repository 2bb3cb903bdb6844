"""Calling a webhook end to end: the run it starts, signatures, replays, switches, limits and answers."""

import json
import time

import pytest

from accounts.models import UserQuota
from history.models import AuditLog
from hooks.models import HookDelivery
from tests.hooks.conftest import HOOK_SECRET, hook_path, post_hook, signed
from workflows.models import Run, RunStatus
from workflows.releases.services import workflow_publish

pytestmark = pytest.mark.django_db(transaction=True)

MAPPING = {"city": "body.place.city"}


def run_finished(run_id, timeout: float = 10) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(pk=run_id)
        if run.is_finished:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


def test_an_unsigned_call_starts_a_run_and_answers_202_at_once(api_client, make_trigger, workflow):
    trigger = make_trigger(input_mapping={"city": "body.place.city", "source": "query.src", "sig": "headers.x-thing"})

    response = post_hook(
        api_client, hook_path(trigger["token"], "src=shop"), {"place": {"city": "Lyon"}}, HTTP_X_THING="abc"
    )

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.SUCCEEDED)
    assert response["X-Weft-Run"] == body["id"]
    run = run_finished(body["id"])
    assert run.status == RunStatus.SUCCEEDED
    assert run.outputs == {"text": "Weather for Lyon"}
    assert run.inputs == {"city": "Lyon", "source": "shop", "sig": "abc"}
    assert run.workflow_id == workflow.id
    assert run.triggered_by is None
    assert HookDelivery.objects.get(run=run).trigger_id.hex == trigger["id"].replace("-", "")


def test_without_a_mapping_the_json_body_is_the_inputs(api_client, make_trigger):
    trigger = make_trigger(wait=True)

    response = post_hook(api_client, hook_path(trigger["token"]), {"city": "Oslo"})

    assert response.status_code == 200, response.content
    assert response.json()["outputs"] == {"text": "Weather for Oslo"}


def test_a_waiting_trigger_answers_200_with_the_outputs(api_client, make_trigger):
    trigger = make_trigger(input_mapping=MAPPING, wait=True)

    response = post_hook(api_client, hook_path(trigger["token"]), {"place": {"city": "Nice"}})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body == {"id": body["id"], "status": "succeeded", "outputs": {"text": "Weather for Nice"}, "error": None}
    assert Run.objects.get(pk=body["id"]).status == RunStatus.SUCCEEDED


def test_a_form_body_maps_too(api_client, make_trigger):
    trigger = make_trigger(input_mapping={"city": "body.town"}, wait=True)

    response = api_client.post(
        hook_path(trigger["token"]), data="town=Brest", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 200, response.content
    assert response.json()["outputs"] == {"text": "Weather for Brest"}


def test_a_response_template_renders_over_the_outputs(api_client, make_trigger):
    trigger = make_trigger(
        input_mapping=MAPPING,
        wait=True,
        response_template="{{ outputs.text | upper }} ({{ run.status }})",
    )

    response = post_hook(api_client, hook_path(trigger["token"]), {"place": {"city": "Metz"}})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == "WEATHER FOR METZ (succeeded)"


def test_a_json_response_template(api_client, make_trigger):
    trigger = make_trigger(
        input_mapping=MAPPING,
        wait=True,
        response_template='{"reply": {{ outputs.text | tojson }}}',
        response_content_type="application/json",
    )

    response = post_hook(api_client, hook_path(trigger["token"]), {"place": {"city": "Pau"}})

    assert response["Content-Type"] == "application/json"
    assert response.json() == {"reply": "Weather for Pau"}


def test_a_template_that_fails_to_render_answers_the_run_and_the_error(api_client, make_trigger):
    trigger = make_trigger(input_mapping=MAPPING, wait=True, response_template="{{ outputs.missing }}")

    response = post_hook(api_client, hook_path(trigger["token"]), {"place": {"city": "Pau"}})

    assert response.status_code == 200
    body = response.json()
    assert body["outputs"] == {"text": "Weather for Pau"}
    assert "missing" in body["template_error"]


@pytest.mark.parametrize(
    ("body", "field", "source"),
    [
        ({"place": {}}, "inputs.city", "body.place.city"),
        ({"place": {"city": 12}}, "inputs.city", "body.place.city"),
    ],
)
def test_an_input_mapping_error_is_a_400_naming_the_field_and_its_source(api_client, make_trigger, body, field, source):
    trigger = make_trigger(input_mapping=MAPPING, wait=True)

    response = post_hook(api_client, hook_path(trigger["token"]), body)

    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert response.json()["source"] == source
    assert not Run.objects.exists()


def test_a_body_that_is_not_json_is_a_400_naming_the_body(api_client, make_trigger):
    trigger = make_trigger(input_mapping=MAPPING)

    response = post_hook(api_client, hook_path(trigger["token"]), b"{not json")

    assert response.status_code == 400
    assert response.json()["field"] == "body"


def test_a_signed_call_is_accepted(api_client, make_trigger):
    trigger = make_trigger(input_mapping=MAPPING, secret=HOOK_SECRET, wait=True)
    path = hook_path(trigger["token"], "src=x")
    body = json.dumps({"place": {"city": "Caen"}}).encode()

    response = post_hook(api_client, path, body, **signed(path, body))

    assert response.status_code == 200, response.content
    assert response.json()["outputs"] == {"text": "Weather for Caen"}


@pytest.mark.parametrize("fault", ["unsigned", "wrong secret", "other body", "old date", "bad nonce"])
def test_a_wrong_or_missing_signature_is_a_401_and_starts_nothing(api_client, make_trigger, fault):
    trigger = make_trigger(input_mapping=MAPPING, secret=HOOK_SECRET)
    path = hook_path(trigger["token"])
    body = json.dumps({"place": {"city": "Caen"}}).encode()
    headers = {
        "unsigned": {},
        "wrong secret": signed(path, body, secret="another-secret-of-16+"),
        "other body": signed(path, b'{"place": {"city": "Elsewhere"}}'),
        "old date": signed(path, body, date="Mon, 01 Jan 2024 00:00:00 GMT"),
        "bad nonce": signed(path, body, nonce="short"),
    }[fault]

    response = post_hook(api_client, path, body, **headers)

    assert response.status_code == 401, response.content
    assert response.json()["code"] == ("signature_required" if fault == "unsigned" else "bad_signature")
    assert HOOK_SECRET not in response.content.decode()
    assert not Run.objects.exists()


def test_a_nonce_is_used_once(api_client, make_trigger):
    trigger = make_trigger(input_mapping=MAPPING, secret=HOOK_SECRET)
    path = hook_path(trigger["token"])
    body = json.dumps({"place": {"city": "Caen"}}).encode()
    headers = signed(path, body)

    assert post_hook(api_client, path, body, **headers).status_code == 202
    replayed = post_hook(api_client, path, body, **headers)

    assert replayed.status_code == 409
    assert replayed.json()["code"] == "replayed_nonce"
    assert Run.objects.count() == 1


def test_a_replayed_delivery_starts_no_second_run_and_answers_the_same_run(api_client, make_trigger):
    trigger = make_trigger(input_mapping=MAPPING)
    path = hook_path(trigger["token"])

    first = post_hook(api_client, path, {"place": {"city": "Lyon"}}, HTTP_IDEMPOTENCY_KEY="order-42")
    again = post_hook(api_client, path, {"place": {"city": "Lyon"}}, HTTP_IDEMPOTENCY_KEY="order-42")
    other = post_hook(api_client, path, {"place": {"city": "Lyon"}}, HTTP_IDEMPOTENCY_KEY="order-43")

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert other.json()["id"] != first.json()["id"]
    assert Run.objects.count() == 2


def test_a_replayed_waited_delivery_answers_the_stored_outcome(api_client, make_trigger):
    trigger = make_trigger(input_mapping=MAPPING, wait=True, response_template="{{ outputs.text }}!")
    path = hook_path(trigger["token"])

    first = post_hook(api_client, path, {"place": {"city": "Lyon"}}, HTTP_IDEMPOTENCY_KEY="k-1")
    again = post_hook(api_client, path, {"place": {"city": "Somewhere else"}}, HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == again.status_code == 200
    assert again.content == first.content == b"Weather for Lyon!"
    assert again["X-Weft-Run"] == first["X-Weft-Run"]
    assert Run.objects.count() == 1


def test_a_signed_replay_of_the_very_same_request_is_answered_as_the_first(api_client, make_trigger):
    trigger = make_trigger(input_mapping=MAPPING, secret=HOOK_SECRET)
    path = hook_path(trigger["token"])
    body = json.dumps({"place": {"city": "Caen"}}).encode()
    headers = {**signed(path, body), "HTTP_IDEMPOTENCY_KEY": "evt_1"}

    first = post_hook(api_client, path, body, **headers)
    again = post_hook(api_client, path, body, **headers)

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert Run.objects.count() == 1


def test_an_idempotency_key_older_than_24_hours_starts_a_new_run(api_client, make_trigger):
    from datetime import timedelta

    from django.utils import timezone

    trigger = make_trigger(input_mapping=MAPPING)
    path = hook_path(trigger["token"])
    first = post_hook(api_client, path, {"place": {"city": "Lyon"}}, HTTP_IDEMPOTENCY_KEY="order-1")
    HookDelivery.objects.update(created_at=timezone.now() - timedelta(hours=25))

    again = post_hook(api_client, path, {"place": {"city": "Lyon"}}, HTTP_IDEMPOTENCY_KEY="order-1")

    assert again.status_code == 202
    assert again.json()["id"] != first.json()["id"]
    assert Run.objects.count() == 2


def test_a_bad_idempotency_key_is_a_400_naming_it(api_client, make_trigger):
    trigger = make_trigger(input_mapping=MAPPING)

    response = post_hook(api_client, hook_path(trigger["token"]), {}, HTTP_IDEMPOTENCY_KEY="x" * 300)

    assert response.status_code == 400
    assert response.json()["field"] == "Idempotency-Key"


def test_a_disabled_trigger_is_refused_and_can_be_switched_on_again(api_client, user_client, make_trigger, workflow):
    trigger = make_trigger(input_mapping=MAPPING)
    detail = f"/api/v1/workflows/{workflow.id}/triggers/{trigger['id']}/"
    assert user_client.patch(detail, {"enabled": False}, format="json").status_code == 200

    response = post_hook(api_client, hook_path(trigger["token"]), {"place": {"city": "Lyon"}})

    assert response.status_code == 403
    assert response.json()["code"] == "trigger_disabled"
    assert not Run.objects.exists()
    user_client.patch(detail, {"enabled": True}, format="json")
    assert post_hook(api_client, hook_path(trigger["token"]), {"place": {"city": "Lyon"}}).status_code == 202


def test_a_rotated_token_is_dead_at_once_and_the_new_one_works(api_client, user_client, make_trigger, workflow):
    trigger = make_trigger(input_mapping=MAPPING)

    rotated = user_client.post(f"/api/v1/workflows/{workflow.id}/triggers/{trigger['id']}/rotate/")

    assert rotated.status_code == 200
    new_token = rotated.json()["token"]
    assert new_token != trigger["token"]
    assert rotated.json()["url"].endswith(f"/api/v1/hooks/{new_token}/")
    old = post_hook(api_client, hook_path(trigger["token"]), {"place": {"city": "Lyon"}})
    assert old.status_code == 404
    assert old.json()["code"] == "unknown_hook"
    assert post_hook(api_client, hook_path(new_token), {"place": {"city": "Lyon"}}).status_code == 202


def test_an_unknown_token_is_404(api_client, db):
    response = post_hook(api_client, hook_path("whk_" + "x" * 43), {})

    assert response.status_code == 404
    assert response.json()["code"] == "unknown_hook"


def test_the_trigger_rate_limit_is_a_429(api_client, make_trigger):
    trigger = make_trigger(input_mapping=MAPPING, rate_limit_per_minute=2)
    path = hook_path(trigger["token"])

    codes = [post_hook(api_client, path, {"place": {"city": "Lyon"}}).status_code for _ in range(4)]

    assert codes[:2] == [202, 202]
    assert codes[2:] == [429, 429]
    refused = post_hook(api_client, path, {"place": {"city": "Lyon"}})
    assert refused.json()["code"] == "rate_limited"
    assert refused.json()["limit"] == 2
    assert int(refused["Retry-After"]) >= 1
    assert Run.objects.count() == 2
    # A flood writes one audit row per minute for its refusals, not one per call.
    refusals = AuditLog.objects.filter(action="hook.call", payload__status=429)
    assert refusals.count() == 1


def test_calls_count_against_the_owners_quota(api_client, make_trigger, user):
    UserQuota.objects.update_or_create(user=user, defaults={"runs_per_day": 1})
    trigger = make_trigger(input_mapping=MAPPING)
    path = hook_path(trigger["token"])

    assert post_hook(api_client, path, {"place": {"city": "Lyon"}}).status_code == 202
    refused = post_hook(api_client, path, {"place": {"city": "Lyon"}})

    assert refused.status_code == 429
    assert refused.json()["code"] == "quota_exceeded"
    assert refused.json()["quota"] == "runs_per_day"
    assert Run.objects.count() == 1
    assert HookDelivery.objects.count() == 1


def test_the_version_runs_the_latest_release_or_a_range(api_client, user_client, make_trigger, workflow, user):
    trigger = make_trigger(input_mapping=MAPPING, version="latest", wait=True)
    path = hook_path(trigger["token"])

    unreleased = post_hook(api_client, path, {"place": {"city": "Lyon"}})
    assert unreleased.status_code == 409
    assert unreleased.json()["code"] == "no_released_version"

    for version in ("1.0.0", "1.2.0", "2.0.0"):
        workflow_publish(workflow=workflow, version=version, user=user)
    latest = post_hook(api_client, path, {"place": {"city": "Lyon"}})
    assert Run.objects.get(pk=latest.json()["id"]).version == "2.0.0"

    user_client.patch(f"/api/v1/workflows/{workflow.id}/triggers/{trigger['id']}/", {"version": "^1.0"}, format="json")
    pinned = post_hook(api_client, path, {"place": {"city": "Lyon"}})
    assert pinned.status_code == 200
    assert Run.objects.get(pk=pinned.json()["id"]).version == "1.2.0"


def test_every_call_is_in_the_audit_log_without_secrets(api_client, make_trigger):
    trigger = make_trigger(input_mapping=MAPPING, secret=HOOK_SECRET)
    path = hook_path(trigger["token"])
    body = json.dumps({"place": {"city": "Caen"}}).encode()

    accepted = post_hook(api_client, path, body, **signed(path, body))
    post_hook(api_client, path, body)

    rows = list(AuditLog.objects.filter(action="hook.call").order_by("id"))
    assert [row.payload["status"] for row in rows] == [202, 401]
    assert rows[0].payload["run"] == accepted.json()["id"]
    assert rows[1].payload["code"] == "signature_required"
    assert all(row.target_id == trigger["id"] for row in rows)
    dumped = json.dumps([row.payload for row in rows]) + "".join(row.target_repr for row in rows)
    assert HOOK_SECRET not in dumped
    assert trigger["token"] not in dumped


def test_a_run_that_outlasts_the_wait_is_answered_202_then_finishes(
    api_client, user_client, workflow, fake_http, allow_loopback
):
    from workflows.services import workflow_update

    slow = {
        "nodes": [
            {"id": "start", "type": "start", "config": {"inputs": [{"name": "city", "type": "string"}]}},
            {"id": "call", "type": "http_request", "config": {"url": fake_http.url("/drip?n=4&every=0.5")}},
            {"id": "end", "type": "end", "config": {"outputs": {"status": "{{ call.status }}"}}},
        ],
        "edges": [{"source": "start", "target": "call"}, {"source": "call", "target": "end"}],
    }
    workflow_update(workflow=workflow, user=workflow.owner, graph=slow)
    trigger = user_client.post(
        f"/api/v1/workflows/{workflow.id}/triggers/", {"wait": True, "wait_timeout_s": 1}, format="json"
    ).json()

    response = post_hook(api_client, hook_path(trigger["token"]), {"city": "Lyon"})

    assert response.status_code == 202, response.content
    assert response.json()["status"] in (RunStatus.PENDING, RunStatus.RUNNING)
    assert run_finished(response.json()["id"], timeout=30).outputs == {"status": 200}


@pytest.mark.parametrize("store", [pytest.param("redis", marks=pytest.mark.services), "database"])
def test_nonces_are_claimed_once_with_redis_and_in_embedded_mode(api_client, make_trigger, settings, store):
    from hooks.models import HookNonce

    if store == "database":
        settings.REDIS_URL = ""
    trigger = make_trigger(input_mapping=MAPPING, secret=HOOK_SECRET)
    path = hook_path(trigger["token"])
    body = json.dumps({"place": {"city": "Caen"}}).encode()
    headers = signed(path, body)

    assert post_hook(api_client, path, body, **headers).status_code == 202
    assert post_hook(api_client, path, body, **headers).status_code == 409
    assert HookNonce.objects.exists() == (store == "database")


def test_two_deliveries_of_one_key_at_once_start_one_run(make_trigger):
    import threading

    from django.db import connection
    from rest_framework.test import APIClient

    trigger = make_trigger(input_mapping=MAPPING)
    barrier = threading.Barrier(2)
    answers = []

    def deliver():
        try:
            barrier.wait()
            answers.append(
                post_hook(
                    APIClient(), hook_path(trigger["token"]), {"place": {"city": "Lyon"}}, HTTP_IDEMPOTENCY_KEY="same"
                )
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [answer.status_code for answer in answers] == [202, 202]
    assert answers[0].json()["id"] == answers[1].json()["id"]
    assert Run.objects.count() == 1


def test_a_body_over_the_limit_is_a_413(api_client, make_trigger, settings):
    trigger = make_trigger(input_mapping=MAPPING)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100

    response = post_hook(api_client, hook_path(trigger["token"]), {"place": {"city": "x" * 200}})

    assert response.status_code == 413
    assert not Run.objects.exists()
