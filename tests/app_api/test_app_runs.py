import email.utils
import json
import time
import uuid

import pytest
from knox.models import AuthToken

from licensing.models import EnabledStatus
from tests.app_api.conftest import APP_SECRET, bearer, post_json, run_path, signed_headers
from tests.factories import AppFactory, LicenseFactory, UserFactory
from workflows.models import Run, WorkflowVersion
from workflows.releases.services import flow_withdraw, workflow_publish

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_licensed_app_runs_the_latest_released_version_and_waits(api_client, app, licensed, published):
    response = post_json(api_client, run_path(published), {"inputs": {"city": "Lyon"}, "wait": True}, **bearer(app))

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["outputs"] == {"text": "Weather for Lyon"}
    assert body["version"] == "1.0.0"
    assert Run.objects.get(pk=body["id"]).app_id == app.pk


def test_without_wait_the_answer_is_202_and_the_run_can_be_read(api_client, app, licensed, published):
    response = post_json(api_client, run_path(published), {"inputs": {"city": "Oslo"}}, **bearer(app))

    assert response.status_code == 202
    run_id = response.json()["id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        run = api_client.get(f"/api/v1/app/runs/{run_id}/", **bearer(app)).json()
        if run["status"] == "succeeded":
            break
        time.sleep(0.05)
    assert run["outputs"] == {"text": "Weather for Oslo"}


def test_the_exact_version_or_a_range_picks_the_version(api_client, app, licensed, published, user):
    for version in ("1.2.9", "1.2.10", "1.10.0"):
        workflow_publish(workflow=published, version=version, user=user)

    def ran(version):
        response = post_json(
            api_client, run_path(published), {"inputs": {"city": "x"}, "wait": True, "version": version}, **bearer(app)
        )
        return response.status_code, response.json().get("version")

    assert ran("1.2.x") == (200, "1.2.10")
    assert ran("^1.2") == (200, "1.10.0")
    assert ran("1.0.0") == (200, "1.0.0")
    assert ran("^2")[0] == 404
    assert ran("not a range!")[0] == 400


def test_a_withdrawn_version_is_not_run(api_client, app, licensed, published, user):
    flow_withdraw(flow=WorkflowVersion.objects.get(workflow=published), user=user)

    response = post_json(api_client, run_path(published), {"inputs": {"city": "x"}}, **bearer(app))

    assert response.status_code == 404


def test_no_license_or_a_disabled_one_is_403(api_client, app, published):
    assert post_json(api_client, run_path(published), {}, **bearer(app)).status_code == 403
    LicenseFactory(app=app, group=published, status=EnabledStatus.DISABLED)
    response = post_json(api_client, run_path(published), {}, **bearer(app))
    assert response.status_code == 403
    assert response.json()["code"] == "license_disabled"
    assert not Run.objects.exists()


def test_switching_a_license_off_in_the_admin_takes_effect_on_the_next_call(
    api_client, client, app, licensed, published
):
    assert post_json(api_client, run_path(published), {"inputs": {"city": "a"}}, **bearer(app)).status_code == 202
    operator = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(operator)

    client.post(
        "/admin/licensing/license/",
        {"action": "disable_licenses", "_selected_action": [licensed.pk]},
    )

    licensed.refresh_from_db()
    assert licensed.status == EnabledStatus.DISABLED
    assert post_json(api_client, run_path(published), {"inputs": {"city": "a"}}, **bearer(app)).status_code == 403


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wk_test_key:wrong-secret",
        "Bearer unknown-key:" + APP_SECRET,
        "Bearer wk_test_key",
        "Basic d2s6c2VjcmV0",
        "WEFT-HMAC-SHA256 garbage",
    ],
)
def test_bad_credentials_are_401(api_client, app, licensed, published, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}

    response = post_json(api_client, run_path(published), {}, **headers)

    assert response.status_code == 401
    assert APP_SECRET not in response.content.decode()


def test_a_disabled_app_is_refused(api_client, app, licensed, published):
    app.status = EnabledStatus.DISABLED
    app.save()

    assert post_json(api_client, run_path(published), {}, **bearer(app)).status_code == 401


def test_a_disabled_app_is_named_only_to_a_caller_with_its_secret(api_client, app, licensed, published):
    app.status = EnabledStatus.DISABLED
    app.save()
    body = json.dumps({}).encode()
    path = run_path(published)

    wrong = post_json(api_client, path, {}, **bearer(app, secret="not-the-secret"))
    wrong_signed = api_client.post(
        path,
        data=body,
        content_type="application/json",
        **signed_headers(app, method="POST", path=path, body=body, secret="not-the-secret"),
    )
    right = post_json(api_client, path, {}, **bearer(app))

    assert wrong.status_code == wrong_signed.status_code == right.status_code == 401
    assert "disabled" not in wrong.json()["detail"]
    assert "disabled" not in wrong_signed.json()["detail"]
    assert wrong.json()["detail"] == post_json(api_client, path, {}, **bearer(app, secret="other")).json()["detail"]
    assert right.json()["detail"] == "This app is disabled."


