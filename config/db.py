"""ORM code called from the event loops that execute runs."""

from channels.db import database_sync_to_async


def on_db_thread(function):
    """``function`` (ORM code) as a coroutine function that runs it on a thread of a pool.

    Not thread-sensitive: a run loop is no request's thread, and there is no request's executor to
    wait for (asgiref's default would route the call to one that may have ended). The thread's
    connection is closed after the call when it is obsolete (``CONN_MAX_AGE``), as
    ``database_sync_to_async`` does for consumers.
    """
    return database_sync_to_async(function, thread_sensitive=False)
