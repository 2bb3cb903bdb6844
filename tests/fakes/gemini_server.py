"""A small fake of the Gemini API the tests start on loopback (a real HTTP server in a thread).

It serves ``POST /v1beta/models/<model>:generateContent``, ``...:streamGenerateContent?alt=sse``
and ``GET /v1beta/models``, scripted with the same :class:`~tests.fakes.openai_server.Answer` as
the OpenAI fake. Like the API, it refuses a bad key with 400, and answers 400 to requests that
break its rules: turns of ``user`` and ``model`` only, alternating from ``user``; each
``functionResponse`` named after a ``functionCall`` of the turn before; and a key in the URL.
"""

import json
import re

from .llm_handler import ScriptedHandler
from .openai_server import Answer, FakeOpenAI

CHAT_PATH = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$")


class FakeGemini(FakeOpenAI):
    """Start with :meth:`start` (or use the ``fake_gemini`` fixture); ``base_url`` ends in ``/v1beta``."""

    kind = "gemini"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1beta"

    def handler_class(self):
        return type("GeminiHandler", (_GeminiHandler,), {"fake": self})

    def last_user_text(self, body: dict) -> str:
        for content in reversed(body.get("contents", [])):
            texts = [part["text"] for part in content.get("parts", []) if "text" in part]
            if content.get("role") == "user" and texts:
                return "".join(texts)
        return ""


def _usage(body: dict, answer: Answer) -> dict:
    if answer.usage is not None:
        usage = answer.usage
        prompt, completion, total = usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]
    else:
        prompt = sum(len(json.dumps(c.get("parts", [])).split()) for c in body.get("contents", []))
        completion = len(answer.text.split())
        total = prompt + completion
    return {"promptTokenCount": prompt, "candidatesTokenCount": completion, "totalTokenCount": total}


def _turn_problem(body: dict) -> str | None:
    previous_calls: set[str] = set()
    for number, content in enumerate(body.get("contents") or []):
        role = content.get("role")
        if role != ("user" if number % 2 == 0 else "model"):
            return f"contents[{number}]: roles must alternate between 'user' and 'model', starting with 'user'"
        parts = content.get("parts") or []
        if not parts:
            return f"contents[{number}].parts: must not be empty"
        for part in parts:
            response = part.get("functionResponse")
            if response is not None and response.get("name") not in previous_calls:
                return f"contents[{number}]: functionResponse {response.get('name')!r} answers no functionCall"
        previous_calls = {part["functionCall"]["name"] for part in parts if "functionCall" in part}
    return None


class _GeminiHandler(ScriptedHandler):
    key_header = "x-goog-api-key"

    def chat_route(self, path: str) -> bool:
        return CHAT_PATH.match(path) is not None

    def models_route(self, path: str) -> bool:
        return path.rstrip("/") == "/v1beta/models"

    def refused_status(self) -> int:
        return 400

    def error_payload(self, status: int, message: str) -> dict:
        names = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}
        return {"error": {"code": status, "message": message, "status": names.get(status, "INTERNAL")}}

    def check_body(self, body: dict, query: dict) -> str | None:
        if "key" in query:
            return "the key goes in the x-goog-api-key header in these tests, never in the URL"
        return _turn_problem(body)

    def models_payload(self) -> dict:
        return {"models": [{"name": f"models/{self.fake.model}", "displayName": "Fake"}]}

    def streaming(self, body: dict, query: dict) -> bool:
        return self.path.split("?")[0].endswith(":streamGenerateContent") and query.get("alt") == "sse"

    def _model(self) -> str:
        return CHAT_PATH.match(self.path.split("?")[0])["model"]

    def _calls(self, answer: Answer) -> list[dict]:
        return [{"functionCall": {"name": c["name"], "args": json.loads(c["arguments"])}} for c in answer.tool_calls]

    def answer_payload(self, body: dict, answer: Answer) -> dict:
        parts = ([{"text": answer.text}] if answer.text else []) + self._calls(answer)
        return {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": _usage(body, answer),
            "modelVersion": self._model(),
        }

    def stream_events(self, body: dict, answer: Answer):
        def chunk(parts: list[dict], finish: str | None = None) -> dict:
            candidate = {"content": {"role": "model", "parts": parts}, "index": 0}
            if finish:
                candidate["finishReason"] = finish
            payload = {"candidates": [candidate], "modelVersion": self._model()}
            if not answer.omit_usage:
                payload["usageMetadata"] = _usage(body, answer)
            return payload

        for piece in answer.deltas():
            yield None, chunk([{"text": piece}]), True
        calls = self._calls(answer)
        yield None, chunk(calls, "STOP") if calls else chunk([{"text": ""}], "STOP"), False
