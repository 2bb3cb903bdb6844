"""Loopback HTTP servers for the outbound tests: one that answers a few routes, one that never answers.

:class:`FakeHTTP` routes (query parameters in brackets):

- ``/json`` answers ``{"hello": "world"}``; ``/echo`` answers the request back as JSON;
- ``/redirect`` [``to``, ``status``] redirects to ``to``;
- ``/status`` [``code``, ``retry_after``] answers that status (with ``Retry-After``);
- ``/bytes`` [``n``] answers ``n`` bytes; ``/drip`` [``n``, ``every``] one byte every ``every`` seconds;
- ``/body`` [``text``, ``type``] answers ``text`` (UTF-8; ``%00`` in the URL is a NUL byte) as ``type``.
"""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class FakeHTTP:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.requests: list[dict] = []
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def start(self) -> "FakeHTTP":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(fake: FakeHTTP):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            return

        def _answer(self, status: int, body: bytes, content_type: str = "application/json", headers=None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _handle(self):
            parts = urlsplit(self.path)
            query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            fake.requests.append({"method": self.command, "path": parts.path, "query": query, "body": body})
            route = parts.path
            if route == "/json":
                self._answer(200, json.dumps({"hello": "world"}).encode())
            elif route == "/echo":
                echoed = {
                    "method": self.command,
                    "path": parts.path,
                    "query": query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }
                self._answer(200, json.dumps(echoed).encode())
            elif route == "/redirect":
                self._answer(int(query.get("status", 302)), b"", "text/plain", {"Location": query["to"]})
            elif route == "/status":
                headers = {"Retry-After": query["retry_after"]} if "retry_after" in query else {}
                self._answer(int(query["code"]), b'{"error": "scripted"}', headers=headers)
            elif route == "/body":
                self._answer(200, query.get("text", "").encode(), query.get("type", "text/plain"))
            elif route == "/bytes":
                self._answer(200, b"x" * int(query["n"]), "application/octet-stream")
            elif route == "/drip":
                count, every = int(query.get("n", 100)), float(query.get("every", 0.2))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(count))
                self.end_headers()
                try:
                    for _ in range(count):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(every)
                except OSError:
                    return
            else:
                self._answer(404, b'{"error": "not found"}')

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Handler


class SilentServer:
    """Accepts connections on loopback and never answers: a blackholed peer."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._connections: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._connections.append(connection)

    def start(self) -> "SilentServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2)
        for connection in self._connections:
            connection.close()
        self._listener.close()


class Listener:
    """A loopback TCP port that records whether anything connected to it (for the sandbox tests)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0):
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.1)
        self.connections = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            connection.close()

    def start(self) -> "Listener":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2)
        self._listener.close()
