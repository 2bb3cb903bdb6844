"""The run's journal in the database: a ``run_events`` row per event, a ``tasks`` row per node execution.

All of one run's database work happens on one thread of its own (one connection, writes in
the order they were made). Events are written by group commit: ``record`` gives the event its
``seq`` at once and queues it; one writer task commits what is queued in one transaction (the
events in one INSERT, each touched task row once, and ``Run.last_seq`` moved from the first
``seq`` of the batch to its last by one UPDATE guarded by the lease), so a worker that lost the
run to another cannot write and ``seq`` has neither gaps nor duplicates.

A queued event waits at most :data:`LINGER_S` for company. ``record(..., durable=True)`` (the
outcome of a node with effects outside the run, any node's failure), ``flush`` (before such a
node executes) and ``finish`` commit at once and return only once their batch is committed: a
node with effects therefore never acts on what a crash could lose, and a node whose success
was stored is never executed again. A crash loses at most the last ``LINGER_S`` of non-durable
events (a ``node.started`` whose node was not done yet, the outcome of a computation such as a
template or code node: they run again on resume). Events are streamed after their batch
commits, in ``seq`` order, by one publisher task.

On PostgreSQL a batch is one statement (one round trip), its table and column names read from
the models' ``_meta``; on another database (SQLite: the embedded mode) the ORM writes it in one
transaction. The journal's tests (``pytest -m journal``) run on both: ``make test-journal-sqlite``.

On PostgreSQL the batches before the run's end commit without waiting for the WAL flush (unless
``JOURNAL_SYNCHRONOUS_COMMIT``): a worker's crash loses nothing committed, a crash of the
database server may lose the last fraction of a second (those nodes run again on resume), and
a node costs a commit, not a disk flush. The final batch waits for the flush.

No value can break the journal: what a batch writes is cleaned by the rule of
``workflows.engine.outputs`` (NUL and lone surrogates replaced, NaN and ±Infinity made null;
one encoding of the batch tells whether anything needs it). If the database refuses a batch
for its data all the same, its events are written one by one, and one it refuses is written
without its data: a node's success becomes a failure saying its output could not be stored
(``OutputNotStored`` for the executor, which applies the node's ``on_failure``), the run's
success a failure. Only a lost lease or a lost database stops the journal.

An output over ``OUTPUT_STORE_ABOVE_BYTES`` (a node's, the run's) is written to object storage
before the batch that refers to it, which keeps a reference instead (``large_outputs``); storage
that refuses it fails the node as a refused value does. A resumed run reads stored outputs back.
"""

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import DataError, IntegrityError, close_old_connections, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from config.conf import weft_settings
from config.db import prepared_cursor
from workflows.engine import (
    LeaseLost,
    OutputInvalid,
    OutputNotStored,
    TaskChange,
    TaskRecord,
    cleaned,
    json_text,
    storable_json,
)
from workflows.models import Run, RunEvent, RunStatus, Task, TaskStatus
from workflows.usage import RAN, modelless_usage_insert_sql

from . import live
from .large_outputs import OutputStore, OutputStoreFailed, StoredOutputGone, output_loaded

logger = logging.getLogger(__name__)

OPEN_TASK_STATUSES = (TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.RETRYING)
#: How long a non-durable event may wait for others to share its transaction (seconds).
LINGER_S = 0.002
#: Characters of the database's complaint kept in the error of an event written without its data.
REASON_MAX_CHARS = 200

#: Where a crash point (``DatabaseJournal(crash_at=...)``) may stop the journal as a killed worker
#: stops: before a batch's transaction commits (nothing of the batch is stored) or after it did
#: (all of it is, and nobody learns it: no waiter returns, nothing is streamed).
BEFORE_COMMIT = "before commit"
AFTER_COMMIT = "after commit"


class WorkerKilled(Exception):
    """A crash point stopped the journal: as after ``kill -9``, it writes and streams nothing more."""


#: Asked at each point of each batch with the batch's events, ``(seq, type, node id)``: True kills
#: the worker there. Tests use it to see what a crash leaves stored; in production there is none.
CrashPoint = Callable[[str, list[tuple[int, str, str]]], bool]


class _Names:
    """A model's table and its fields' columns, quoted, and the fields' database types: from ``_meta``."""

    def __init__(self, model):
        self.meta = model._meta
        self.table = connection.ops.quote_name(self.meta.db_table)

    def __getitem__(self, field_name: str) -> str:
        return connection.ops.quote_name(self.meta.get_field(field_name).column)

    def type(self, field_name: str) -> str:
        return self.meta.get_field(field_name).db_type(connection)

    def columns(self, field_names: list[str]) -> str:
        return ", ".join(self[name] for name in field_names)


def _key(name: str) -> str:
    """A key of the JSON rows a statement reads (a field's name), as ``jsonb_to_recordset`` names it."""
    return connection.ops.quote_name(name)


