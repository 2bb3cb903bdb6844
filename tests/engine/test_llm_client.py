"""The OpenAI-compatible client (kind ``openai``) against a fake server on loopback.

The other kinds, and what all kinds share, are in test_llm_adapters.py."""

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace

import pytest
from django.db import connection

from agents.models import LLMProvider
from tests.factories import LLMProviderFactory
from tests.fakes.openai_server import Answer
from workflows.engine.errors import RetryableError
from workflows.engine.llm import (
    KeyMasker,
    LLMClient,
    LLMRequestError,
    LLMUnavailable,
    estimate_message_tokens,
    estimate_tokens,
)
from workflows.engine.net import OutboundBlocked, OutboundTimeout

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]


@pytest.fixture
def client(fake_openai, allow_loopback):
    return LLMClient(base_url=fake_openai.base_url, api_key=fake_openai.api_key, timeout_s=5)


async def test_a_streamed_answer_arrives_delta_by_delta_with_its_usage(client, fake_openai):
    fake_openai.script(
        Answer(text="Hello there, world", usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12})
    )
    deltas: list[str] = []

    async def on_delta(text: str) -> None:
        deltas.append(text)

    result = await client.chat(model="fake-model", messages=MESSAGES, temperature=0.1, on_delta=on_delta)
    assert deltas == ["Hello", " there,", " world"]
    assert result.text == "Hello there, world"
    assert result.usage == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    assert result.finish_reason == "stop"
    sent = fake_openai.requests[-1]["json"]
    assert sent["stream"] is True
    assert sent["messages"] == MESSAGES
    assert sent["temperature"] == 0.1


async def test_a_non_streamed_answer_is_read_whole(client, fake_openai):
    fake_openai.script(Answer(text="All at once"))
    result = await client.chat(model="fake-model", messages=MESSAGES, stream=False)
    assert result.text == "All at once"
    assert result.usage["completion_tokens"] == 3
    assert "stream" not in fake_openai.requests[-1]["json"]


async def test_streamed_tool_calls_are_put_back_together(client, fake_openai):
    fake_openai.script(Answer(tool_calls=[{"id": "call_1", "name": "lookup", "arguments": '{"city": "Oslo"}'}]))
    result = await client.chat(model="fake-model", messages=MESSAGES, tools=[{"type": "function"}])
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"city": "Oslo"}'}}
    ]


async def test_usage_is_estimated_when_the_server_sends_none(client, fake_openai):
    fake_openai.script(Answer(text="four words right here", omit_usage=True))
    result = await client.chat(model="fake-model", messages=MESSAGES)
    assert result.usage["estimated"] is True
    assert result.usage["completion_tokens"] == estimate_tokens("four words right here")
    assert result.usage["prompt_tokens"] == estimate_message_tokens(MESSAGES)


async def test_429_is_retryable_with_its_retry_after_in_seconds(client, fake_openai):
    fake_openai.script(Answer(status=429, retry_after="7", error="Rate limit reached"))
    with pytest.raises(LLMUnavailable, match="429: Rate limit reached") as limited:
        await client.chat(model="fake-model", messages=MESSAGES)
    assert isinstance(limited.value, RetryableError)
    assert limited.value.retry_after == 7


async def test_429_retry_after_as_an_http_date(client, fake_openai):
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    fake_openai.script(Answer(status=429, retry_after=later))
    with pytest.raises(LLMUnavailable) as limited:
        await client.chat(model="fake-model", messages=MESSAGES)
    assert 25 <= limited.value.retry_after <= 31


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(client, fake_openai, status):
    fake_openai.script(Answer(status=status))
    with pytest.raises(LLMUnavailable) as failed:
        await client.chat(model="fake-model", messages=MESSAGES)
    assert failed.value.status == status
    assert failed.value.retry_after is None


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_other_client_errors_are_not(client, fake_openai, status):
    fake_openai.script(Answer(status=status, error="model not found"))
    with pytest.raises(LLMRequestError, match="model not found"):
        await client.chat(model="nope", messages=MESSAGES)


