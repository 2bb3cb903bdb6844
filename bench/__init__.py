"""``make bench`` (``python -m bench``): Weft's engine benchmarks, measured side by side in one run.

The figures are meant for PostgreSQL and Redis: set ``DATABASE_URL`` (e.g.
``postgres://postgres@127.0.0.1:5432/weft_bench``; the database is created and migrated if
missing) and ``REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/8``; Celery's broker, its result
backend and the channel layer). Without them the bench falls back to a throw-away SQLite file
and the in-memory layer, warns, and leaves out what needs Redis (the Celery round trip and the
websocket figures).

The runner (``__main__``) prepares the database, a bench user with an API token and a live
server (daphne on a free port), then runs every module ``bench/<name>.py`` that defines::

    def run(ctx: bench.context.BenchContext) -> list[dict]

Each returns rows ``{"name", "value", "unit"}`` (plus ``"target"`` and ``"ok"`` where there is a
target; ``ctx.result(...)`` builds one). See :class:`bench.context.BenchContext` for what ``ctx``
offers. The runner prints one table and writes every row to ``bench-results.json``.
"""
