"""The node result cache: a node with ``cache`` reuses the output of an earlier execution of the same type,
config and inputs, within its workflow, its owner and who started the run; an operator flushes a workflow's.

The llm tests run real runs (``run_execute``: the database journal, the Django cache) against the fake
OpenAI server on loopback, and count the requests it was sent."""

import asyncio
import uuid

import pytest

from history.models import AuditLog, UsageMetric
from tests.engine.conftest import chain, end, node, start
from tests.factories import LLMProviderFactory, RunFactory, UserFactory, WorkflowFactory
from workflows.engine import MemoryJournal, RunExecutor, TaskRecord, validate_graph
from workflows.execution.node_cache import ScopedNodeCache
from workflows.execution.runner import run_execute
from workflows.models import Run, RunEvent


class DictCache:
    """A cache in a dict, counting its lookups."""

    def __init__(self):
        self.entries: dict[str, dict] = {}
        self.ttls: dict[str, int] = {}
        self.lookups = 0

    async def get(self, key: str) -> dict | None:
        self.lookups += 1
        return self.entries.get(key)

    async def set(self, key: str, value: dict, ttl_s: int) -> None:
        self.entries[key], self.ttls[key] = value, ttl_s


class BrokenCache:
    async def get(self, key: str) -> dict | None:
        raise ConnectionError("the cache is down")

    async def set(self, key: str, value: dict, ttl_s: int) -> None:
        raise ConnectionError("the cache is down")


def cached(node_spec: dict, ttl_s=60) -> dict:
    return {**node_spec, "cache": {"ttl_s": ttl_s}}


def greeting(template: str = "Hi {{ start.city }}") -> dict:
    return chain(
        start("city", "day"), cached(node("greet", "template", {"template": template})), end(text="{{ greet.text }}")
    )


def run_graph(graph: dict, inputs: dict, *, cache=None, run_id: str = "run", journal=None) -> MemoryJournal:
    journal = journal or MemoryJournal()
    options = {"cache": cache} if cache is not None else {}
    executor = RunExecutor(graph=graph, inputs=inputs, system={"run_id": run_id}, journal=journal, **options)
    assert asyncio.run(executor.run()).status == "succeeded"
    return journal


def greet_events(journal: MemoryJournal) -> list[tuple[str, bool]]:
    return [(event["type"], event["data"].get("cached", False)) for event in journal.events if event["node"] == "greet"]


# --- The executor ------------------------------------------------------------------------------------


def test_the_same_values_read_reuse_the_result_and_other_values_execute_again():
    cache, graph = DictCache(), greeting()

    first = run_graph(graph, {"city": "Oslo", "day": "Mon"}, cache=cache)
    again = run_graph(graph, {"city": "Oslo", "day": "Tue"}, cache=cache)  # `day` is not read by the node
    other = run_graph(graph, {"city": "Rome", "day": "Mon"}, cache=cache)

    assert greet_events(first) == [("node.started", False), ("node.succeeded", False)]
    assert greet_events(again) == [("node.succeeded", True)]
    assert again.outputs == first.outputs == {"text": "Hi Oslo"}
    assert again.tasks[("", "greet")].status == "succeeded"
    assert greet_events(other) == [("node.started", False), ("node.succeeded", False)]
    assert other.outputs == {"text": "Hi Rome"}
    assert list(cache.ttls.values()) == [60, 60]


def test_a_changed_config_is_a_miss_and_a_node_reading_the_run_id_never_hits():
    cache = DictCache()
    run_graph(greeting(), {"city": "Oslo"}, cache=cache)

    changed = run_graph(greeting("Hello {{ start.city }}"), {"city": "Oslo"}, cache=cache)
    by_run = [run_graph(greeting("{{ sys.run_id }}"), {}, cache=cache, run_id=run_id) for run_id in ("r1", "r2")]

    assert greet_events(changed)[-1] == ("node.succeeded", False)
    assert [greet_events(journal)[-1] for journal in by_run] == [("node.succeeded", False)] * 2


