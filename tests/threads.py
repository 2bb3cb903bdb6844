"""Database calls from async tests: off the event loop, on a connection closed afterwards."""

import asyncio

from django.db import connection


async def in_thread(function, **kwargs):
    """Run ``function(**kwargs)`` (ORM code) on another thread, closing that thread's connection after."""

    def call():
        try:
            return function(**kwargs)
        finally:
            connection.close()

    return await asyncio.to_thread(call)
