"""Database calls from tests on other threads: off the event loop, or holding a lock in another
transaction; each on a connection closed afterwards."""

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator

from django.db import connection, transaction


async def in_thread(function, **kwargs):
    """Run ``function(**kwargs)`` (ORM code) on another thread, closing that thread's connection after."""

    def call():
        try:
            return function(**kwargs)
        finally:
            connection.close()

    return await asyncio.to_thread(call)


@contextlib.contextmanager
def held_in_another_transaction(take: Callable[[], None], *, wait_s: float) -> Iterator[None]:
    """While the block runs, another thread holds what ``take()`` locks, in a transaction of its own
    (open at most 10 s); ``take`` must have it within ``wait_s``."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                take()
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(wait_s)
        yield
    finally:
        release.set()
        holder.join()