@functools.cache
def _batch_sql(*, final: bool, deferred: bool = False, metered: bool = False) -> str:
    """A batch in one statement (PostgreSQL), its table and column names read from the models.

    ``deferred``: the commit of a batch that is not final does not wait for the WAL flush (set for
    the statement's own transaction, so a pooled connection goes back as it came). The lease guard
    moves the run's ``last_seq``, and the events and the task rows are written
    only through the row it returned (none: nothing is). Each kind of row arrives as one JSON
    array (a key per field), read by ``jsonb_to_recordset``; a task's output arrives as JSON text
    of its own (cleaned and checked apart). The run's ``final`` batch also sets the run's end
    with the guard; cancels the task rows still open that it does not write (those it writes
    were closed before, in Python: one statement may not update a row twice); and its commit
    waits for the WAL flush (``set_config(..., is_local => true)`` lasts until the statement's
    own transaction commits). ``metered``: the final batch also writes the usage row of a run that
    used no model (``workflows.usage``), from the run as it ended, its node count a parameter.
    """
    runs, events, tasks = _Names(Run), _Names(RunEvent), _Names(Task)
    event_fields = ["seq", "type", "node_id", "data", "at"]
    replaced = ["status", "output_data", "error", "attempt", "retry_count", "events"]
    row_fields = [*replaced, "started_at", "finished_at"]
    created_fields = ["id", "node_id", "node_type", "scope", "name", *row_fields]
    changed_fields = ["id", *row_fields]
    as_text = {"output_data"}

    def record(names: _Names, field_names: list[str], **extra: str) -> str:
        kinds = {name: "text" if name in as_text else names.type(name) for name in field_names}
        return ", ".join(f"{_key(name)} {kind}" for name, kind in {**kinds, **extra}.items())

    def value(alias: str, names: _Names, name: str) -> str:
        read = f"{alias}.{_key(name)}"
        return f"{read}::{names.type(name)}" if name in as_text else read

    end = ""
    if final:
        end = (
            f", {runs['status']} = %s, {runs['outputs']} = %s::{runs.type('outputs')}, {runs['error']} = %s,"
            f" {runs['finished_at']} = %s, {runs['updated_at']} = %s, {runs['lease_owner']} = '',"
            f" {runs['lease_expires_at']} = NULL"
        )
    changed = [f"{tasks[name]} = {value('t', tasks, name)}" for name in replaced]
    changed += [
        f"{tasks['started_at']} = COALESCE({tasks.table}.{tasks['started_at']}, t.{_key('started_at')})",
        f"{tasks['finished_at']} = CASE WHEN t.{_key('touch_finished')} THEN t.{_key('finished_at')}"
        f" ELSE {tasks.table}.{tasks['finished_at']} END",
    ]
    returning = f"{runs['id']} AS id, {runs['created_at']}"
    if metered:  # what the usage row is made of, as the run ended
        used = ["id", "triggered_by", "app", "workflow", "finished_at", "started_at", "created_at"]
        returning = ", ".join(runs[name] for name in used)
    # Every name is a model's, quoted; every value a parameter.
    statement = f"""
WITH moved AS (
    UPDATE {runs.table} SET {runs["last_seq"]} = %s{end}
    WHERE {runs["id"]} = %s AND {runs["lease_owner"]} = %s AND {runs["last_seq"]} = %s
    RETURNING {returning}
), events AS (
    INSERT INTO {events.table} ({events["run"]}, {events["run_created_at"]}, {events.columns(event_fields)})
    SELECT moved.id, moved.{runs["created_at"]}, {", ".join(value("e", events, name) for name in event_fields)}
    FROM moved, jsonb_to_recordset(%s::jsonb) AS e({record(events, event_fields)})
), created AS (
    INSERT INTO {tasks.table} (
        {tasks["run"]}, {tasks["description"]}, {tasks["created_at"]}, {tasks.columns(created_fields)}
    )
    SELECT moved.id, '', now(), {", ".join(value("t", tasks, name) for name in created_fields)}
    FROM moved, jsonb_to_recordset(%s::jsonb) AS t({record(tasks, created_fields)})
), changed AS (
    UPDATE {tasks.table} SET {", ".join(changed)}
    FROM moved, jsonb_to_recordset(%s::jsonb) AS t({record(tasks, changed_fields, touch_finished="boolean")})
    WHERE {tasks.table}.{tasks["id"]} = t.{_key("id")}
)"""  # noqa: S608
    if not final:
        # Deferred: its commit does not wait for the WAL flush (JOURNAL_SYNCHRONOUS_COMMIT off).
        flush = ", (SELECT set_config('synchronous_commit', 'off', true)) AS deferred" if deferred else ""
        return f"{statement}\nSELECT count(*) FROM moved{flush}"
    meter = f", metered AS (\n{modelless_usage_insert_sql(run='moved')}\n)" if metered else ""
    return f"""{statement}, closed AS (
    UPDATE {tasks.table} SET {tasks["status"]} = %s, {tasks["finished_at"]} = %s
    FROM moved
    WHERE {tasks.table}.{tasks["run"]} = moved.id AND {tasks.table}.{tasks["status"]} = ANY(%s)
        AND {tasks.table}.{tasks["id"]} <> ALL(%s::{tasks.type("id")}[])
){meter}
SELECT count(*) FROM moved, (SELECT set_config('synchronous_commit', 'on', true)) AS durable"""  # noqa: S608


