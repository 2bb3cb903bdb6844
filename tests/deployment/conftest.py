import sys
import time

import pytest
from django.conf import settings

from .cluster import Deployment


@pytest.fixture
def deployment(transactional_db, tmp_path_factory):
    """Two servers, three workers (parked) and one beat on this test's database; stopped before it is flushed."""
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql") or not settings.REDIS_URL:
        pytest.skip("needs PostgreSQL and Redis")
    started = time.monotonic()
    deployment = Deployment(logs=tmp_path_factory.mktemp("deployment"))
    try:
        for _ in range(2):
            deployment.server_start()
        for _ in range(3):
            deployment.worker_start()
        deployment.beat_start()
        deployment.wait_ready()
        sys.stderr.write(f"\n[deployment up in {time.monotonic() - started:.1f} s, logs in {deployment.logs}]\n")
        yield deployment
    finally:
        deployment.stop()
