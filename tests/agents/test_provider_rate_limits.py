"""Provider rate limits from metadata: counted in the shared cache, waited for or raised with retry_after."""

import asyncio
import json
import threading
import time

import pytest

from agents.models import Tool
from agents.rate_limits import (
    ProviderRateLimited,
    provider_rate_limit,
    provider_rate_limit_acquire,
    provider_rate_limit_hit,
)
from agents.services import tool_approve
from tests.engine.conftest import chain, end, node, start
from tests.factories import AgentFactory, LLMProviderFactory, ToolFactory, UserFactory, WorkflowFactory, owner_ports
from tests.fakes.openai_server import Answer
from workflows.engine.executor import RunExecutor
from workflows.engine.journal import MemoryJournal

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def clock(monkeypatch):
    """A wall clock that starts 0.1 s into a whole minute when first read, then runs at real speed."""
    state = {}

    def now() -> float:
        if "t0" not in state:
            state["t0"] = time.monotonic()
        return 1_800_000_000.1 + time.monotonic() - state["t0"]

    monkeypatch.setattr("config.rate_limits._now", now)


def provider_with(**rate_limit):
    return LLMProviderFactory(metadata={"rate_limit": rate_limit})


@pytest.mark.parametrize(
    ("metadata", "windows", "max_wait_s"),
    [
        ({"rate_limit": {"requests_per_minute": 60}}, ((60, 60),), 0.0),
        (
            {"rate_limit": {"requests_per_second": 2, "requests_per_minute": 10, "max_wait_s": 3}},
            ((2, 1), (10, 60)),
            3.0,
        ),
    ],
)
def test_limits_are_read_from_metadata(metadata, windows, max_wait_s):
    limit = provider_rate_limit(metadata)
    assert limit.windows == windows
    assert limit.max_wait_s == max_wait_s


@pytest.mark.parametrize(
    "metadata", [{}, {"rate_limit": {}}, {"rate_limit": {"requests_per_minute": 0}}, {"rate_limit": "fast"}, []]
)
def test_no_usable_limit_means_no_limit(metadata):
    assert provider_rate_limit(metadata) is None


def acquire(provider) -> None:
    asyncio.run(provider_rate_limit_acquire(provider=provider))


def test_the_limit_reached_raises_a_retryable_error_with_retry_after(clock):
    provider = provider_with(requests_per_minute=2)
    acquire(provider)
    acquire(provider)
    with pytest.raises(ProviderRateLimited) as raised:
        acquire(provider)
    assert 59 < raised.value.retry_after <= 59.9


def test_a_short_wait_allowed_by_max_wait_s_is_waited_for(clock):
    provider = provider_with(requests_per_second=1, max_wait_s=2)
    acquire(provider)
    started = time.monotonic()
    acquire(provider)
    assert time.monotonic() - started >= 0.8  # it waited for the next request's turn (and did not raise)


def test_each_provider_has_its_own_count(clock):
    first, second = provider_with(requests_per_minute=1), provider_with(requests_per_minute=1)
    acquire(first)
    acquire(second)
    with pytest.raises(ProviderRateLimited):
        acquire(first)


def test_concurrent_callers_share_one_count(clock):
    """Workers each take requests from the cache's counter (Redis with REDIS_URL): never more than the limit."""
    provider = provider_with(requests_per_minute=5)
    allowed = []
    barrier = threading.Barrier(20)

    def worker():
        barrier.wait()
        allowed.append(provider_rate_limit_hit(provider=provider) is None)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 5


def test_an_agent_limited_mid_loop_is_retried_after_retry_after(clock, fake_openai, allow_loopback):
    owner = UserFactory()
    provider = LLMProviderFactory(
        owner=owner,
        base_url=fake_openai.base_url,
        api_key=fake_openai.api_key,
        metadata={"rate_limit": {"requests_per_second": 1}},
    )
    echo = ToolFactory(owner=owner, name="echo", kind=Tool.Kind.BUILTIN, endpoint="")
    tool_approve(tool=echo, reviewer=UserFactory(is_staff=True))
    agent = AgentFactory(owner=owner, provider=provider)
    agent.tools.set([echo])
    workflow = WorkflowFactory(owner=owner)
    fake_openai.script(
        Answer(tool_calls=[{"id": "c1", "name": "echo", "arguments": json.dumps({"say": "hi"})}]),
        Answer(text="Done after waiting."),
    )
    think = node("think", "agent", {"agent": str(agent.id), "input": "go"})
    think["error_policy"] = {"retry": {"max_attempts": 2, "initial_s": 0.01, "jitter": False}}
    graph = chain(start(), think, end(text="{{ think.text }}"))
    journal = MemoryJournal()
    system = {"run_id": "rl-run", "workflow_id": str(workflow.id)}
    result = asyncio.run(
        RunExecutor(graph=graph, inputs={}, system=system, journal=journal, ports=owner_ports(workflow)).run()
    )
    assert result.status == "succeeded", result.error
    assert result.outputs["text"] == "Done after waiting."
    retrying = [e["data"] for e in journal.events if e["type"] == "node.retrying"]
    assert len(retrying) == 1
    assert "rate limit" in retrying[0]["error"]
    assert 0 < retrying[0]["delay_s"] <= 0.9
    assert len(fake_openai.requests) == 2