def test_without_a_cache_every_run_executes_the_node():
    """What the try-a-node endpoint and any graph run outside the platform get."""
    for _ in range(2):
        assert greet_events(run_graph(greeting(), {"city": "Oslo"})) == [
            ("node.started", False),
            ("node.succeeded", False),
        ]


def test_a_failing_cache_leaves_the_run_uncached_and_succeeding():
    journal = run_graph(greeting(), {"city": "Oslo"}, cache=BrokenCache())

    assert journal.outputs == {"text": "Hi Oslo"}
    assert greet_events(journal) == [("node.started", False), ("node.succeeded", False)]


def test_a_resumed_run_replays_what_it_recorded_without_asking_the_cache():
    cache = DictCache()
    previous = {("", "greet"): TaskRecord("succeeded", 1, {"text": "recorded"})}

    journal = run_graph(greeting(), {"city": "Oslo"}, cache=cache, journal=MemoryJournal(previous=previous))

    assert journal.outputs == {"text": "recorded"}
    assert cache.lookups == 0


# --- Validation --------------------------------------------------------------------------------------


def with_cache_on(node_id: str, cache, graph: dict | None = None) -> dict:
    graph = graph or greeting()
    for spec in graph["nodes"]:
        if spec["id"] == node_id:
            spec["cache"] = cache
    return graph


@pytest.mark.parametrize(
    ("node_id", "cache", "field"),
    [
        ("end", {"ttl_s": 60}, "cache"),
        ("greet", {"ttl_s": 0}, "cache.ttl_s"),
        ("greet", {"ttl_s": "60"}, "cache.ttl_s"),
        ("greet", {"ttl_s": 1.5}, "cache.ttl_s"),
        ("greet", {}, "cache.ttl_s"),
        ("greet", {"ttl_s": 60, "size": 1}, "cache.size"),
        ("greet", {"ttl_s": 101}, "cache.ttl_s"),
    ],
)
def test_a_bad_cache_is_an_issue_naming_the_node_and_the_field(engine_settings, node_id, cache, field):
    engine_settings(NODE_CACHE_MAX_TTL_S=100)

    issues = validate_graph(with_cache_on(node_id, cache))

    assert [(issue.node, issue.field) for issue in issues] == [(node_id, field)]


def test_a_cacheable_node_may_be_cached_up_to_the_operator_maximum(engine_settings):
    engine_settings(NODE_CACHE_MAX_TTL_S=100)

    assert validate_graph(with_cache_on("greet", {"ttl_s": 100})) == []
    assert validate_graph(with_cache_on("greet", None)) == []


def test_an_llm_node_with_memory_cannot_be_cached():
    config = {"provider": "00000000-0000-0000-0000-000000000000", "prompt": "Hi", "memory": {"enabled": True}}
    graph = chain(start("city"), cached(node("ask", "llm", config)), end(text="{{ ask.text }}"))

    issues = validate_graph(graph)

    assert [(issue.node, issue.field) for issue in issues] == [("ask", "cache")]
    assert "memory" in issues[0].message


@pytest.mark.django_db
def test_the_api_refuses_a_cache_on_a_type_that_has_none_and_keeps_a_valid_one(user_client):
    refused = user_client.post("/api/v1/workflows/", {"name": "W", "graph": with_cache_on("end", {"ttl_s": 60})})
    assert refused.status_code == 400
    assert {"node": "end", "field": "cache"} in [
        {key: error[key] for key in ("node", "field")} for error in refused.json()["errors"]
    ]

    created = user_client.post("/api/v1/workflows/", {"name": "W", "graph": greeting()})
    assert created.status_code == 201, created.json()
    fetched = user_client.get(f"/api/v1/workflows/{created.json()['id']}/").json()["graph"]
    assert {spec["id"]: spec.get("cache") for spec in fetched["nodes"]} == {
        "start": None,
        "greet": {"ttl_s": 60},
        "end": None,
    }


# --- Runs: the llm node against the fake provider, the scopes, the flush -----------------------------


