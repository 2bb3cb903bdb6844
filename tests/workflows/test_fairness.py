"""Fair shares of a worker's runs: the places, what a worker does with a run's message, the task."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from observability.metrics import REGISTRY
from tests.factories import RunFactory, UserFactory, WorkflowFactory
from workflows.execution import fairness
from workflows.execution.fairness import Turn, WorkerShares, run_deferral, run_following, run_turn
from workflows.execution.reaper import runs_reap
from workflows.models import Run

# --- the places ---------------------------------------------------------------------------------


def ids(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


def test_a_user_takes_places_up_to_their_share_and_other_users_are_unaffected():
    shares = WorkerShares(share=2)
    r1, r2, r3, r4, r5 = ids(5)

    assert [shares.take(1, r1), shares.take(1, r2), shares.take(1, r3)] == [True, True, False]
    assert shares.take(2, r4)
    assert (shares.held(1), shares.held(2)) == (2, 1)
    shares.give_back(1)
    assert shares.take(1, r5)
    assert not shares.take(1, r3)


def test_places_given_back_are_forgotten():
    shares = WorkerShares(share=1)
    shares.take(7, uuid.uuid4())
    shares.give_back(7)

    assert shares.held(7) == 0
    with pytest.raises(KeyError):
        shares.give_back(7)


def test_without_a_share_a_user_takes_any_number_of_places():
    shares = WorkerShares()

    assert all(shares.take(1, run_id) for run_id in ids(500))


@pytest.mark.parametrize(("concurrency", "share"), [(64, 32), (16, 8), (5, 3), (1, 1)])
def test_the_share_is_half_the_worker_concurrency_by_default(settings, concurrency, share):
    settings.WEFT = {**settings.WEFT, "WORKER_USER_SHARE": None}
    shares = WorkerShares()

    shares.configure(concurrency=concurrency)

    assert (shares.share, shares.concurrency) == (share, concurrency)


def test_the_operator_sets_the_share(settings):
    settings.WEFT = {**settings.WEFT, "WORKER_USER_SHARE": 5}
    shares = WorkerShares()

    shares.configure(concurrency=64)

    assert shares.share == 5


def test_threads_taking_places_at_once_never_exceed_the_share():
    shares = WorkerShares(share=3)
    start = threading.Barrier(24)
    taken = []

    def take():
        start.wait()
        taken.append(shares.take(1, uuid.uuid4()))

    threads = [threading.Thread(target=take) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert taken.count(True) == 3
    assert shares.held(1) == 3
    assert len(shares.line(1)) == 21


def test_runs_refused_a_place_wait_in_their_users_line_in_order_once_each():
    shares = WorkerShares(share=1, concurrency=4)
    holder, r1, r2, r3 = ids(4)
    shares.take(1, holder)

    for run_id in (r1, r2, r1, r3, r2):
        assert not shares.take(1, run_id)

    assert shares.line(1) == [r1, r2, r3]
    assert shares.line(2) == []
    assert shares.next_in_line(1) == r1
    assert shares.line(1) == [r2, r3]


def test_a_run_that_takes_a_place_leaves_the_line():
    shares = WorkerShares(share=2, concurrency=4)
    h1, h2, r1, r2 = ids(4)
    shares.take(1, h1)
    shares.take(1, h2)
    shares.take(1, r1)
    shares.take(1, r2)
    shares.give_back(1)

    assert shares.take(1, r2)
    assert shares.line(1) == [r1]


def test_a_users_line_goes_with_their_last_place_here():
    shares = WorkerShares(share=1, concurrency=4)
    holder, waiting = ids(2)
    shares.take(1, holder)
    shares.take(1, waiting)

    shares.give_back(1)

    assert shares.line(1) == []
    assert shares.next_in_line(1) is None


def test_the_line_moves_on_only_while_a_thread_is_spare_and_the_worker_is_not_stopping():
    shares = WorkerShares(share=1, concurrency=2)
    holder, r1, r2 = ids(3)
    shares.take(1, holder)
    shares.take(1, r1)
    shares.take(1, r2)

    with shares.thread_busy(), shares.thread_busy():
        assert shares.next_in_line(1) is None  # a message may be waiting for a thread
    with shares.thread_busy():
        assert shares.next_in_line(1) == r1
    shares.stop()
    assert shares.next_in_line(1) is None
    assert shares.line(1) == [r2]
    unconfigured = WorkerShares(share=1)  # outside a worker: no thread to speak of
    unconfigured.take(1, holder)
    unconfigured.take(1, r1)
    assert unconfigured.next_in_line(1) is None


# --- what a worker does with a run's message --------------------------------------------------


def make_run(*, owner=None, created_ago: float = 0, **fields) -> Run:
    run = RunFactory(workflow=WorkflowFactory(owner=owner or UserFactory()), **fields)
    if created_ago:
        then = timezone.now() - timedelta(seconds=created_ago)
        Run.objects.filter(pk=run.pk).update(created_at=then, updated_at=then)
        run.refresh_from_db()
    return run


@pytest.mark.django_db
def test_a_run_of_a_user_below_their_share_is_executed_in_a_place_taken_for_it():
    run = make_run()
    shares = WorkerShares(share=1)

    turn = run_turn(run_id=str(run.pk), shares=shares)

    assert (turn.user_id, turn.execute, turn.defer) == (run.triggered_by_id, True, False)
    assert shares.held(run.triggered_by_id) == 1
    run.refresh_from_db()
    assert (run.status, run.dispatch_attempts) == ("pending", 0)  # claimed later, by the run's journal


@pytest.mark.django_db
def test_a_run_of_a_user_at_their_share_is_given_back_unclaimed_and_another_users_run_goes_ahead():
    run = make_run()
    other = make_run()
    shares = WorkerShares(share=1)
    shares.take(run.triggered_by_id, uuid.uuid4())

    turn = run_turn(run_id=run.pk, shares=shares)
    other_turn = run_turn(run_id=other.pk, shares=shares)

    assert (turn.defer, turn.execute, turn.user_id) == (True, False, run.triggered_by_id)
    assert shares.held(run.triggered_by_id) == 1
    assert shares.line(run.triggered_by_id) == [run.pk]
    run.refresh_from_db()
    assert (run.status, run.dispatch_attempts, run.lease_owner) == ("pending", 0, "")
    assert (other_turn.defer, other_turn.execute) == (False, True)


@pytest.mark.django_db
def test_a_run_a_client_app_started_counts_for_the_workflows_owner():
    owner = UserFactory()
    run = make_run(owner=owner, triggered_by=None)
    shares = WorkerShares(share=1)
    shares.take(owner.pk, uuid.uuid4())

    turn = run_turn(run_id=run.pk, shares=shares)

    assert (turn.user_id, turn.defer) == (owner.pk, True)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "fields",
    [{"status": "succeeded"}, {"status": "cancelled"}, {"status": "running", "lease_owner": "elsewhere"}],
)
def test_a_run_no_worker_may_claim_is_neither_executed_nor_given_back(fields):
    if fields["status"] == "running":
        fields = {**fields, "lease_expires_at": timezone.now() + timedelta(seconds=30)}
    run = make_run(**fields)
    shares = WorkerShares(share=1)

    assert run_turn(run_id=run.pk, shares=shares) == Turn()
    assert run_turn(run_id=uuid.uuid4(), shares=shares) == Turn()
    assert shares.held(run.triggered_by_id) == 0


@pytest.mark.django_db
def test_outside_a_worker_with_places_to_share_a_message_is_executed_without_a_query(django_assert_num_queries):
    shares = WorkerShares()  # a prefork child, an eager call

    with django_assert_num_queries(0):
        turn = run_turn(run_id=uuid.uuid4(), shares=shares)

    assert turn == Turn(execute=True)
    shares.give_back(turn.user_id)


@pytest.mark.django_db
def test_a_place_goes_on_with_the_first_run_of_its_users_line_that_is_still_claimable():
    owner = UserFactory()
    done, waiting, later = make_run(owner=owner, status="succeeded"), make_run(owner=owner), make_run(owner=owner)
    shares = WorkerShares(share=1, concurrency=2)
    shares.take(owner.pk, uuid.uuid4())
    for run in (done, waiting, later):
        shares.take(owner.pk, run.pk)

    assert run_following(user_id=owner.pk, shares=shares) == waiting.pk
    assert shares.line(owner.pk) == [later.pk]


# --- deferrals --------------------------------------------------------------------------------


def deferred_total() -> float:
    return REGISTRY.get_sample_value("weft_runs_deferred_total") or 0.0


@pytest.mark.django_db
def test_a_deferral_keeps_the_reaper_off_a_run_whose_message_is_alive(settings):
    settings.WEFT = {**settings.WEFT, "ENGINE": {**settings.WEFT["ENGINE"], "PENDING_REDISPATCH_S": 60.0}}
    deferred = make_run(created_ago=120)
    lost = make_run(created_ago=120)
    shares = WorkerShares(share=1)
    shares.take(deferred.triggered_by_id, uuid.uuid4())
    turn = run_turn(run_id=deferred.pk, shares=shares)

    run_deferral(run_id=deferred.pk, turn=turn, deferrals=0)

    assert runs_reap()["redispatched"] == 1  # the run whose message was lost, not the deferred one
    assert Run.objects.get(pk=lost.pk).updated_at > lost.updated_at
    assert Run.objects.get(pk=deferred.pk).status == "pending"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("pending_redispatch_s", "expected"),
    [(60.0, [2.0, 4.0, 8.0, 15.0, 15.0, 15.0]), (8.0, [2.0, 2.0, 2.0, 2.0, 2.0, 2.0])],
)
def test_deferrals_of_a_run_come_back_later_and_later_and_are_counted(
    settings, django_assert_num_queries, pending_redispatch_s, expected
):
    """Up to DEFER_LONGEST_S, and never more than a quarter of the reaper's patience with a pending run."""
    settings.WEFT = {
        **settings.WEFT,
        "ENGINE": {**settings.WEFT["ENGINE"], "PENDING_REDISPATCH_S": pending_redispatch_s},
    }
    run = make_run()
    turn = Turn(user_id=run.triggered_by_id, defer=True, updated_at=timezone.now())
    before = deferred_total()

    with django_assert_num_queries(0):  # updated just now: nothing to tell the reaper
        countdowns = [run_deferral(run_id=run.pk, turn=turn, deferrals=n) for n in range(6)]

    assert countdowns == expected
    assert deferred_total() - before == 6


