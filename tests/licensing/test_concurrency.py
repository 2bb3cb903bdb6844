"""Two requests racing for the same unique row: one wins, the other is a clean conflict."""

import threading

import pytest
from django.conf import settings
from django.db import connection

from config.errors import Conflict
from licensing.models import License
from licensing.services import license_grant
from tests.factories import AppFactory, UserFactory, WorkflowFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
        reason="needs PostgreSQL for concurrent transactions",
    ),
]


def test_racing_grants_give_one_license_and_one_conflict():
    user = UserFactory()
    app, workflow = AppFactory(owner=user), WorkflowFactory(owner=user)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def grant():
        try:
            start.wait()
            license_grant(app=app, workflow=workflow, actor=user)
            outcomes.append("granted")
        except Conflict as conflict:
            outcomes.append(f"conflict:{conflict.field}")
        finally:
            connection.close()

    threads = [threading.Thread(target=grant) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["conflict:group", "granted"]
    assert License.objects.filter(app=app, group=workflow).count() == 1