def ask_graph(provider_id) -> dict:
    config = {"provider": str(provider_id), "prompt": "Weather in {{ start.city }}?", "stream": False}
    return chain(start("city"), cached(node("ask", "llm", config), ttl_s=600), end(text="{{ ask.text }}"))


@pytest.fixture
def asking(fake_openai, allow_loopback):
    """A workflow whose llm node asks the fake server through its owner's provider; ``run(inputs)`` runs it."""
    owner = UserFactory()
    workflow = WorkflowFactory(owner=owner)
    provider = LLMProviderFactory(owner=owner, base_url=fake_openai.base_url, api_key=fake_openai.api_key)

    def run(inputs: dict, *, of=None, **fields) -> Run:
        made = RunFactory(workflow=of or workflow, graph=ask_graph(provider.pk), inputs=inputs, **fields)
        assert asyncio.run(run_execute(run_id=made.pk)) == "succeeded"
        made.refresh_from_db()
        return made

    run.workflow, run.owner = workflow, owner
    return run


def was_cached(run: Run) -> bool:
    return RunEvent.objects.get(run=run, node_id="ask", type="node.succeeded").data.get("cached", False)


def tokens(run: Run) -> int:
    return sum(row.tokens_in + row.tokens_out for row in UsageMetric.objects.filter(run=run))


@pytest.mark.django_db(transaction=True)
def test_an_llm_node_asked_twice_the_same_calls_the_provider_once_and_the_hit_spends_no_tokens(asking, fake_openai):
    first = asking({"city": "Oslo"})
    second = asking({"city": "Oslo"})

    assert len(fake_openai.requests) == 1
    assert (was_cached(first), was_cached(second)) == (False, True)
    assert second.outputs == first.outputs == {"text": "You said: Weather in Oslo?"}
    assert tokens(first) > 0
    assert tokens(second) == 0
    assert second.tasks.get(node_id="ask").output_data["usage"]["cached"] is True


@pytest.mark.django_db(transaction=True)
def test_other_inputs_another_user_or_another_workflow_ask_the_provider_again(asking, fake_openai):
    asking({"city": "Oslo"})

    rome = asking({"city": "Rome"})
    someone_else = asking({"city": "Oslo"}, triggered_by=UserFactory())
    elsewhere = asking({"city": "Oslo"}, of=WorkflowFactory(owner=asking.owner))

    assert len(fake_openai.requests) == 4
    assert not any(was_cached(run) for run in (rome, someone_else, elsewhere))


@pytest.mark.django_db(transaction=True)
def test_an_operator_flushes_one_workflows_results_in_the_admin_audited(asking, fake_openai, client):
    sibling = WorkflowFactory(owner=asking.owner)
    asking({"city": "Oslo"})
    asking({"city": "Oslo"}, of=sibling)
    operator = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(operator)

    response = client.post(
        "/admin/workflows/workflow/", {"action": "node_cache_flush", "_selected_action": [asking.workflow.pk]}
    )

    assert response.status_code == 302
    assert not was_cached(asking({"city": "Oslo"}))
    assert was_cached(asking({"city": "Oslo"}, of=sibling))
    assert len(fake_openai.requests) == 3
    flushed = AuditLog.objects.filter(action="workflow.node_cache_flush", actor=operator)
    assert list(flushed.values_list("target_id", flat=True)) == [str(asking.workflow.pk)]


def test_a_result_larger_than_the_operator_bound_is_not_kept(engine_settings):
    engine_settings(NODE_CACHE_MAX_ENTRY_BYTES=100)

    async def owner_id():
        return 1

    store = ScopedNodeCache(workflow_id=uuid.uuid4(), owner_id=owner_id, requester="-")

    async def store_and_read() -> tuple:
        await store.set("small", {"text": "x" * 10}, 60)
        await store.set("large", {"text": "x" * 200}, 60)
        return await store.get("small"), await store.get("large")

    assert asyncio.run(store_and_read()) == ({"text": "x" * 10}, None)