async def test_the_api_key_never_shows_in_errors_or_logs(fake_openai, allow_loopback, caplog):
    key = fake_openai.api_key
    caplog.set_level(logging.DEBUG)
    wrong = LLMClient(base_url=fake_openai.base_url, api_key="sk-wrong-key-000111", timeout_s=5)
    with pytest.raises(LLMRequestError) as refused:
        await wrong.chat(model="fake-model", messages=MESSAGES)
    assert refused.value.status == 401
    assert "sk-wrong-key-000111" not in str(refused.value)

    echoing = LLMClient(base_url=fake_openai.base_url, api_key=key, timeout_s=5)
    fake_openai.script(Answer(status=400, error=f"Key {key} is not allowed to use this model"))
    with pytest.raises(LLMRequestError) as echoed:
        await echoing.chat(model="fake-model", messages=MESSAGES)
    assert key not in str(echoed.value)
    assert "***" in str(echoed.value)
    assert key not in repr(echoing)
    assert key not in caplog.text
    assert "sk-wrong-key-000111" not in caplog.text


@pytest.mark.parametrize("stream", [True, False])
async def test_a_key_echoed_in_the_answer_is_masked_in_text_deltas_and_tool_calls(fake_openai, allow_loopback, stream):
    key = fake_openai.api_key
    client = LLMClient(base_url=fake_openai.base_url, api_key=key, timeout_s=5)
    text = f"Your key is {key}, and again {key}."
    cut = [text[:15], text[15 : 12 + len(key)], text[12 + len(key) : -3], text[-3:]]
    call = {"id": "call_1", "name": "lookup", "arguments": f'{{"token": "{key}"}}'}
    fake_openai.script(Answer(text=text, chunks=cut, tool_calls=[call]))
    deltas: list[str] = []

    async def on_delta(piece: str) -> None:
        deltas.append(piece)

    result = await client.chat(model="fake-model", messages=MESSAGES, stream=stream, on_delta=on_delta)
    assert result.text == "Your key is ***, and again ***."
    assert "".join(deltas) == result.text
    assert all(key[:6] not in piece for piece in deltas)
    assert result.tool_calls[0]["function"]["arguments"] == '{"token": "***"}'


def test_the_key_masker_holds_back_only_what_could_start_the_key():
    masker = KeyMasker("secret")
    assert masker.feed("a sec") == "a "
    assert masker.feed("ret and sec") == "*** and "
    assert masker.feed("ond") == "second"
    assert masker.feed(" se") == " "
    assert masker.flush() == "se"
    assert KeyMasker("").feed("anything") == "anything"


async def test_a_hanging_server_fails_by_timeout(fake_openai, allow_loopback):
    fake_openai.script(Answer(hang=True))
    client = LLMClient(base_url=fake_openai.base_url, api_key=fake_openai.api_key, timeout_s=0.5)
    # The fake never answers: only the client's own timeout ends the call (wait_for is a safety net).
    with pytest.raises(OutboundTimeout):
        await asyncio.wait_for(client.chat(model="fake-model", messages=MESSAGES), 30)


async def test_the_client_goes_through_the_outbound_guard(fake_openai):
    client = LLMClient(base_url=fake_openai.base_url, api_key=fake_openai.api_key, timeout_s=5)
    with pytest.raises(OutboundBlocked, match="is not allowed"):
        await client.chat(model="fake-model", messages=MESSAGES)
    assert fake_openai.requests == []


async def test_list_models(client):
    assert await client.list_models() == ["fake-model"]


@pytest.mark.django_db(transaction=True)
async def test_a_client_for_a_provider_row_uses_its_decrypted_key(fake_openai, allow_loopback):
    def stored_and_read_back():
        try:
            created = LLMProviderFactory(base_url=fake_openai.base_url, api_key=fake_openai.api_key)
            return LLMProvider.objects.get(id=created.id)
        finally:
            connection.close()

    provider = await asyncio.to_thread(stored_and_read_back)
    assert provider.api_key == fake_openai.api_key
    result = await LLMClient.for_provider(provider, timeout_s=5).chat(model=provider.model, messages=MESSAGES)
    assert result.text == "You said: Say hello"


def test_a_provider_without_a_kind_is_openai_compatible():
    plain = LLMClient.for_provider(SimpleNamespace(base_url="https://x.example/v1/", api_key="sk-1"))
    gemini = LLMClient.for_provider(SimpleNamespace(base_url="https://g.example/v1beta", api_key="k", kind="gemini"))
    assert (plain.kind, plain.base_url) == ("openai", "https://x.example/v1")
    assert plain.models_request() == ("https://x.example/v1/models", {"Authorization": "Bearer sk-1"})
    assert gemini.models_request() == ("https://g.example/v1beta/models", {"x-goog-api-key": "k"})


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("hi", 1), ("a b c d e f", 6), ("x" * 400, 100), ("word " * 100, 125)],
)
def test_token_estimate(text, tokens):
    assert estimate_tokens(text) == tokens