# --- the Celery task ----------------------------------------------------------------------------


@pytest.fixture
def worker(monkeypatch):
    """The process's places (a share of two, four task threads) and the messages the task gives back (not sent)."""
    from workflows.tasks import run_execute_task

    shares = WorkerShares(share=2, concurrency=4)
    monkeypatch.setattr(fairness, "worker_shares", shares)
    sent = []
    monkeypatch.setattr(
        run_execute_task,
        "apply_async",
        lambda args, kwargs=None, countdown=None: sent.append((args, kwargs or {}, countdown)),
    )
    return shares, sent


def deliver(message) -> None:
    from workflows.tasks import run_execute_task

    args, kwargs, _ = message
    run_execute_task.apply(args=args, kwargs=kwargs)


def started(run: Run) -> int:
    return run.events.filter(type="run.started").count()


@pytest.mark.django_db(transaction=True)
def test_the_task_gives_a_run_back_until_its_user_has_a_place_then_executes_it_once(worker):
    shares, sent = worker
    run = make_run()
    user_id = run.triggered_by_id
    shares.take(user_id, uuid.uuid4())  # two other runs of the same user hold their share
    shares.take(user_id, uuid.uuid4())

    deliver(([str(run.pk)], {}, None))
    deliver(sent[-1])

    assert sent == [([str(run.pk)], {"deferrals": 1}, 2.0), ([str(run.pk)], {"deferrals": 2}, 4.0)]
    assert Run.objects.get(pk=run.pk).status == "pending"

    shares.give_back(user_id)
    deliver(sent[-1])
    deliver(([str(run.pk)], {}, None))  # a late duplicate message finds nothing to do

    run.refresh_from_db()
    assert (run.status, run.dispatch_attempts) == ("succeeded", 1)
    assert started(run) == 1
    assert shares.held(user_id) == 1
    assert len(sent) == 2


