"""The app API refuses JSON nested too deep and bodies too large, signed or not, in its JSON shape."""

import json

import pytest

from tests.app_api.conftest import bearer, run_path, signed_headers
from tests.test_input_limits import assert_too_deep, assert_too_large, nested, post

pytestmark = pytest.mark.django_db


def test_the_app_api_refuses_deep_json(api_client, app, published, licensed):
    text = f'{{"inputs": {{"city": {nested(10_000)}}}}}'
    assert_too_deep(post(api_client, run_path(published), text, **bearer(app)))
    signed = signed_headers(app, method="POST", path=run_path(published), body=text.encode())
    assert_too_deep(post(api_client, run_path(published), text, **signed))


def test_a_signed_app_call_over_the_limit_is_a_json_413(api_client, app, published, licensed, settings):
    # The signature check reads request.body, where Django itself refuses the size.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"inputs": {"city": "x" * 1000}}).encode()
    signed = signed_headers(app, method="POST", path=run_path(published), body=body)
    response = api_client.post(run_path(published), data=body, content_type="application/json", **signed)
    assert_too_large(response, 1000)
