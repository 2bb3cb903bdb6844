import shutil
import sys
import time

import pytest
from django.conf import settings

from tests.conftest import services_required

from .cluster import Deployment, PrivatePostgres, PrivateRedis, ServiceHome, postgres_bin


@pytest.fixture
def deployment(transactional_db, tmp_path_factory):
    """Two servers, three workers (parked) and one beat on this test's database; stopped before it is flushed."""
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql") or not settings.REDIS_URL:
        pytest.skip("needs PostgreSQL and Redis")
    started = time.monotonic()
    deployment = Deployment(logs=tmp_path_factory.mktemp("deployment"))
    try:
        deployment.start()
        sys.stderr.write(f"\n[deployment up in {time.monotonic() - started:.1f} s, logs in {deployment.logs}]\n")
        yield deployment
    finally:
        deployment.stop()


def _service_programs_missing() -> str:
    try:
        postgres_bin("initdb")
        postgres_bin("postgres")
    except FileNotFoundError as missing:
        return str(missing)
    return "" if shutil.which("redis-server") else "redis-server"


@pytest.fixture
def private_deployment(tmp_path_factory):
    """Two servers, three workers (consuming) and one beat on a PostgreSQL and a Redis of their own.

    A test may stop and start these services (``.postgres``, ``.redis``) without touching the
    ones the rest of the suite shares. Yields the Deployment, its database migrated.
    """
    if missing := _service_programs_missing():
        message = f"a private PostgreSQL and Redis need {missing}"
        if services_required():
            pytest.fail(message)
        pytest.skip(message)
    started = time.monotonic()
    logs = tmp_path_factory.mktemp("private-deployment")
    home = ServiceHome()
    postgres = redis = deployment = None
    try:
        postgres = PrivatePostgres(home, logs=logs)
        postgres.start()
        redis = PrivateRedis(home, logs=logs)
        redis.start()
        database_url = postgres.database_create("weft")
        deployment = Deployment(logs=logs, database_url=database_url, redis_url=redis.url, parked=False)
        deployment.postgres, deployment.redis = postgres, redis
        deployment.manage("migrate", "--noinput")
        deployment.start()
        sys.stderr.write(f"\n[private deployment up in {time.monotonic() - started:.1f} s, logs in {logs}]\n")
        yield deployment
    finally:
        if deployment is not None:
            deployment.stop()
        for service in (redis, postgres):
            if service is not None:
                service.stop()
        home.remove()