def test_failed_authentications_are_throttled_per_address(api_client, app, licensed, published, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "app_auth_failure": "3/min"},
    }
    path = run_path(published)
    statuses = [post_json(api_client, path, {}, **bearer(app, secret=f"guess-{n}")).status_code for n in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    # Blocked, the address tries no credentials, not even the right ones; another address still can.
    blocked = post_json(api_client, path, {}, **bearer(app))
    assert blocked.status_code == 429
    assert blocked.json()["code"] == "throttled"
    assert int(blocked["Retry-After"]) > 0
    elsewhere = post_json(api_client, path, {"wait": False}, REMOTE_ADDR="10.9.8.7", **bearer(app))
    assert elsewhere.status_code == 202, elsewhere.content


def test_a_user_token_is_not_app_credentials(api_client, user, app, licensed, published):
    _, token = AuthToken.objects.create(user)

    response = post_json(api_client, run_path(published), {}, HTTP_AUTHORIZATION=f"Token {token}")

    assert response.status_code == 401


def test_unknown_workflow_or_no_released_version_is_404(api_client, app, user):
    from tests.factories import WorkflowFactory

    draft_only = WorkflowFactory(owner=user)
    LicenseFactory(app=app, group=draft_only)

    assert post_json(api_client, run_path(draft_only), {}, **bearer(app)).status_code == 404
    missing = "/api/v1/app/workflows/00000000-0000-0000-0000-000000000000/runs/"
    assert post_json(api_client, missing, {}, **bearer(app)).status_code == 404


def test_bad_inputs_and_unknown_fields_are_400(api_client, app, licensed, published):
    assert post_json(api_client, run_path(published), {"inputs": []}, **bearer(app)).status_code == 400
    response = post_json(api_client, run_path(published), {"inputz": {}}, **bearer(app))
    assert response.status_code == 400
    assert "inputz" in response.json()


def test_an_app_cannot_read_another_apps_run(api_client, app, licensed, published, user):
    response = post_json(api_client, run_path(published), {"inputs": {"city": "a"}}, **bearer(app))
    other = AppFactory(owner=user, api_secret="other-secret")

    reply = api_client.get(f"/api/v1/app/runs/{response.json()['id']}/", **bearer(other, secret="other-secret"))

    assert reply.status_code == 404


def test_the_rate_limit_answers_429_with_retry_after(api_client, app, licensed, published):
    app.rate_limit_per_minute = 2
    app.save()
    statuses = [
        post_json(api_client, run_path(published), {"inputs": {"city": "a"}}, **bearer(app)).status_code
        for _ in range(3)
    ]

    assert statuses[:2] == [202, 202]
    assert statuses[2] == 429
    limited = post_json(api_client, run_path(published), {}, **bearer(app))
    assert 1 <= int(limited["Retry-After"]) <= 60


# --- HMAC signatures ---------------------------------------------------------------------------


def test_a_signed_request_runs(api_client, app, licensed, published):
    body = json.dumps({"inputs": {"city": "Rome"}, "wait": True}).encode()
    headers = signed_headers(app, method="POST", path=run_path(published), body=body)

    response = api_client.post(run_path(published), data=body, content_type="application/json", **headers)

    assert response.status_code == 200, response.content
    assert response.json()["outputs"] == {"text": "Weather for Rome"}


def test_a_replayed_nonce_is_409(api_client, app, licensed, published):
    body = json.dumps({"inputs": {"city": "Rome"}}).encode()
    headers = signed_headers(app, method="POST", path=run_path(published), body=body, nonce=f"nonce-{uuid.uuid4().hex}")

    first = api_client.post(run_path(published), data=body, content_type="application/json", **headers)
    again = api_client.post(run_path(published), data=body, content_type="application/json", **headers)

    assert first.status_code == 202
    assert again.status_code == 409
    assert Run.objects.count() == 1


@pytest.mark.parametrize("age_s", [-400, 400, 3600])
def test_a_date_outside_the_window_is_401(api_client, app, licensed, published, age_s):
    body = b"{}"
    date = email.utils.formatdate(time.time() - age_s, usegmt=True)
    headers = signed_headers(app, method="POST", path=run_path(published), body=body, date=date)

    response = api_client.post(run_path(published), data=body, content_type="application/json", **headers)

    assert response.status_code == 401


def test_a_tampered_body_or_a_wrong_secret_is_401(api_client, app, licensed, published):
    signed_body = json.dumps({"inputs": {"city": "Rome"}}).encode()
    headers = signed_headers(app, method="POST", path=run_path(published), body=signed_body)
    tampered = json.dumps({"inputs": {"city": "Paris"}}).encode()

    assert (
        api_client.post(run_path(published), data=tampered, content_type="application/json", **headers).status_code
        == 401
    )
    wrong = signed_headers(app, method="POST", path=run_path(published), body=signed_body, secret="not-the-secret")
    assert (
        api_client.post(run_path(published), data=signed_body, content_type="application/json", **wrong).status_code
        == 401
    )
    assert not Run.objects.exists()


def test_a_malformed_date_or_nonce_is_401(api_client, app, licensed, published):
    body = b"{}"
    headers = signed_headers(app, method="POST", path=run_path(published), body=body)

    bad_date = {**headers, "HTTP_X_WEFT_DATE": "yesterday"}
    bad_nonce = {**headers, "HTTP_X_WEFT_NONCE": "short"}

    assert (
        api_client.post(run_path(published), data=body, content_type="application/json", **bad_date).status_code == 401
    )
    assert (
        api_client.post(run_path(published), data=body, content_type="application/json", **bad_nonce).status_code == 401
    )
