"""The http bench part reads ab's figures right: failed calls, percentiles of a short window."""

import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count

import pytest

from bench import http as http_bench

# CI installs ab (.ci/run): there it fails rather than skips.
pytestmark = pytest.mark.skipif(
    shutil.which("ab") is None and os.environ.get("CI") != "true", reason="needs ab (apache2-utils)"
)


class Handler(BaseHTTPRequestHandler):
    """GET: 200 with a body whose length varies; POST: 500."""

    calls = count()

    def do_GET(self):
        self.answer(200, b"x" * (next(self.calls) % 7))

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(500, b"no")

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def short_window(monkeypatch):
    monkeypatch.setattr(http_bench, "WINDOW_S", 1)
    monkeypatch.setattr(http_bench, "WARMUP_CALLS", 2)


def test_answers_of_varying_length_are_not_failures(server):
    load = http_bench.measure(shutil.which("ab"), server, http_bench.Call("get", "/", "X-Bench: 1"), 2)
    assert load.calls > 10
    assert load.failed == 0
    assert 0 < load.p50_ms <= load.p99_ms
    assert load.per_s > 10


def test_non_2xx_answers_are_failures(server):
    call = http_bench.Call("post", "/", "X-Bench: 1", '{"inputs": {}}')
    load = http_bench.measure(shutil.which("ab"), server, call, 1)
    assert load.calls > 10
    assert load.failed == load.calls
    assert load.per_s == 0


def test_p99_of_a_short_window_is_its_slowest_call():
    csv = "Percentage served,Time in ms\n" + "".join(f"{p},{p / 10:.3f}\n" for p in range(100)) + "100,42.000\n"
    report = "Complete requests:      20\nTime taken for tests:   2.000 seconds\n"
    load = http_bench.parse(report, csv)
    assert load.p50_ms == 5.0
    assert load.p99_ms == 42.0
    assert load.per_s == 10.0
