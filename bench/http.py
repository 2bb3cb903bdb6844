"""The request path as a client app meets it: calls/s, p50 and p99 under ``ab`` (keep-alive).

The part starts its own ``web`` and ``worker`` from ``platform/Procfile`` (bound to loopback,
on the bench's PostgreSQL and Redis, DEBUG=0), so that the deployment shipped is the one
measured, and stops them when it is done. Their tasks go to a queue of their own: the workers
other parts leave running do not take this part's runs.

Three calls, each with 1 client and with 16 for ``WINDOW_S`` seconds after a warm-up:
- ``app_wait``: the app API starting a trivial published workflow and waiting for its answer;
- ``app_nowait``: the same call without ``wait`` (202: the run is queued);
- ``me``: ``GET /api/v1/auth/me/`` with a token (token auth, one serializer), the floor.

The load comes from ``ab`` (a C tool, so that the client does not eat the server's CPU). Its
percentiles come from its CSV file (to the microsecond; its table rounds to the millisecond).
``ab`` speaks HTTP/1.0: a server that does not keep such connections open (daphne does not;
gunicorn does) makes it connect for every call, so each figure's note says how many calls went
over a kept connection.
Failed calls are the non-2xx answers and the calls ``ab`` could not make; ``ab``'s "Length"
failures are not failures here (a run's answer differs in length from call to call).
"""

import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from django.contrib.auth import get_user_model
from knox.models import AuthToken

from licensing.services import app_create, license_grant
from workflows.models import RUN_FINAL_STATUSES, Run, RunStatus
from workflows.releases.services import workflow_publish
from workflows.services import workflow_create

from .context import ROOT, free_port, port_open, stop

ORDER = 50
CLIENTS = (1, 16)
WINDOW_S = 5
WARMUP_CALLS = 20
#: Runs still queued when the part ends are awaited this long, so that they end before the worker stops.
DRAIN_S = 20
QUEUE = "weft-bench-http"
#: The limits meant for abuse stay out of the way: the figures are the path's, not a refusal's.
LIMITS = {
    "WEFT_THROTTLE_APP": "100000000/min",
    "WEFT_QUOTA_RUNS_PER_DAY": "100000000",
    "WEFT_QUOTA_WORKFLOW_RUNS_PER_DAY": "100000000",
    "WEFT_QUOTA_CONCURRENT_RUNS": "100000",
}
#: Issue 18's goal (n8n measured 14 ms p50 for one client, 97 calls/s with 16, on this machine).
TARGETS = {
    ("app_wait", 1, "p50_ms"): 12,
    ("app_wait", 16, "per_s"): 146,
    ("app_nowait", 1, "p50_ms"): 6,
    ("me", 1, "p50_ms"): 5,
    ("me", 16, "per_s"): 300,
}
HELLO_GRAPH = {
    "nodes": [
        {"id": "start", "type": "start", "config": {"inputs": [{"name": "name", "type": "string"}]}},
        {"id": "t1", "type": "template", "config": {"template": "Hello {{ start.name }}"}},
        {"id": "t2", "type": "template", "config": {"template": "{{ t1.text | upper }}"}},
        {"id": "end", "type": "end", "config": {"outputs": {"greeting": "{{ t2.text }}"}}},
    ],
    "edges": [
        {"source": "start", "target": "t1"},
        {"source": "t1", "target": "t2"},
        {"source": "t2", "target": "end"},
    ],
}


@dataclass(frozen=True)
class Call:
    """One call ``ab`` repeats: a GET when ``body`` is None, else a POST of ``body`` (JSON)."""

    label: str
    path: str
    header: str
    body: str | None = None


@dataclass(frozen=True)
class Load:
    """What ``ab`` measured in one window."""

    per_s: float
    p50_ms: float
    p99_ms: float
    calls: int
    failed: int
    keep_alive: int


