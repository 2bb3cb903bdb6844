"""A small OpenAI-compatible server the tests start on loopback (a real HTTP server in a thread).

It serves ``POST /v1/chat/completions`` (streaming as server-sent events, or one JSON answer)
and ``GET /v1/models``. Answers are scripted with :meth:`FakeOpenAI.script`; with nothing
scripted it echoes the last user message. Every request is recorded in ``requests``.
"""

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    """One scripted answer to a chat completion."""

    text: str = ""
    #: How the text is cut into streamed deltas; by default word by word.
    chunks: list[str] | None = None
    #: Tool calls to answer with: ``[{"id": "call_1", "name": "lookup", "arguments": "{...}"}]``.
    tool_calls: list[dict] = field(default_factory=list)
    status: int = 200
    retry_after: str | None = None
    error: str = "scripted error"
    #: Seconds to wait before answering, and between streamed chunks.
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    #: Accept the request and never answer (until the server stops).
    hang: bool = False
    usage: dict | None = None
    #: Leave the usage out of the stream, as some servers do.
    omit_usage: bool = False
    #: Append the request's Authorization header to the text, streamed 5 characters a delta (so the key is cut).
    echo_authorization: bool = False

    def deltas(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        words = self.text.split(" ")
        return [word if i == 0 else " " + word for i, word in enumerate(words)] if self.text else []


class FakeOpenAI:
    """Start with :meth:`start` (or use the ``fake_openai`` fixture); ``base_url`` ends in ``/v1``."""

    model = "fake-model"
    #: The provider ``kind`` whose wire protocol this fake speaks.
    kind = "openai"

    def __init__(self, *, api_key: str | None = None):
        self.api_key = api_key
        self.requests: list[dict] = []
        self._script: deque[Answer] = deque()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        """The request handler: a fake of another wire protocol (tests/fakes/anthropic_server.py) brings its own."""
        return _handler_for(self)

    def last_user_text(self, body: dict) -> str:
        return next((m.get("content", "") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")

    def script(self, *answers: Answer) -> None:
        with self._lock:
            self._script.extend(answers)

    def next_answer(self, body: dict) -> Answer:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return Answer(text=f"You said: {self.last_user_text(body)}")

    def start(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()


def _usage(body: dict, answer: Answer) -> dict:
    if answer.usage is not None:
        return answer.usage
    prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    completion = len(answer.text.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def json_send(handler: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict | None = None) -> None:
    """Answer ``handler``'s request with ``payload`` as JSON (every fake's way of answering)."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


def _handler_for(fake: FakeOpenAI):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            return

        def _send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
            json_send(self, status, payload, headers)

        def _authorized(self) -> bool:
            if fake.api_key is None or self.headers.get("Authorization") == f"Bearer {fake.api_key}":
                return True
            self._send_json(401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error"}})
            return False

        def do_GET(self):
            if self.path.rstrip("/") != "/v1/models":
                self._send_json(404, {"error": {"message": "not found"}})
                return
            if self._authorized():
                self._send_json(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._send_json(400, {"error": {"message": "body is not JSON"}})
                return
            fake.requests.append({"path": self.path, "headers": dict(self.headers), "json": body})
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send_json(404, {"error": {"message": "not found"}})
                return
            if not self._authorized():
                return
            answer = fake.next_answer(body)
            if answer.echo_authorization:
                text = f"{answer.text} {self.headers.get('Authorization', '')}"
                answer = replace(answer, text=text, chunks=[text[i : i + 5] for i in range(0, len(text), 5)])
            if answer.hang:
                fake._stopping.wait(600)
                return
            if answer.delay_s:
                time.sleep(answer.delay_s)
            if answer.status != 200:
                headers = {"Retry-After": answer.retry_after} if answer.retry_after is not None else {}
                self._send_json(answer.status, {"error": {"message": answer.error, "type": "scripted"}}, headers)
                return
            if body.get("stream"):
                self._stream(body, answer)
            else:
                self._send_json(200, self._completion(body, answer))

        def _completion(self, body: dict, answer: Answer) -> dict:
            message: dict = {"role": "assistant", "content": answer.text or None}
            if answer.tool_calls:
                message["tool_calls"] = [
                    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in answer.tool_calls
                ]
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "model": body.get("model", fake.model),
                "choices": [
                    {"index": 0, "message": message, "finish_reason": "tool_calls" if answer.tool_calls else "stop"}
                ],
                "usage": _usage(body, answer),
            }

        def _stream(self, body: dict, answer: Answer) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            model = body.get("model", fake.model)

            def event(payload) -> None:
                data = payload if isinstance(payload, str) else json.dumps(payload)
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()

            def chunk(delta: dict, finish_reason=None) -> dict:
                return {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                }

            event(chunk({"role": "assistant", "content": ""}))
            for piece in answer.deltas():
                if answer.chunk_delay_s:
                    time.sleep(answer.chunk_delay_s)
                event(chunk({"content": piece}))
            for index, call in enumerate(answer.tool_calls):
                head = {"index": index, "id": call["id"], "type": "function", "function": {"name": call["name"]}}
                event(chunk({"tool_calls": [{**head, "function": {**head["function"], "arguments": ""}}]}))
                half = len(call["arguments"]) // 2
                for part in (call["arguments"][:half], call["arguments"][half:]):
                    event(chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}))
            event(chunk({}, "tool_calls" if answer.tool_calls else "stop"))
            if body.get("stream_options", {}).get("include_usage") and not answer.omit_usage:
                event(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "choices": [],
                        "usage": _usage(body, answer),
                    }
                )
            event("[DONE]")
            self.close_connection = True

    return Handler
