"""What the fakes of the Anthropic and Gemini wire protocols share: a handler that plays scripted answers.

A subclass says where chat requests go, how the key is checked, and how an answer, a stream and
an error look on its wire; this class reads the request, records it, and plays the script's
timing (``hang``, ``delay_s``, ``chunk_delay_s``), errors (``status``, ``retry_after``) and
``echo_authorization`` (the key header appended to the text, cut in 5-character deltas).
"""

import json
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from .openai_server import Answer, json_send


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    #: Set by the fake that builds the handler class.
    fake = None
    #: The header that carries the key.
    key_header = ""

    def log_message(self, format, *args):
        return

    # --- what a protocol defines ---

    def chat_route(self, path: str) -> bool:
        raise NotImplementedError

    def models_route(self, path: str) -> bool:
        raise NotImplementedError

    def error_payload(self, status: int, message: str) -> dict:
        raise NotImplementedError

    def refused_status(self) -> int:
        return 401

    def check_body(self, body: dict, query: dict) -> str | None:
        """Why the request breaks the protocol's rules (a 400), or None."""
        return None

    def models_payload(self) -> dict:
        raise NotImplementedError

    def answer_payload(self, body: dict, answer: Answer) -> dict:
        raise NotImplementedError

    def stream_events(self, body: dict, answer: Answer):
        """``(event_name or None, payload, is_text_delta)``; ``chunk_delay_s`` passes before each text delta."""
        raise NotImplementedError

    def streaming(self, body: dict, query: dict) -> bool:
        raise NotImplementedError

    # --- the common part ---

    def send_json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        json_send(self, status, payload, headers)

    def authorized(self) -> bool:
        if self.fake.api_key is None or self.headers.get(self.key_header) == self.fake.api_key:
            return True
        status = self.refused_status()
        self.send_json(status, self.error_payload(status, "API key not valid."))
        return False

    def do_GET(self):
        url = urlsplit(self.path)
        query = {name: values[-1] for name, values in parse_qs(url.query).items()}
        self.fake.requests.append({"path": url.path, "query": query, "headers": dict(self.headers), "json": None})
        if not self.models_route(url.path):
            self.send_json(404, self.error_payload(404, "not found"))
            return
        if self.authorized():
            self.send_json(200, self.models_payload())

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self.send_json(400, self.error_payload(400, "body is not JSON"))
            return
        url = urlsplit(self.path)
        query = {name: values[-1] for name, values in parse_qs(url.query).items()}
        self.fake.requests.append({"path": url.path, "query": query, "headers": dict(self.headers), "json": body})
        if not self.chat_route(url.path):
            self.send_json(404, self.error_payload(404, "not found"))
            return
        if not self.authorized():
            return
        problem = self.check_body(body, query)
        if problem:
            self.send_json(400, self.error_payload(400, problem))
            return
        answer = self.fake.next_answer(body)
        if answer.echo_authorization:
            text = f"{answer.text} {self.headers.get(self.key_header, '')}"
            answer = replace(answer, text=text, chunks=[text[i : i + 5] for i in range(0, len(text), 5)])
        if answer.hang:
            self.fake._stopping.wait(600)
            return
        if answer.delay_s:
            time.sleep(answer.delay_s)
        if answer.status != 200:
            headers = {"Retry-After": answer.retry_after} if answer.retry_after is not None else {}
            self.send_json(answer.status, self.error_payload(answer.status, answer.error), headers)
            return
        if self.streaming(body, query):
            self._stream(body, answer)
        else:
            self.send_json(200, self.answer_payload(body, answer))

    def _stream(self, body: dict, answer: Answer) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for name, payload, is_text in self.stream_events(body, answer):
                if is_text and answer.chunk_delay_s:
                    time.sleep(answer.chunk_delay_s)
                head = f"event: {name}\n" if name else ""
                self.wfile.write(f"{head}data: {json.dumps(payload)}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return  # the client stopped reading (a size cap, a timeout): what the tests ask of it