@functools.cache
def _claim_sql() -> str:
    """The claim in one statement (PostgreSQL): :func:`claimable_condition`'s guard, the lease, and the
    run's row back (``RETURNING``, with ``has_tasks``: whether a previous claim wrote any), its names
    read from the models. Its commit does not wait for the WAL flush: a claim lost with a crash of
    the database leaves the run claimable, as it was."""
    runs, tasks = _Names(Run), _Names(Task)
    columns = ", ".join(runs[field.name] for field in Run._meta.concrete_fields)
    return f"""
WITH lease AS (SELECT set_config('synchronous_commit', 'off', true))
UPDATE {runs.table} SET
    {runs["status"]} = %(running)s, {runs["lease_owner"]} = %(owner)s, {runs["lease_expires_at"]} = %(expires)s,
    {runs["dispatch_attempts"]} = {runs["dispatch_attempts"]} + 1,
    {runs["started_at"]} = COALESCE({runs["started_at"]}, %(now)s), {runs["updated_at"]} = %(now)s
FROM lease
WHERE {runs["id"]} = %(id)s AND NOT {runs["cancel_requested"]} AND {runs["dispatch_attempts"]} < %(attempts)s
    AND ({runs["status"]} = %(pending)s OR ({runs["status"]} = %(running)s
        AND ({runs["lease_expires_at"]} < %(now)s OR {runs["lease_owner"]} = '')))
RETURNING {columns},
    EXISTS (SELECT 1 FROM {tasks.table} WHERE {tasks.table}.{tasks["run"]} = {runs.table}.{runs["id"]}) AS has_tasks
"""  # noqa: S608


def claimable_condition(now) -> Q:
    """Pending runs, and running ones whose worker is gone (expired lease) or was released by the reaper."""
    return (
        Q(status=RunStatus.PENDING)
        | Q(status=RunStatus.RUNNING, lease_expires_at__lt=now)
        | Q(status=RunStatus.RUNNING, lease_owner="")
    )


def leases_release(*, owners: list[str]) -> list[uuid.UUID]:
    """Give back the running runs leased to ``owners`` (a worker shutting down): their ids.

    A released run is claimable at once (``claimable_condition``), and the journal of ``owners``
    can write nothing more to it (its writes are guarded by the lease): its executor sees the lease
    lost at its next heartbeat and stops. The lease is left expired, so that the reaper resumes the
    run if nobody dispatches it again; the attempt is not counted (the worker was not lost).
    """
    if not owners:
        return []
    held = Run.objects.filter(status=RunStatus.RUNNING, lease_owner__in=owners)
    run_ids = list(held.values_list("pk", flat=True))
    now = timezone.now()
    Run.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING, lease_owner__in=owners).update(
        lease_owner="", lease_expires_at=now, updated_at=now, dispatch_attempts=F("dispatch_attempts") - 1
    )
    return run_ids


@dataclass
class _Entry:
    """One event waiting for its transaction; ``final`` is the run's end (status, outputs, error).

    ``unstored`` says why a node's success was written as a failure (its output was refused).
    """

    seq: int
    event_type: str
    node_id: str
    data: dict
    at: datetime
    task: TaskChange | None = None
    final: dict | None = None
    unstored: str = ""


@dataclass(frozen=True)
class RunEnd:
    """A run's end as its journal committed it (``on_end`` receives it).

    ``tasks``: every task row of the run as stored, in the order they were created (each a dict of
    the ``Task`` fields ``node_id``, ``node_type``, ``scope``, ``status``, ``attempt``, ``output``,
    ``error``, ``started_at``, ``finished_at``), when this journal wrote them all (the run had none
    when it took it); else None. The outputs are what was stored, read back from the JSON text sent.
    """

    status: str
    outputs: Any
    error: str
    finished_at: datetime
    tasks: list[dict] | None


@dataclass
class _Statement:
    """A batch's SQL and parameters; the task rows it writes (``known``: ids and events) and their
    state afterwards (``rows``, for ``DatabaseJournal._rows``; None if unknown); the run's outputs
    as the final batch stores them (JSON text)."""

    sql: str
    params: list
    known: dict
    rows: dict | None
    outputs: str | None = None
    metered: bool = False


@dataclass
class _TaskWrite:
    """What one batch does to one task row: the last change's fields, merged over the batch."""

    change: TaskChange
    fields: dict
    first_start: datetime | None = None
    events: list = field(default_factory=list)