def run(ctx) -> list[dict]:
    names = [(call, clients) for call in ("app_wait", "app_nowait", "me") for clients in CLIENTS]
    ab = shutil.which("ab")
    reason = "" if ab else "ab is not installed (apt-get install apache2-utils)"
    if not reason and not ctx.redis_url:
        reason = "no REDIS_URL: platform/Procfile's worker needs Redis"
    if reason:
        print(f"bench: http: skipped: {reason}.", flush=True)
        return [row for label, clients in names for row in rows(ctx, label, clients, None)]
    workflow, app_credentials, token = prepare(ctx)
    port = free_port()
    processes = start_processes(ctx, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_path = f"/api/v1/app/workflows/{workflow.pk}/runs/"
        check_answer(base, wait_path, app_credentials)
        calls = [
            Call("me", "/api/v1/auth/me/", f"Authorization: Token {token}"),
            Call("app_wait", wait_path, app_credentials, '{"inputs": {"name": "bench"}, "wait": true}'),
            # Last: the runs it queues are still executing when it ends.
            Call("app_nowait", wait_path, app_credentials, '{"inputs": {"name": "bench"}}'),
        ]
        loads = {(call.label, clients): measure(ab, base, call, clients) for call in calls for clients in CLIENTS}
        unfinished = drain(workflow)
    finally:
        for process in processes:
            stop(process)
    failed_runs = Run.objects.filter(workflow=workflow).exclude(status=RunStatus.SUCCEEDED).count()
    if unfinished:
        ctx.warn(f"http: {unfinished} runs started without waiting had not ended {DRAIN_S} s after the load.")
    found = [row for label, clients in names for row in rows(ctx, label, clients, loads[(label, clients)])]
    return [
        *found,
        ctx.result(
            "http_runs_not_succeeded",
            failed_runs,
            "runs",
            target=0,
            note="runs of the part's workflow that did not succeed (or had not ended when it stopped)",
        ),
    ]


def prepare(ctx):
    """A user of its own, the trivial workflow published, an app licensed to call it: (workflow, header, token)."""
    user, _ = get_user_model().objects.get_or_create(
        username="weft-bench-http", defaults={"email": "bench-http@example.com"}
    )
    workflow = workflow_create(owner=user, name="bench: http", graph=HELLO_GRAPH)
    workflow_publish(workflow=workflow, version="1.0.0", user=user)
    app, secret = app_create(owner=user, name="bench: http", rate_limit_per_minute=100_000_000)
    license_grant(app=app, workflow=workflow, actor=user)
    _, token = AuthToken.objects.create(user)
    return workflow, f"Authorization: Bearer {app.api_key}:{secret}", token


def procfile_line(name: str) -> str:
    """``platform/Procfile``'s command for process ``name``, bound to loopback."""
    for line in (ROOT / "platform" / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip().replace("0.0.0.0", "127.0.0.1")  # noqa: S104 (replaced, not bound)
    raise RuntimeError(f"platform/Procfile has no {name} line.")


def start_processes(ctx, port: int) -> list:
    """Procfile's ``web`` on ``port`` and its ``worker``, as a shell starts them, with the venv's commands."""
    venv_bin = Path(sys.executable).parent
    env = {
        **ctx.env,
        **LIMITS,
        "PATH": f"{venv_bin}:{ctx.env.get('PATH', '')}",
        "PORT": str(port),
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
        "WEFT_CELERY_QUEUE": QUEUE,
    }
    web = ctx.spawn(
        "bash", "-c", f"exec env {procfile_line('web')}", env=env, ready=port_open(port), name="web (Procfile)"
    )
    worker = ctx.spawn("bash", "-c", f"exec env {procfile_line('worker')}", env=env, name="worker (Procfile)")
    return [worker, web]


def check_answer(base: str, path: str, header: str) -> None:
    """The first call, which also waits for the worker to come up: the workflow answers as meant."""
    key, value = header.split(": ", 1)
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=base, headers={key: value}, timeout=60) as client:
        while True:
            response = client.post(path, json={"inputs": {"name": "bench"}, "wait": True})
            if response.status_code == 200 and response.json().get("outputs", {}).get("greeting") == "HELLO BENCH":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"The app API answered {response.status_code}: {response.text[:500]}")
            time.sleep(0.5)


