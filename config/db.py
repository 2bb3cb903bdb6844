"""ORM code called from the event loops that execute runs, and the cursor of its statements that repeat."""

import contextlib
from collections.abc import Iterator

import psycopg
from channels.db import database_sync_to_async
from django.db import connection


def on_db_thread(function):
    """``function`` (ORM code) as a coroutine function that runs it on a thread of a pool.

    Not thread-sensitive: a run loop is no request's thread, and there is no request's executor to
    wait for (asgiref's default would route the call to one that may have ended). The thread's
    connection is closed after the call when it is obsolete (``CONN_MAX_AGE``), as
    ``database_sync_to_async`` does for consumers.
    """
    return database_sync_to_async(function, thread_sensitive=False)


@contextlib.contextmanager
def prepared_cursor() -> Iterator:
    """A cursor (PostgreSQL) whose statements PostgreSQL keeps planned: for a statement of fixed text
    executed again and again with new parameters, as a run's journal writes.

    Django's cursors bind parameters on the client (its default, ``server_side_binding``): each
    statement arrives as new text and is planned again, and a journal batch plans longer than it
    executes (about 1.2 ms against 1 ms). This one binds them on the server, so psycopg prepares a
    statement once the connection has executed it ``OPTIONS["prepare_threshold"]`` times (5, from
    ``DATABASE_PREPARE_THRESHOLD``; empty: never, as a pooler in transaction mode needs) and
    PostgreSQL then reuses its plan. It is wrapped as Django's ``connection.cursor()`` wraps its
    own (``make_cursor``, or ``make_debug_cursor`` while queries are logged), so errors are Django's
    and query logging and execute wrappers see it. Elsewhere: Django's own cursor.
    """
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            yield cursor
        return
    connection.ensure_connection()
    raw = psycopg.Cursor(connection.connection)
    cursor = connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)
    with cursor:
        yield cursor