class DatabaseJournal:
    """The journal of run ``run_id`` written by worker ``owner``; ``crash_at``: see :data:`CrashPoint`."""

    def __init__(
        self,
        *,
        run_id: uuid.UUID,
        owner: str,
        crash_at: CrashPoint | None = None,
        on_end: Callable[[RunEnd], None] | None = None,
    ):
        self.run_id = run_id
        self.owner = owner
        self.crash_at = crash_at
        #: Called on the run loop with the run's end once it is committed.
        self.on_end = on_end
        self.workflow_id = None
        self.run_created_at = None
        self.seq = 0
        self.committed = 0
        self._thread = _run_thread_take()
        self._tasks: dict[tuple[str, str], tuple[uuid.UUID, list]] = {}
        self._pending: list[_Entry] = []
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._queued: asyncio.Event | None = None
        self._urgent: asyncio.Event | None = None
        self._broken: BaseException | None = None
        self._writer: asyncio.Task | None = None
        self._outbox: asyncio.Queue | None = None
        self._publisher: asyncio.Task | None = None
        self._renewed = 0.0
        self._no_tasks = False
        #: The run's task rows as stored (output as JSON text), kept while this journal wrote every
        #: one (on PostgreSQL); None once it cannot know them all.
        self._rows: dict[tuple[str, str], dict] | None = None
        self._end: RunEnd | None = None
        #: Set by the runner for a run that uses no model: its usage row is written by the statement
        #: that ends it, when this journal knows every task row (PostgreSQL); ``metered`` says it was.
        self.meter_with_end = False
        self.metered = False
        #: ``committed`` when ``on_thread(..., last=True)`` closed the connection.
        self._closed_at: int | None = None
        self._large = OutputStore(run_id=run_id)

    @property
    def ended(self) -> RunEnd | None:
        """The run's end as this journal committed it (None before)."""
        return self._end

    async def _call(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def on_thread(self, function, *, last: bool = False):
        """Call ``function()`` on the run's database thread, with its connection, after what it wrote.

        ``last``: the run's database work ends with it, so its connection is closed in the same call
        (``close`` then has one hand-off to the thread less, unless something was written since).
        """
        if not last:
            return await self._call(function)
        result = await self._call(functools.partial(_then_close, function))
        self._closed_at = self.committed
        return result

    # --- claiming ------------------------------------------------------------------------------
    async def claim(self) -> Run | None:
        """Take the run if it is pending, or running on an expired (or released) lease; None otherwise."""
        run = await self._call(self._claim)
        if run is not None:
            self._open(run, no_tasks=getattr(run, "has_tasks", None) is False)  # known on PostgreSQL only
        return run

    def adopt(self, run: Run) -> Run:
        """Take ``run`` as its creator left it: new, already leased to this journal's owner (a web process
        creates so the runs it executes itself; see workflows.execution.services.run_start)."""
        self._open(run, no_tasks=True)
        return run

    def _open(self, run: Run, *, no_tasks: bool) -> None:
        self.workflow_id = run.workflow_id
        self.run_created_at = run.created_at
        self.seq = self.committed = run.last_seq
        self._no_tasks = no_tasks
        self._rows = {} if no_tasks else None
        self._renewed = time.monotonic()
        self._queued, self._urgent = asyncio.Event(), asyncio.Event()
        self._outbox = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_forever())
        self._publisher = asyncio.create_task(self._publish_forever())

    def _claim(self) -> Run | None:
        close_old_connections()
        now = timezone.now()
        if connection.vendor == "postgresql":
            params = {
                "id": self.run_id,
                "owner": self.owner,
                "now": now,
                "expires": now + timedelta(seconds=weft_settings.LEASE_TTL_S),
                "attempts": weft_settings.MAX_DISPATCH_ATTEMPTS,
                "pending": RunStatus.PENDING,
                "running": RunStatus.RUNNING,
            }
            return next(iter(Run.objects.raw(_claim_sql(), params)), None)
        claimable = Run.objects.filter(
            pk=self.run_id,
            cancel_requested=False,
            dispatch_attempts__lt=weft_settings.MAX_DISPATCH_ATTEMPTS,
        ).filter(claimable_condition(now))
        claimed = claimable.update(
            status=RunStatus.RUNNING,
            lease_owner=self.owner,
            lease_expires_at=now + timedelta(seconds=weft_settings.LEASE_TTL_S),
            dispatch_attempts=F("dispatch_attempts") + 1,
            started_at=Coalesce(F("started_at"), now),
            updated_at=now,
        )
        if not claimed:
            return None
        return Run.objects.get(pk=self.run_id)

    # --- the journal protocol ----------------------------------------------------------------------
    async def completed(self) -> dict[tuple[str, str], TaskRecord]:
        if self._no_tasks:  # the claim saw none: nothing to read
            return {}
        return await self._call(self._completed)

    def _completed(self) -> dict[tuple[str, str], TaskRecord]:
        found = {}
        for task in Task.objects.filter(run_id=self.run_id).only(
            "id", "node_id", "scope", "status", "attempt", "output_data", "error", "events"
        ):
            key = (task.scope, task.node_id)
            self._tasks[key] = (task.id, list(task.events or []))
            found[key] = _task_record(self.run_id, task)
        return found

    async def record(
        self, event_type: str, node_id: str, data: dict, task: TaskChange | None = None, *, durable: bool = False
    ) -> None:
        entry = _Entry(self.seq + 1, event_type, node_id, data, timezone.now(), task)
        self._queue(entry)
        if durable:
            await self.flush()
            if entry.unstored:
                raise OutputNotStored(entry.unstored)

    async def finish(self, status: str, *, outputs: dict | None, error: str, data: dict) -> None:
        final = {"status": status, "outputs": outputs, "error": error}
        self._queue(_Entry(self.seq + 1, f"run.{status}", "", data, timezone.now(), final=final))
        await self.flush()

    async def flush(self) -> None:
        """Return once every event recorded so far is committed (raise what stopped the writer, if anything)."""
        if self._broken is not None:
            raise self._broken
        if self.committed >= self.seq:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((self.seq, waiter))
        self._urgent.set()
        await waiter

    def _queue(self, entry: _Entry) -> None:
        if self._broken is not None:
            raise self._broken
        self.seq = entry.seq
        self._pending.append(entry)
        self._queued.set()

    # --- group commit ------------------------------------------------------------------------------
    async def _write_forever(self) -> None:
        while True:
            await self._queued.wait()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LINGER_S):
                        await self._urgent.wait()
                # On Python 3.11 a cancel() arriving as the linger expires can come out of the
                # timeout as a TimeoutError: honour it, or whoever awaits this task waits forever.
                if asyncio.current_task().cancelling():
                    raise asyncio.CancelledError
            batch, self._pending = self._pending, []
            self._queued.clear()
            self._urgent.clear()
            if not batch:
                continue
            try:
                self._crash_if_asked(BEFORE_COMMIT, batch)
                await self._call(self._write_or_salvage, batch)
                self._crash_if_asked(AFTER_COMMIT, batch)
            except Exception as exc:
                self._stop(exc)
                return
            self.committed = batch[-1].seq
            if batch[-1].final is not None and self.on_end is not None:
                self.on_end(self._end)
            # The waiters first: the executor goes on before the publisher encodes the batch.
            still = []
            for seq, waiter in self._waiters:
                if seq <= self.committed:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    still.append((seq, waiter))
            self._waiters = still
            self._outbox.put_nowait(
                [
                    live.event_message(
                        run_id=self.run_id,
                        seq=entry.seq,
                        event_type=entry.event_type,
                        node_id=entry.node_id,
                        data=entry.data,
                        at=entry.at,
                    )
                    for entry in batch
                ]
            )

    def _crash_if_asked(self, point: str, batch: list[_Entry]) -> None:
        if self.crash_at is not None and self.crash_at(point, [(e.seq, e.event_type, e.node_id) for e in batch]):
            raise WorkerKilled(f"Killed {point} of events {batch[0].seq}-{batch[-1].seq} of run {self.run_id}.")

    def _stop(self, exc: Exception) -> None:
        """Nothing more is written: the waiting records, and every one after them, raise ``exc``."""
        self._broken = exc
        for _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self._waiters.clear()

    def _write_or_salvage(self, batch: list[_Entry]) -> None:
        """Write ``batch``; if the database refuses its data, write its events one by one, each it
        refuses without its data (nothing of a refused write was kept: it is one transaction)."""
        self._store_large_outputs(batch)
        try:
            self._write(batch)
        except Exception as exc:
            if not _refused_data(exc):
                raise
            logger.warning(
                "Events %s-%s of run %s were refused (%s); writing them one by one",
                batch[0].seq,
                batch[-1].seq,
                self.run_id,
                _reason(exc),
            )
            for entry in batch:
                try:
                    self._write([entry])
                except Exception as refusal:
                    if not _refused_data(refusal):
                        raise
                    reason = _reason(refusal)
                    logger.warning("Event %s of run %s is stored without its data (%s)", entry.seq, self.run_id, reason)
                    _strip(entry, reason=reason)
                    self._write([entry])

    def _store_large_outputs(self, batch: list[_Entry]) -> None:
        """Write the outputs too large for their row to object storage, before the batch that refers to
        them commits; the batch keeps references (``large_outputs``). A write the storage refuses makes
        its entry's success a failure, as a value the database refuses does."""
        for entry in batch:
            task, final = entry.task, entry.final
            try:
                if task is not None and task.output is not None:
                    stored = self._large.stored(task.output)
                    if stored is not task.output:
                        entry.task = dataclasses.replace(task, output=stored)
                        if entry.data.get("output") is task.output:
                            entry.data = {**entry.data, "output": stored}
                if final is not None and final["outputs"] is not None:
                    stored = self._large.stored(final["outputs"])
                    if stored is not final["outputs"]:
                        entry.final = {**final, "outputs": stored}
                        if entry.data.get("outputs") is final["outputs"]:
                            entry.data = {**entry.data, "outputs": stored}
            except OutputStoreFailed as exc:
                logger.warning("Event %s of run %s: an output could not be stored (%s)", entry.seq, self.run_id, exc)
                _strip(entry, reason=cleaned(str(exc)[:REASON_MAX_CHARS]))

    def _write(self, batch: list[_Entry]) -> None:
        if connection.vendor == "postgresql":
            self._write_in_one_statement(batch)
            return
        # SQLite (embedded mode, tests): the ORM, in one transaction.
        if storable_json([_written(entry) for entry in batch]) is None:
            _clean(batch)
        final = batch[-1].final
        at = batch[-1].at
        end = {}
        if final is not None:
            end = {
                "status": final["status"],
                "outputs": final["outputs"],
                "error": final["error"],
                "finished_at": at,
                "updated_at": at,
                "lease_owner": "",
                "lease_expires_at": None,
            }
        self._rows = None  # not mirrored here: a waiting request reads them back
        with transaction.atomic():
            moved = Run.objects.filter(pk=self.run_id, lease_owner=self.owner, last_seq=batch[0].seq - 1).update(
                last_seq=batch[-1].seq, **end
            )
            if not moved:
                raise LeaseLost(f"Run {self.run_id} is no longer held by {self.owner}.")
            RunEvent.objects.bulk_create([_event_row(self.run_id, self.run_created_at, entry) for entry in batch])
            known = self._write_tasks(batch)
            if final is not None:
                Task.objects.filter(run_id=self.run_id, status__in=OPEN_TASK_STATUSES).update(
                    status=TaskStatus.CANCELLED, finished_at=at
                )
        self._tasks.update(known)
        if final is not None:
            self._end = RunEnd(final["status"], final["outputs"], final["error"], at, None)

    def _task_writes(self, batch: list[_Entry]) -> list[tuple[tuple[str, str], uuid.UUID | None, _TaskWrite, list]]:
        """What the batch does to each task row it touches, as the changes one by one would have left it:
        (key, the row's id or None if it is new, the merged write, the row's events afterwards)."""
        writes: dict[tuple[str, str], _TaskWrite] = {}
        for entry in batch:
            change = entry.task
            if change is None:
                continue
            key = (change.scope, change.node_id)
            write = writes.get(key)
            if write is None:
                write = writes[key] = _TaskWrite(change=change, fields={})
            write.change = change
            write.events.append(
                {"seq": entry.seq, "type": entry.event_type, "attempt": change.attempt, "at": entry.at.isoformat()}
            )
            write.fields.update(
                status=change.status,
                attempt=change.attempt,
                retry_count=max(change.attempt - 1, 0),
                error=change.error,
                output_data=change.output,
            )
            if change.started:
                write.first_start = write.first_start or entry.at
                write.fields["finished_at"] = None
            if change.finished:
                write.fields["finished_at"] = entry.at
        result = []
        for key, write in writes.items():
            pk, events = self._tasks.get(key, (None, []))
            result.append((key, pk, write, events + write.events))
        return result

    def _write_tasks(self, batch: list[_Entry]) -> dict:
        """Each task row the batch touches is written once (the ORM path: SQLite); the rows' ids and
        events, to be known once the transaction commits."""
        created, known = [], {}
        for key, pk, write, events in self._task_writes(batch):
            if pk is None:
                change = write.change
                task = Task(
                    run_id=self.run_id,
                    node_id=change.node_id,
                    scope=change.scope,
                    node_type=change.node_type,
                    name=change.name[:255],
                    started_at=write.first_start,
                    events=events,
                    **write.fields,
                )
                created.append((key, task))
                continue
            fields = {**write.fields, "events": events}
            if write.first_start is not None:
                fields["started_at"] = Coalesce(F("started_at"), write.first_start)
            Task.objects.filter(pk=pk).update(**fields)
            known[key] = (pk, events)
        if created:
            Task.objects.bulk_create([task for _, task in created])
            for key, task in created:
                known[key] = (task.pk, task.events)
        return known

    def _write_in_one_statement(self, batch: list[_Entry]) -> None:
        """PostgreSQL: the lease guard, the events and the task rows (and, with a final entry, the
        run's end) in one statement, committed by itself (one round trip). Nothing is written when
        the guard matches no row."""
        statement = self._statement(batch, encode=storable_json)
        if statement is None:  # something in the batch must be cleaned first
            _clean(batch)
            statement = self._statement(batch, encode=json_text)
        with prepared_cursor() as cursor:
            cursor.execute(statement.sql, statement.params)
            moved = cursor.fetchone()[0]
        if not moved:
            raise LeaseLost(f"Run {self.run_id} is no longer held by {self.owner}.")
        self._tasks.update(statement.known)
        if self._rows is not None:
            if statement.rows is None:
                self._rows = None
            else:
                self._rows.update(statement.rows)
        final = batch[-1].final
        if final is not None:
            self._end = self._run_end(final, at=batch[-1].at, outputs=statement.outputs)
            self.metered = statement.metered

    def _run_end(self, final: dict, *, at: datetime, outputs: str | None) -> RunEnd:
        """The run's end as the final batch stored it; the rows the batch did not write and left open
        were cancelled by it."""
        tasks = None
        if self._rows is not None:
            tasks = []
            for row in self._rows.values():
                if row["status"] in OPEN_TASK_STATUSES:
                    row = {**row, "status": TaskStatus.CANCELLED, "finished_at": at}
                output = row["output"]
                tasks.append({**row, "output": None if output is None else json.loads(output)})
        stored = None if outputs is None else json.loads(outputs)
        return RunEnd(final["status"], stored, final["error"], at, tasks)

    def _statement(self, batch: list[_Entry], *, encode) -> _Statement | None:
        """The batch's statement; None if ``encode`` (which gives JSON text, or None for a value that
        must be cleaned first) refused a value."""
        final = batch[-1].final
        at = batch[-1].at
        events = [
            {"seq": e.seq, "type": e.event_type, "node_id": e.node_id, "data": e.data, "at": e.at.isoformat()}
            for e in batch
        ]
        created, changed, known = [], [], {}
        rows: dict | None = None if self._rows is None else {}
        for key, pk, write, task_events in self._task_writes(batch):
            fields = write.fields
            touch_finished = "finished_at" in fields
            finished_at = fields.get("finished_at")
            status = fields["status"]
            if final is not None and status in OPEN_TASK_STATUSES:
                status, finished_at, touch_finished = TaskStatus.CANCELLED, at, True  # as the run ends
            output = None
            if fields["output_data"] is not None:
                output = encode(fields["output_data"])
                if output is None:
                    return None
            row = {
                "status": status,
                "output_data": output,
                "error": fields["error"],
                "attempt": fields["attempt"],
                "retry_count": fields["retry_count"],
                "events": task_events,
                "started_at": write.first_start.isoformat() if write.first_start else None,
                "finished_at": finished_at.isoformat() if finished_at else None,
            }
            if rows is not None:
                before = self._rows.get(key)
                if before is None and pk is not None:
                    rows = None  # a row this journal did not write
                else:
                    before = before or {
                        "node_id": write.change.node_id,
                        "node_type": write.change.node_type,
                        "scope": write.change.scope,
                        "started_at": None,
                        "finished_at": None,
                    }
                    rows[key] = {
                        **before,
                        "status": status,
                        "attempt": fields["attempt"],
                        "output": output,
                        "error": fields["error"],
                        "started_at": before["started_at"] or write.first_start,
                        "finished_at": finished_at if touch_finished else before["finished_at"],
                    }
            if pk is None:
                pk = uuid.uuid4()
                change = write.change
                created.append(
                    {
                        **row,
                        "id": str(pk),
                        "node_id": change.node_id,
                        "node_type": change.node_type,
                        "scope": change.scope,
                        "name": change.name[:255],
                    }
                )
            else:
                changed.append({**row, "id": str(pk), "touch_finished": touch_finished})
            known[key] = (pk, task_events)
        guard = [self.run_id, self.owner, batch[0].seq - 1]
        encoded = [encode(events), encode(created), encode(changed)]
        if None in encoded:
            return None
        if final is None:
            deferred = not weft_settings.JOURNAL_SYNCHRONOUS_COMMIT
            params = [batch[-1].seq, *guard, *encoded]
            return _Statement(_batch_sql(final=False, deferred=deferred), params, known, rows)
        outputs = None if final["outputs"] is None else encode(final["outputs"])
        if (final["outputs"] is not None and outputs is None) or encode(final["error"]) is None:
            return None
        end = [final["status"], outputs, final["error"], at, at]
        written = [row["id"] for row in changed]
        closed = [TaskStatus.CANCELLED, at, list(OPEN_TASK_STATUSES), written]
        params = [batch[-1].seq, *end, *guard, *encoded, *closed]
        metered = self.meter_with_end and rows is not None
        if metered:  # the node executions that ran, as the run ends (those left open are cancelled)
            ended = {**self._rows, **rows}.values()
            params.append(sum(row["status"] in RAN for row in ended))
        return _Statement(_batch_sql(final=True, metered=metered), params, known, rows, outputs, metered)

    async def heartbeat(self) -> str:
        renew = time.monotonic() - self._renewed >= weft_settings.HEARTBEAT_S
        state = await self._call(self._heartbeat, renew)
        if renew and state != "lost":
            self._renewed = time.monotonic()
        return state

    def _heartbeat(self, renew: bool) -> str:
        row = Run.objects.filter(pk=self.run_id).values_list("lease_owner", "status", "cancel_requested").first()
        if row is None or row[0] != self.owner or row[1] != RunStatus.RUNNING:
            return "lost"
        if renew:
            now = timezone.now()
            renewed = Run.objects.filter(pk=self.run_id, lease_owner=self.owner, status=RunStatus.RUNNING).update(
                lease_expires_at=now + timedelta(seconds=weft_settings.LEASE_TTL_S)
            )
            if not renewed:
                return "lost"
        return "cancel" if row[2] else "ok"

    # --- streaming and closing ---------------------------------------------------------------------
    async def _publish_forever(self) -> None:
        while True:
            messages = await self._outbox.get()
            taken = 1
            while not self._outbox.empty():  # behind: what has been committed since goes together
                messages = messages + self._outbox.get_nowait()
                taken += 1
            try:
                await live.publish_batch(workflow_id=self.workflow_id, messages=messages)
            except Exception:  # a client that misses a live event replays it from run_events
                logger.warning(
                    "Could not stream events %s-%s of run %s",
                    messages[0]["seq"],
                    messages[-1]["seq"],
                    messages[0]["run"],
                    exc_info=True,
                )
            finally:
                for _ in range(taken):
                    self._outbox.task_done()
            # A client library that swallowed a cancel() must not keep this task waiting forever.
            if asyncio.current_task().cancelling():
                raise asyncio.CancelledError

    async def close(self) -> None:
        """Commit and send what is left, then release the thread and its database connection."""
        if self._writer is not None:
            try:
                await self.flush()
            except (LeaseLost, WorkerKilled):
                pass
            except Exception:
                logger.warning("Could not write the last events of run %s", self.run_id, exc_info=True)
            self._writer.cancel()
            with contextlib.suppress(BaseException):
                await self._writer
        if self._publisher is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._outbox.join(), timeout=5)
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        try:
            if self._closed_at is None or self._closed_at != self.committed:
                await self._call(_close_connection)
        except BaseException:
            self._thread.shutdown(wait=False)
            raise
        _run_thread_give_back(self._thread)


