"""The app API's figures: calls per second of a trivial published workflow with ``wait=true``,
beside a bare DRF endpoint (``GET /api/v1/auth/me/``: token auth, one serializer) on the same server.

Both are measured the same way: ``CONCURRENCY`` clients (threads, each its own connection) call
as fast as they can for ``WINDOW_S`` seconds after a warm-up. With Redis, runs execute on a
Celery worker this bench starts; without, on the server's embedded engine.
"""

import threading
import time

import httpx

from licensing.services import app_create, license_grant
from workflows.releases.services import workflow_publish
from workflows.services import workflow_create

ORDER = 40
CONCURRENCY = 8
WINDOW_S = 4.0
WARMUP_CALLS = 5
#: High enough that the bench never meets the per-app rate limit.
RATE_LIMIT_PER_MINUTE = 10_000_000

TRIVIAL_GRAPH = {
    "nodes": [
        {"id": "start", "type": "start", "config": {"inputs": [{"name": "name", "type": "string"}]}},
        {"id": "end", "type": "end", "config": {"outputs": {"greeting": "Hello {{ start.name }}"}}},
    ],
    "edges": [{"source": "start", "target": "end"}],
}


def run(ctx) -> list[dict]:
    workflow = workflow_create(owner=ctx.user, name="bench: app api", graph=TRIVIAL_GRAPH)
    workflow_publish(workflow=workflow, version="1.0.0", user=ctx.user)
    app, secret = app_create(owner=ctx.user, name="bench", rate_limit_per_minute=RATE_LIMIT_PER_MINUTE)
    license_grant(app=app, workflow=workflow, actor=ctx.user)
    if ctx.redis_url:
        ctx.spawn(
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=prefork",
            "--concurrency=4",
            "-l",
            "warning",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            name="celery worker (app api bench)",
        )

    app_headers = {"Authorization": f"Bearer {app.api_key}:{secret}"}
    app_call = ("POST", f"/api/v1/app/workflows/{workflow.pk}/runs/", {"inputs": {"name": "bench"}, "wait": True})

    def app_ok(response: httpx.Response) -> bool:
        return response.status_code == 200 and response.json()["status"] == "succeeded"

    bare_headers = {"Authorization": f"Token {ctx.token}"}
    bare_call = ("GET", "/api/v1/auth/me/", None)

    def bare_ok(response: httpx.Response) -> bool:
        return response.status_code == 200

    app_rate, app_latencies, app_errors = measure(ctx, app_call, app_headers, app_ok, warmup_timeout=60)
    bare_rate, bare_latencies, bare_errors = measure(ctx, bare_call, bare_headers, bare_ok, warmup_timeout=10)
    where = "a Celery worker" if ctx.redis_url else "the server's embedded engine"
    return [
        ctx.result(
            "app_api_wait_per_s",
            app_rate,
            "calls/s",
            note=f"start→end workflow, wait=true, {CONCURRENCY} clients, {WINDOW_S:g} s, runs on {where}; "
            f"p50 {ctx.median(app_latencies):.1f} ms, p95 {ctx.percentile(app_latencies, 95):.1f} ms"
            + (f"; {app_errors} failed calls" if app_errors else ""),
        ),
        ctx.result(
            "drf_bare_per_s",
            bare_rate,
            "calls/s",
            note=f"GET /api/v1/auth/me/ on the same server, {CONCURRENCY} clients; "
            f"p50 {ctx.median(bare_latencies):.1f} ms; app API at {app_rate / bare_rate:.0%} of it"
            + (f"; {bare_errors} failed calls" if bare_errors else ""),
        ),
    ]


def measure(ctx, call: tuple, headers: dict, ok, *, warmup_timeout: float) -> tuple[float, list[float], int]:
    """Calls per second that ``ok`` accepts, each call's milliseconds, and the number of failed calls."""
    method, path, body = call
    with httpx.Client(base_url=ctx.base_url, headers=headers, timeout=warmup_timeout) as client:
        for _ in range(WARMUP_CALLS):
            response = client.request(method, path, json=body)
            if not ok(response):
                raise RuntimeError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + WINDOW_S

    def client_loop() -> None:
        nonlocal errors
        with httpx.Client(base_url=ctx.base_url, headers=headers, timeout=30) as client:
            while time.monotonic() < deadline:
                began = time.perf_counter()
                try:
                    accepted = ok(client.request(method, path, json=body))
                except httpx.HTTPError:
                    accepted = False
                elapsed = (time.perf_counter() - began) * 1000
                with lock:
                    if accepted:
                        latencies.append(elapsed)
                    else:
                        errors += 1

    began = time.monotonic()
    threads = [threading.Thread(target=client_loop) for _ in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    if not latencies:
        raise RuntimeError(f"No call to {method} {path} succeeded during the window.")
    return len(latencies) / elapsed, latencies, errors
