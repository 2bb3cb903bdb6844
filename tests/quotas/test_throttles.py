"""Throttles of the endpoints anyone can reach: per client address and scope, at the rates in settings."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.api.throttling import throttle_rate_parse
from tests.factories import AppFactory

TOKEN = "/api/v1/auth/token/"


@pytest.fixture
def rates(settings):
    def set_rates(**rates):
        current = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {**current, **rates}}

    return set_rates


def test_sign_in_attempts_past_the_rate_are_a_429_in_the_error_contract(api_client, user, rates):
    rates(auth_token="3/min")
    attempts = [api_client.post(TOKEN, {"username": user.username, "password": "wrong"}) for _ in range(3)]
    refused = api_client.post(TOKEN, {"username": user.username, "password": "correct horse battery staple"})

    assert [response.status_code for response in attempts] == [400, 400, 400]
    assert refused.status_code == 429
    body = refused.json()
    assert (body["code"], body["throttle"], body["limit"], body["window_s"]) == ("throttled", "auth_token", 3, 60)
    assert 1 <= body["retry_after"] == int(refused["Retry-After"]) <= 60


def test_each_address_has_its_own_count_and_x_forwarded_for_does_not_choose_it(api_client, user, rates):
    rates(auth_token="1/min")
    credentials = {"username": user.username, "password": "correct horse battery staple"}
    assert api_client.post(TOKEN, credentials, REMOTE_ADDR="10.0.0.1").status_code == 200
    spoofed = api_client.post(TOKEN, credentials, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="10.9.9.9")
    assert spoofed.status_code == 429
    assert api_client.post(TOKEN, credentials, REMOTE_ADDR="10.0.0.2").status_code == 200


def test_the_app_api_is_throttled_per_address(api_client, user, rates):
    rates(app="2/min")
    AppFactory(owner=user, api_key="wk_throttled", api_secret="s3cret-of-the-app", rate_limit_per_minute=1000)
    credentials = {"HTTP_AUTHORIZATION": "Bearer wk_throttled:s3cret-of-the-app"}
    history = "/api/v1/app/chats/c1/history/"

    statuses = [api_client.get(history, **credentials).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    assert api_client.get(history, **credentials, REMOTE_ADDR="10.0.0.3").status_code == 200


def test_the_app_api_counts_a_call_with_wrong_credentials_against_the_address_too(api_client, user, rates):
    """The address's hit is read with the call's other checks, before its credentials are tried."""
    rates(app="2/min")
    AppFactory(owner=user, api_key="wk_counted", api_secret="s3cret-of-the-app", rate_limit_per_minute=1000)
    history = "/api/v1/app/chats/c1/history/"

    wrong = api_client.get(history, HTTP_AUTHORIZATION="Bearer wk_counted:not-the-secret")
    right = [
        api_client.get(history, HTTP_AUTHORIZATION="Bearer wk_counted:s3cret-of-the-app").status_code for _ in range(2)
    ]

    assert wrong.status_code == 401
    assert right == [200, 429]


@pytest.mark.parametrize(("rate", "parsed"), [("30/min", (30, 60)), ("5/s", (5, 1)), ("100/hour", (100, 3600))])
def test_rates_read_like_drfs(rate, parsed):
    assert throttle_rate_parse(rate) == parsed


@pytest.mark.parametrize("rate", ["30", "x/min", "30/fortnight", "-1/min"])
def test_a_bad_rate_is_a_configuration_error_naming_it(rate):
    with pytest.raises(ImproperlyConfigured, match="30/min"):
        throttle_rate_parse(rate)