#: Threads kept for the next runs' journals once theirs end (each with its connection closed):
#: starting a thread for each run costs about a millisecond.
RUN_THREADS_KEPT = 32
_idle_run_threads: list[ThreadPoolExecutor] = []
_idle_run_threads_lock = threading.Lock()


def _run_thread_take() -> ThreadPoolExecutor:
    """A run's own database thread: an idle one, or a new one."""
    with _idle_run_threads_lock:
        if _idle_run_threads:
            return _idle_run_threads.pop()
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="weft-run")


def _run_thread_give_back(thread: ThreadPoolExecutor) -> None:
    with _idle_run_threads_lock:
        if len(_idle_run_threads) < RUN_THREADS_KEPT:
            _idle_run_threads.append(thread)
            return
    thread.shutdown(wait=False)


def _written(entry: _Entry) -> list:
    """What of ``entry`` goes into the database and may need cleaning."""
    task = entry.task
    return [entry.data, task and task.output, task and task.error, entry.final]


def _clean(batch: list[_Entry]) -> None:
    """Clean what each entry writes by the rule of ``workflows.engine.outputs`` (OutputInvalid for
    what no rule makes storable); the cleaned data is also what is streamed."""
    for entry in batch:
        entry.data = cleaned(entry.data)
        if entry.task is not None:
            entry.task = dataclasses.replace(
                entry.task, output=cleaned(entry.task.output), error=cleaned(entry.task.error)
            )
        if entry.final is not None:
            entry.final = {
                **entry.final,
                "outputs": cleaned(entry.final["outputs"]),
                "error": cleaned(entry.final["error"]),
            }