def measure(ab: str, base: str, call: Call, clients: int) -> Load:
    """A warm-up, then ``clients`` keep-alive connections calling for ``WINDOW_S`` seconds."""
    with tempfile.TemporaryDirectory(prefix="weft-bench-http-") as folder:
        command = [ab, "-q", "-k", "-H", call.header]
        if call.body is not None:
            body = Path(folder) / "body.json"
            body.write_text(call.body)
            command += ["-p", str(body), "-T", "application/json"]
        url = base + call.path
        subprocess.run([*command, "-n", str(WARMUP_CALLS), "-c", "1", url], capture_output=True, check=False)  # noqa: S603
        percentiles = Path(folder) / "percentiles.csv"
        window = [*command, "-t", str(WINDOW_S), "-n", "10000000", "-c", str(clients), "-e", str(percentiles), url]
        report = subprocess.run(window, capture_output=True, text=True, check=False)  # noqa: S603
        if report.returncode:
            raise RuntimeError(f"ab failed ({report.returncode}): {report.stderr[-500:]}")
        return parse(report.stdout, percentiles.read_text())


def parse(report: str, csv: str) -> Load:
    """``ab``'s report and its ``-e`` CSV (``percent,ms`` lines) as a ``Load``."""

    def number(label: str) -> float:
        found = re.search(rf"^{label}:\s+([\d.]+)", report, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    served = dict(line.split(",") for line in csv.splitlines()[1:])
    unanswered = re.search(r"\(Connect: (\d+), Receive: (\d+), Length: \d+, Exceptions: (\d+)\)", report)
    failed = int(number("Non-2xx responses")) + (sum(map(int, unanswered.groups())) if unanswered else 0)
    calls = int(number("Complete requests"))

    def percentile(percent: int) -> float:
        # ab reads call int(0.5 + calls * percent / 100) of its sorted times, past the last one
        # near the top of a short window: there the slowest call (the "100" line) is the answer.
        return float(served[str(percent) if int(0.5 + calls * percent / 100) < calls else "100"])

    return Load(
        per_s=(calls - failed) / number("Time taken for tests"),
        p50_ms=percentile(50),
        p99_ms=percentile(99),
        calls=calls,
        failed=failed,
        keep_alive=int(number("Keep-Alive requests")),
    )


def drain(workflow) -> int:
    """Wait (up to ``DRAIN_S``) for the runs queued without waiting to end; how many had not."""
    deadline = time.monotonic() + DRAIN_S
    while True:
        unfinished = Run.objects.filter(workflow=workflow).exclude(status__in=RUN_FINAL_STATUSES).count()
        if not unfinished or time.monotonic() > deadline:
            return unfinished
        time.sleep(0.5)


def rows(ctx, label: str, clients: int, load: Load | None) -> list[dict]:
    """The four figures of one call at one number of clients (values None when not measured)."""
    prefix = f"http_{label}_c{clients}"

    def figure(kind: str, value, unit: str, **extra) -> dict:
        target = TARGETS.get((label, clients, kind))
        higher = kind == "per_s"
        return ctx.result(f"{prefix}_{kind}", value, unit, target=target, higher_is_better=higher, **extra)

    note = ""
    if load is not None:
        note = f"ab -k, {clients} client(s), {WINDOW_S} s: {load.calls} calls, {load.keep_alive} on kept connections"
    return [
        figure("per_s", load and load.per_s, "calls/s", note=note),
        figure("p50_ms", load and load.p50_ms, "ms"),
        figure("p99_ms", load and load.p99_ms, "ms"),
        ctx.result(f"{prefix}_failed", load and load.failed, "calls", target=0),
    ]