@pytest.mark.django_db(transaction=True)
def test_a_place_goes_on_with_its_users_line_in_order_while_a_thread_is_spare(worker):
    shares, sent = worker
    owner = UserFactory()
    backlog = [make_run(owner=owner) for _ in range(4)]
    shares.take(owner.pk, uuid.uuid4())  # two other runs of the user hold their share
    shares.take(owner.pk, uuid.uuid4())
    for run in backlog:
        deliver(([str(run.pk)], {}, None))  # each given back, and in the user's line here
    shares.give_back(owner.pk)  # one of the two ends

    deliver(sent[0])  # the first run's message comes back: its place then takes the rest of the line

    runs = [Run.objects.get(pk=run.pk) for run in backlog]
    assert [(run.status, run.dispatch_attempts) for run in runs] == [("succeeded", 1)] * 4
    assert [run.started_at for run in runs] == sorted(run.started_at for run in runs)
    assert shares.line(owner.pk) == []
    for message in sent[1:]:
        deliver(message)  # the other messages come back and find their runs done
    assert [started(run) for run in runs] == [1] * 4
    assert len(sent) == 4


@pytest.mark.django_db(transaction=True)
def test_with_no_thread_to_spare_a_place_gives_its_thread_back_and_hands_the_next_run_to_the_queue(worker):
    shares, sent = worker
    shares.concurrency = 1
    owner = UserFactory()
    first, second = make_run(owner=owner), make_run(owner=owner)
    shares.take(owner.pk, uuid.uuid4())
    shares.take(owner.pk, uuid.uuid4())
    deliver(([str(second.pk)], {}, None))
    shares.give_back(owner.pk)

    deliver(([str(first.pk)], {}, None))

    assert Run.objects.get(pk=first.pk).status == "succeeded"
    assert Run.objects.get(pk=second.pk).status == "pending"
    assert sent == [([str(second.pk)], {"deferrals": 1}, 2.0), ([str(second.pk)], {}, None)]  # at once
    assert shares.line(owner.pk) == []

    deliver(sent[-1])

    assert Run.objects.get(pk=second.pk).status == "succeeded"