def _refused_data(exc: BaseException) -> bool:
    """Whether a write failed for what it held (a value; a constraint, such as SQLite's JSON_VALID;
    a database limit, such as a size) rather than for the lease or the connection. A refusal that
    was not about the data refuses the same rows without their data too: the journal then stops."""
    refusals = (OutputInvalid, DataError, IntegrityError, ValueError, TypeError, RecursionError, OverflowError)
    if isinstance(exc, refusals):
        return True
    return str(getattr(exc.__cause__, "sqlstate", "") or "").startswith("54")  # program limit exceeded


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return cleaned((lines[0] if lines else type(exc).__name__)[:REASON_MAX_CHARS])


def _strip(entry: _Entry, *, reason: str) -> None:
    """Make ``entry`` storable without its data: a node's success a failure, the run's success too."""
    task, final = entry.task, entry.final
    if task is not None and task.status == TaskStatus.SUCCEEDED:
        note = f"The node succeeded, but its output could not be stored ({reason})."
        entry.unstored = note
    elif final is not None and final["status"] == RunStatus.SUCCEEDED:
        note = f"The run's outputs could not be stored ({reason})."
    else:
        note = f"This event's data could not be stored ({reason})."
    kept = {key: entry.data[key] for key in ("attempt", "scope") if isinstance(entry.data.get(key), int | str)}
    entry.data = {**cleaned(kept), "error": note}
    if task is not None:
        status = TaskStatus.FAILED if task.status == TaskStatus.SUCCEEDED else task.status
        entry.task = dataclasses.replace(task, status=status, output=None, error=note)
    if final is not None:
        status = RunStatus.FAILED if final["status"] == RunStatus.SUCCEEDED else final["status"]
        entry.final = {"status": status, "outputs": None, "error": note}
        entry.event_type = f"run.{status}"


def _task_record(run_id, task: Task) -> TaskRecord:
    """What a resumed run learns of ``task``: a stored output is read back; one that is gone fails the node
    (storage that does not answer stops the resume: the run is resumed again later)."""
    try:
        output = output_loaded(run_id=run_id, value=task.output_data)
    except StoredOutputGone as exc:
        return TaskRecord(
            status=TaskStatus.FAILED,
            attempt=task.attempt,
            error=f"Its stored output could not be read back: {exc.message}",
        )
    return TaskRecord(status=task.status, attempt=task.attempt, output=output, error=task.error)


def _event_row(run_id, run_created_at: datetime, entry: _Entry) -> RunEvent:
    return RunEvent(
        run_id=run_id,
        run_created_at=run_created_at,
        seq=entry.seq,
        type=entry.event_type,
        node_id=entry.node_id,
        data=entry.data,
        at=entry.at,
    )


def _close_connection() -> None:
    connection.close()


def _then_close(function):
    try:
        return function()
    finally:
        connection.close()
