import os
import shutil
import tempfile
import uuid

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from tests.factories import UserFactory

pytest_plugins = ["tests.fakes.fixtures", "tests.deployment.figures", "tests.engine.sandbox_probe"]


def services_required() -> bool:
    return os.environ.get("WEFT_REQUIRE_SERVICES") == "1"


def pytest_collection_modifyitems(config, items):
    _slow_ones_first(items)
    _services_skipped_without_them(items)


#: The longest tests (a fuzzer against a live server, a minute or more each).
LONGEST_MODULES = ("tests/platform/test_schemathesis.py",)


def _slow_ones_first(items) -> None:
    """The slow tests that use no test database go first, the longest of them at the very front.

    pytest-django puts the tests without a database last; pytest-xdist hands tests out in order, so the
    fuzzer's minutes used to start when the other worker had nearly finished, and the run waited for
    it. Begun first, they overlap with the rest. The database tests keep pytest-django's order among
    themselves (transactional ones after the others).
    """

    def rank(item) -> int:
        if not item.get_closest_marker("slow") or _uses_database(item):
            return 2
        return 0 if item.nodeid.startswith(LONGEST_MODULES) else 1

    items.sort(key=rank)


def _uses_database(item) -> bool:
    fixtures = getattr(item, "fixturenames", ())
    return bool(item.get_closest_marker("django_db")) or any(
        name in fixtures for name in ("db", "transactional_db", "live_server", "django_db_setup")
    )


def _services_skipped_without_them(items) -> None:
    """Tests marked `services` need PostgreSQL and Redis: skipped without them (CI refuses to start
    without them, see pytest_sessionstart)."""
    have_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    have_redis = bool(settings.REDIS_URL)
    if have_postgres and have_redis:
        return
    missing = ", ".join(
        name for name, present in (("DATABASE_URL=postgres", have_postgres), ("REDIS_URL", have_redis)) if not present
    )
    for item in items:
        if "services" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"needs {missing}"))


def pytest_sessionstart(session):
    if services_required():
        engine = settings.DATABASES["default"]["ENGINE"]
        if not engine.endswith("postgresql") or not settings.REDIS_URL:
            raise pytest.UsageError("WEFT_REQUIRE_SERVICES=1 but DATABASE_URL is not PostgreSQL or REDIS_URL is unset")
    _outputs_in_a_temporary_folder(session)


def _outputs_in_a_temporary_folder(session) -> None:
    """Large outputs the tests store (this process's and the servers' it starts) go to a folder of
    the session's, removed at its end, never to the checkout's var/outputs."""
    if settings.STORAGES["outputs"]["BACKEND"] != "django.core.files.storage.FileSystemStorage":
        return
    folder = tempfile.mkdtemp(prefix="weft-test-outputs-")
    outputs = {**settings.STORAGES["outputs"], "OPTIONS": {"location": folder}}
    settings.STORAGES = {**settings.STORAGES, "outputs": outputs}
    os.environ["WEFT_OUTPUTS_ROOT"] = folder
    session.config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def staff_user(db):
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def client_for():
    """An API client signed in as the given user."""

    def make(user) -> APIClient:
        client = APIClient()
        client.force_authenticate(user=user)
        return client

    return make


@pytest.fixture
def user_client(user, client_for):
    return client_for(user)


@pytest.fixture
def other_client(other_user, client_for):
    return client_for(other_user)


@pytest.fixture(autouse=True)
def isolated_cache(settings):
    """Each test counts rate limits and quotas from zero, even on a Redis shared by parallel workers."""
    settings.CACHES = {
        name: {**config, "KEY_PREFIX": f"test-{uuid.uuid4().hex[:12]}"} for name, config in settings.CACHES.items()
    }


@pytest.fixture(autouse=True)
def embedded_runs_finish():
    """A run a test started in the embedded engine ends before the test's database goes away."""
    yield
    from workflows.execution.run_loop import server_run_loop

    if not server_run_loop.wait_idle(timeout=30):
        pytest.fail("A run started by this test was still executing 30 s after it ended.")
