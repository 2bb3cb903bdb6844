"""A real Weft server (daphne, embedded mode, its own SQLite file) and the system's Chromium.

The server runs without REDIS_URL, so it executes runs in-process and streams their events over
its in-memory channel layer: the console is tested whole, with or without Redis on the machine.
The browser is Debian's ``chromium`` driven by Playwright; Playwright never downloads one.
"""

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.platform.live import BASE_DIR, ServerProcess, daphne, database_migrate, free_port, manage, server_env

CHROMIUM = Path(os.environ.get("WEFT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = BASE_DIR / "test-artifacts"
STARTUP_TIMEOUT_S = 60
DEMO_LINE = re.compile(r"username: demo\s+password: (\S+)")
# Only to try the console before config/ wires it in: a settings module that does.
SETTINGS_MODULE = os.environ.get("WEFT_E2E_SETTINGS_MODULE", "config.settings")


class SlowServer:
    """An HTTP server whose ``/slow`` answers only when released (or after ``hold_s``)."""

    def __init__(self, *, hold_s: float = 25):
        self.release = threading.Event()
        self.requests = 0
        hold = self.release
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                hold.wait(hold_s)
                with contextlib.suppress(OSError):
                    body = b'{"done": true}'
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "SlowServer":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class LiveConsole:
    base_url: str
    username: str
    password: str
    slow_url: str
    process: ServerProcess


@pytest.fixture(scope="module")
def slow_server() -> Iterator[SlowServer]:
    with SlowServer() as server:
        yield server


@pytest.fixture(scope="module")
def live_console(tmp_path_factory, slow_server) -> Iterator[LiveConsole]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does).")
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    env = server_env(
        DJANGO_SETTINGS_MODULE=SETTINGS_MODULE,
        DATABASE_URL=f"sqlite:///{tmp / 'e2e.sqlite3'}",
        # DEBUG serves the static files from the source tree, as `make serve` does before
        # collectstatic; cookies over plain http.
        DEBUG="1",
        WEFT_OUTBOUND_ALLOW=f"127.0.0.1:{slow_server.port}",
    )
    database_migrate(env)
    demo = DEMO_LINE.search(manage("weft_demo", env=env))
    assert demo, "weft_demo printed no password for the demo user"
    with daphne(port=port, env=env) as process:
        base_url = f"http://127.0.0.1:{port}"
        process.wait_until_answering(f"{base_url}/login/", timeout=STARTUP_TIMEOUT_S)
        yield LiveConsole(
            base_url=base_url,
            username="demo",
            password=demo.group(1),
            slow_url=f"http://127.0.0.1:{slow_server.port}/slow",
            process=process,
        )


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Watched:
    """A page whose console errors, uncaught exceptions and websockets are collected."""

    page: object
    errors: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)


# Records every state each drawn node takes, from its first drawing on: proof that the colours
# changed in the page as events came, not only that the final page shows them.
STATE_RECORDER = """
window.__nodeStates = {};
const record = (el) => {
  const id = el.getAttribute("data-node-id");
  const states = (window.__nodeStates[id] ||= []);
  const value = el.getAttribute("data-state");
  if (states[states.length - 1] !== value) states.push(value);
};
new MutationObserver((mutations) => {
  for (const m of mutations) {
    if (m.type === "attributes") {
      if (m.target.matches("g.node[data-node-id]")) record(m.target);
      continue;
    }
    for (const added of m.addedNodes) {
      if (added.nodeType !== 1) continue;
      if (added.matches("g.node[data-node-id]")) record(added);
      added.querySelectorAll("g.node[data-node-id]").forEach(record);
    }
  }
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"]});
"""


@pytest.fixture
def open_page(browser, live_console):
    """``open_page(width, height)``: a signed-in page; at teardown, no console error is allowed."""
    contexts = []
    watched_pages: list[Watched] = []

    def _open(*, width: int = 1280, height: int = 900, mobile: bool = False) -> Watched:
        context = browser.new_context(
            base_url=live_console.base_url,
            viewport={"width": width, "height": height},
            is_mobile=mobile,
            has_touch=mobile,
        )
        context.set_default_timeout(15_000)
        context.add_init_script(STATE_RECORDER)
        contexts.append(context)
        page = context.new_page()
        watched = Watched(page=page)
        page.on(
            "console",
            lambda message: message.type == "error" and watched.errors.append(f"console: {message.text}"),
        )
        page.on("pageerror", lambda error: watched.errors.append(f"page error: {error}"))
        page.on("websocket", lambda socket: watched.sockets.append(socket.url))
        watched_pages.append(watched)
        page.goto("/login/")
        page.fill('input[name="username"]', live_console.username)
        page.fill('input[name="password"]', live_console.password)
        page.click('button[type="submit"]')
        page.wait_for_url(f"{live_console.base_url}/")
        return watched

    yield _open
    for context in contexts:
        context.close()
    errors = [error for watched in watched_pages for error in watched.errors]
    assert errors == [], f"the console logged errors:\n{chr(10).join(errors)}\nserver:\n{live_console.process.output}"


@pytest.fixture
def screenshot():
    """``screenshot(page, name)``: a full-page PNG in test-artifacts/ (git-ignored); its path."""

    def _save(page, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}-{int(time.time())}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return _save
