"""The app API's per-minute limit under a local-memory cache that culls its keys: answered, never a 500."""

import pytest

from tests.app_api.conftest import bearer, post_json, run_path
from tests.fakes.caches import CullingCache, cache_use

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_app_call_under_culling_is_answered_not_a_500(settings, api_client, app, licensed, published):
    cache_use(settings, CullingCache, MAX_ENTRIES=1, CULL_FREQUENCY=1)
    app.rate_limit_per_minute = 1
    app.save(update_fields=["rate_limit_per_minute"])

    statuses = [
        post_json(api_client, run_path(published), {"inputs": {"city": "Oslo"}}, **bearer(app)).status_code
        for _ in range(2)
    ]

    # Each count is culled before it is read: the calls go through uncounted rather than failing.
    assert statuses == [202, 202]
