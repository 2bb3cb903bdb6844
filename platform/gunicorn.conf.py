"""gunicorn's settings for the Procfile's ``web``: HTTP through Django's WSGI handler.

Threads (``gthread``), because a request may wait for its run (``wait: true``) and a waiting
thread costs no CPU; a thread lives as long as its process, so Django's work per request is the
request's own (no thread per request, as under ASGI). Each process executes the runs its
requests wait for when they can run here (workflows.execution.services.run_start); when it stops,
it hands them back (``worker_exit``).
"""

import os

worker_class = "gthread"
# WEB_CONCURRENCY, else one per core of a 2-core host; without REDIS_URL in the environment (embedded
# mode) one: that process holds the runs, the cache and the channel layer.
workers = int(os.environ.get("WEB_CONCURRENCY") or (2 if os.environ.get("REDIS_URL") else 1))
threads = int(os.environ.get("WEB_THREADS", "32"))
# Keep a client's connection for its next call (HTTP/1.1, and HTTP/1.0 with keep-alive).
keepalive = 5
# A request that waits for its run holds its thread at most WEFT_ENGINE_WAIT_TIMEOUT_S (30 s).
timeout = 60
graceful_timeout = 10
# X-Forwarded-* are Django's business (SECURE_PROXY_SSL_HEADER, WEFT_TRUSTED_PROXIES), not gunicorn's.
forwarded_allow_ips = ""
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def worker_exit(server, worker):
    """Before a web process exits: hand back the runs it executes (workflows.execution.run_loop) and
    send them to a worker at once (in embedded mode, the next process's reaper resumes them)."""
    from workflows.execution.dispatch import run_dispatch
    from workflows.execution.run_loop import request_run_loop, server_run_loop

    server_run_loop.stop()
    for run_id in request_run_loop.stop():
        try:
            run_dispatch(run_id=run_id)
        except Exception:  # the broker is gone too: beat's reaper resumes the run
            server.log.warning("Could not send run %s to a worker; the reaper will resume it.", run_id)
