"""A run start's quota reservation costs one round trip to the database and one to Redis (embedded
mode: two to the database), counted where they arrive: the queries Django sends, the commands
the Redis server receives. A refusal costs the same, and takes nothing."""

import contextlib
import uuid
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from config.errors import QuotaExceeded
from config.redis_connection import redis_client
from tests.factories import WorkflowFactory
from workflows.quotas import run_quota_reserve

pytestmark = pytest.mark.usefixtures("undispatched")


@contextlib.contextmanager
def redis_commands_received() -> Iterator[list[str]]:
    """The names of the commands the Redis server receives from this process's shared client during the block.

    Watched with MONITOR on a connection of its own; the commands a script runs are not round trips
    and are left out. A marker sent after the block says that every command before it has been seen.
    Only the shared client's connection counts (its address, asked of the server before the block;
    a single thread gets the same pooled connection back): the tests of other processes use the
    same Redis database at the same time.
    """
    watcher, sender = (redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10) for _ in range(2))
    sender.ping()  # its connection is open before the watch starts
    ours = redis_client().client_info()["addr"]
    marker = f"end-of-block-{uuid.uuid4()}"
    received: list[str] = []
    with watcher.monitor() as monitor:
        yield received
        sender.echo(marker)
        while (command := monitor.next_command())["command"] != f"ECHO {marker}":
            client = f"{command.get('client_address')}:{command.get('client_port')}"
            if client == ours and command.get("client_type") != "lua":
                received.append(command["command"].split(" ", 1)[0])
    watcher.close()
    sender.close()


def reserve(workflow, user) -> None:
    with transaction.atomic(), run_quota_reserve(workflow=workflow, user=user):
        pass


def round_trips(workflow, user, *, counting: str) -> tuple[int, list[str]]:
    """The queries and the Redis commands of one reservation, inside a transaction as run_start makes it."""
    watch = redis_commands_received() if counting == "redis" else contextlib.nullcontext([])
    with (
        transaction.atomic(),
        CaptureQueriesContext(connection) as queries,
        watch as commands,
        contextlib.suppress(QuotaExceeded),
        run_quota_reserve(workflow=workflow, user=user),
    ):
        pass
    return len(queries), commands


@pytest.mark.parametrize("refused", [False, True], ids=["granted", "refused for the day"])
def test_a_reservation_costs_one_database_round_trip_and_one_redis_command(
    counting, refused, user, runnable, set_quota
):
    set_quota(user, runs_per_day=2 if refused else 100)
    reserve(runnable, user)  # the script is loaded and the connections are open
    if refused:
        reserve(runnable, user)

    queries, commands = round_trips(runnable, user, counting=counting)

    assert (queries, commands) == ((1, ["EVALSHA"]) if counting == "redis" else (2, []))


def test_a_start_refused_for_its_workflow_does_not_count_for_its_user(counting, user, runnable, set_quota):
    set_quota(user, runs_per_day=2, workflow_runs_per_day=1)
    other = WorkflowFactory(owner=user)
    reserve(runnable, user)
    with pytest.raises(QuotaExceeded) as full_workflow:
        reserve(runnable, user)
    reserve(other, user)  # the refusal above left the user's count at 1
    with pytest.raises(QuotaExceeded) as full_day:
        reserve(other, user)

    assert full_workflow.value.extra["quota"] == "workflow_runs_per_day"
    assert full_day.value.extra["quota"] == "runs_per_day"
