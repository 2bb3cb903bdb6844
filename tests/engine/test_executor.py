"""The executor on a memory journal: branches, joins, retries, failure modes, timeouts, cancel, resume."""

import asyncio

import pytest

from tests.engine.conftest import EXECUTIONS, chain, edge, end, execute, node, start, timeline
from workflows.engine.executor import RunExecutor
from workflows.engine.journal import MemoryJournal, TaskRecord

BRANCHES = {
    "nodes": [
        start(t="number"),
        node(
            "check",
            "condition",
            {"cases": [{"id": "hot", "conditions": [{"variable": "{{ start.t }}", "operator": "gt", "value": 30}]}]},
        ),
        node("hot", "template", {"template": "hot"}),
        node("cold", "template", {"template": "cold"}),
        node("left", "test_sleep", {"seconds": 0.2}),
        node("right", "test_sleep", {"seconds": 0.2}),
        node("join", "aggregator", {"variables": ["{{ hot.text }}", "{{ cold.text }}"]}),
        node("both", "template", {"template": "{{ left.slept + right.slept }}"}),
        end(weather="{{ join.output }}", slept="{{ both.text }}"),
    ],
    "edges": [
        edge("start", "check"),
        edge("check", "hot", "hot"),
        edge("check", "cold", "else"),
        edge("hot", "join"),
        edge("cold", "join"),
        edge("start", "left"),
        edge("start", "right"),
        edge("left", "both"),
        edge("right", "both"),
        edge("join", "end"),
        edge("both", "end"),
    ],
}


async def test_condition_takes_one_branch_skips_the_other_and_the_join_waits_for_the_taken_one():
    result, journal = await execute(BRANCHES, {"t": 35})
    assert result.status == "succeeded"
    assert result.outputs == {"weather": "hot", "slept": "0.4"}
    assert ("node.skipped", "cold") in timeline(journal)
    assert ("node.started", "hot") in timeline(journal)
    assert journal.tasks[("", "cold")].status == "skipped"

    result, journal = await execute(BRANCHES, {"t": 5})
    assert result.outputs["weather"] == "cold"
    assert ("node.skipped", "hot") in timeline(journal)


async def test_independent_branches_run_concurrently():
    loop = asyncio.get_running_loop()
    began = loop.time()
    result, _ = await execute(BRANCHES, {"t": 35})
    assert result.status == "succeeded"
    assert loop.time() - began < 0.38  # two 0.2 s branches side by side, not one after the other


async def test_a_node_whose_every_inbound_path_was_skipped_is_skipped():
    graph = {
        "nodes": [
            start(t="number"),
            node("check", "condition", {"cases": [{"id": "yes", "expression": "{{ start.t > 1 }}"}]}),
            node("a", "template", {"template": "a"}),
            node("b", "template", {"template": "{{ a.text }}"}),
            node("other", "template", {"template": "other"}),
            node("join", "aggregator", {"variables": ["{{ b.text }}", "{{ other.text }}"]}),
            end(out="{{ join.output }}"),
        ],
        "edges": [
            edge("start", "check"),
            edge("check", "a", "yes"),
            edge("check", "other", "else"),
            edge("a", "b"),
            edge("b", "join"),
            edge("other", "join"),
            edge("join", "end"),
        ],
    }
    result, journal = await execute(graph, {"t": 0})
    assert result.outputs == {"out": "other"}
    assert [n for t, n in timeline(journal) if t == "node.skipped"] == ["a", "b"]


async def test_retry_with_backoff_then_success_honours_retry_after():
    graph = chain(
        start(),
        node(
            "flaky",
            "test_flaky",
            {"failures": 2, "retry_after": 0.05},
            retry={"max_attempts": 3, "backoff": "exponential", "initial_s": 0.01, "max_s": 1, "jitter": False},
        ),
        end(n="{{ flaky.n }}"),
    )
    result, journal = await execute(graph, run_id="retry")
    assert result.status == "succeeded"
    assert result.outputs == {"n": 3}
    flaky = [event for event in journal.events if event["node"] == "flaky"]
    assert [event["type"] for event in flaky] == [
        "node.started",
        "node.retrying",
        "node.started",
        "node.retrying",
        "node.started",
        "node.succeeded",
    ]
    retries = [event["data"] for event in flaky if event["type"] == "node.retrying"]
    assert [r["attempt"] for r in retries] == [1, 2]
    assert all(r["delay_s"] >= 0.05 for r in retries)  # Retry-After wins over the shorter backoff
    assert journal.tasks[("", "flaky")].attempt == 3


async def test_exponential_backoff_grows_and_is_capped():
    graph = chain(
        start(),
        node(
            "flaky",
            "test_flaky",
            {"failures": 3},
            retry={"max_attempts": 4, "backoff": "exponential", "initial_s": 0.01, "max_s": 0.03, "jitter": False},
        ),
        end(),
    )
    _, journal = await execute(graph, run_id="backoff")
    delays = [event["data"]["delay_s"] for event in journal.events if event["type"] == "node.retrying"]
    assert delays == [0.01, 0.02, 0.03]


async def test_a_non_retryable_error_is_not_retried():
    graph = chain(start(), node("bad", "test_flaky", {"failures": 5, "fatal": True}, retry={"max_attempts": 3}), end())
    result, journal = await execute(graph, run_id="fatal")
    assert result.status == "failed"
    assert [t for t, n in timeline(journal) if n == "bad"] == ["node.started", "node.failed"]


async def test_on_failure_fail_fails_the_run():
    graph = chain(
        start(), node("bad", "test_flaky", {"failures": 1}), node("after", "template", {"template": "x"}), end()
    )
    result, journal = await execute(graph, run_id="fail")
    assert result.status == "failed"
    assert "bad" in result.error
    assert "failure 1" in result.error
    assert timeline(journal)[-2:] == [("node.failed", "bad"), ("run.failed", "")]
    assert ("", "after") not in journal.tasks


async def test_on_failure_continue_yields_the_default_output():
    graph = chain(
        start(),
        node("bad", "test_flaky", {"failures": 1}, on_failure="continue", default_output={"n": -1}),
        end(n="{{ bad.n }}", error="{{ bad.error }}"),
    )
    result, journal = await execute(graph, run_id="continue")
    assert result.status == "succeeded"
    assert result.outputs == {"n": -1, "error": "failure 1"}
    assert journal.tasks[("", "bad")].status == "failed"


async def test_on_failure_skip_skips_what_only_it_leads_to():
    graph = {
        "nodes": [
            start(),
            node("bad", "test_flaky", {"failures": 1}, on_failure="skip"),
            node("only", "template", {"template": "{{ bad.n }}"}),
            node("other", "template", {"template": "other"}),
            node("join", "aggregator", {"variables": ["{{ only.text }}", "{{ other.text }}"], "mode": "list"}),
            end(out="{{ join.output }}"),
        ],
        "edges": [
            edge("start", "bad"),
            edge("bad", "only"),
            edge("start", "other"),
            edge("only", "join"),
            edge("other", "join"),
            edge("join", "end"),
        ],
    }
    result, journal = await execute(graph, run_id="skip")
    assert result.status == "succeeded"
    assert result.outputs == {"out": ["other"]}
    assert ("node.failed", "bad") in timeline(journal)
    assert ("node.skipped", "only") in timeline(journal)


async def test_on_failure_branch_follows_the_error_edges_with_the_error():
    graph = {
        "nodes": [
            start(),
            node("bad", "test_flaky", {"failures": 1}, on_failure="branch"),
            node("fine", "template", {"template": "fine"}),
            node("oops", "template", {"template": "handled: {{ bad.error }}"}),
            node("join", "aggregator", {"variables": ["{{ fine.text }}", "{{ oops.text }}"]}),
            end(out="{{ join.output }}"),
        ],
        "edges": [
            edge("start", "bad"),
            edge("bad", "fine"),
            edge("bad", "oops", "error"),
            edge("fine", "join"),
            edge("oops", "join"),
            edge("join", "end"),
        ],
    }
    result, journal = await execute(graph, run_id="branch")
    assert result.outputs == {"out": "handled: failure 1"}
    assert ("node.skipped", "fine") in timeline(journal)

    EXECUTIONS[("branch-ok", "bad", "")] = 1  # the next execution succeeds
    result, journal = await execute(graph, run_id="branch-ok")
    assert result.outputs == {"out": "fine"}
    assert ("node.skipped", "oops") in timeline(journal)


async def test_a_node_that_hangs_fails_by_its_timeout():
    # Sleeping 30 s, it would succeed: the run fails because the 0.1 s timeout ended the node.
    graph = chain(start(), node("hang", "test_sleep", {"seconds": 30}, timeout_s=0.1), end())
    result, journal = await execute(graph, run_id="timeout")
    assert result.status == "failed"
    assert "Timed out after 0.1 s" in journal.tasks[("", "hang")].error


async def test_a_timeout_is_retried_like_any_retryable_failure():
    graph = chain(
        start(),
        node("hang", "test_sleep", {"seconds": 30}, timeout_s=0.05, retry={"max_attempts": 2, "initial_s": 0}),
        end(),
    )
    result, journal = await execute(graph, run_id="timeout-retry")
    assert result.status == "failed"
    assert [t for t, n in timeline(journal) if n == "hang"] == [
        "node.started",
        "node.retrying",
        "node.started",
        "node.failed",
    ]


@pytest.mark.usefixtures("fast_polls")
async def test_cancel_stops_running_nodes_within_seconds():
    graph = {
        "nodes": [start(), node("a", "test_sleep", {"seconds": 30}), node("b", "test_sleep", {"seconds": 30}), end()],
        "edges": [edge("start", "a"), edge("start", "b"), edge("a", "end"), edge("b", "end")],
    }
    from workflows.engine.executor import RunExecutor
    from workflows.engine.journal import MemoryJournal

    journal = MemoryJournal()
    executor = RunExecutor(graph=graph, inputs={}, system={"run_id": "cancel"}, journal=journal)
    running = asyncio.create_task(executor.run())
    await asyncio.sleep(0.1)
    journal.cancel_requested = True
    result = await asyncio.wait_for(running, timeout=3)
    assert result.status == "cancelled"
    assert timeline(journal)[-1] == ("run.cancelled", "")
    assert journal.status == "cancelled"


@pytest.mark.usefixtures("fast_polls")
async def test_cancel_interrupts_a_retry_wait():
    graph = chain(start(), node("f", "test_flaky", {"failures": 5}, retry={"max_attempts": 5, "initial_s": 30}), end())
    from workflows.engine.executor import RunExecutor
    from workflows.engine.journal import MemoryJournal

    journal = MemoryJournal()
    running = asyncio.create_task(
        RunExecutor(graph=graph, inputs={}, system={"run_id": "cancel-wait"}, journal=journal).run()
    )
    await asyncio.sleep(0.1)
    journal.cancel_requested = True
    assert (await asyncio.wait_for(running, timeout=3)).status == "cancelled"


async def test_resume_does_not_execute_again_what_succeeded():
    graph = chain(
        start(),
        node("one", "test_flaky", {}),
        node("two", "test_flaky", {}),
        end(one="{{ one.n }}", two="{{ two.n }}"),
    )
    previous = {
        ("", "start"): TaskRecord(status="succeeded", attempt=1, output={}),
        ("", "one"): TaskRecord(status="succeeded", attempt=1, output={"n": 41}),
        ("", "two"): TaskRecord(status="running", attempt=1),
    }
    result, journal = await execute(graph, run_id="resume", previous=previous)
    assert result.outputs == {"one": 41, "two": 1}
    assert EXECUTIONS[("resume", "one", "")] == 0
    assert [n for t, n in timeline(journal) if t == "node.started"] == ["two", "end"]
    assert journal.tasks[("", "two")].attempt == 2


async def test_iteration_maps_a_sub_graph_with_a_concurrency_limit():
    inner = chain(
        node("in", "start"),
        node("nap", "test_sleep", {"seconds": 0.1}),
        node("say", "template", {"template": "{{ index }}:{{ item }}"}),
        end(line="{{ say.text }}"),
    )
    graph = chain(
        start(items="array"),
        node("each", "iteration", {"items": "{{ start.items }}", "graph": inner, "concurrency": 2}),
        end(results="{{ each.results }}"),
    )
    result, journal = await execute(graph, {"items": ["a", "b", "c", "d"]}, run_id="map")
    assert result.outputs == {"results": [{"line": f"{i}:{x}"} for i, x in enumerate("abcd")]}
    # Two at a time: in the journal's order, two naps overlap, never three.
    napping, most = 0, 0
    for event in journal.events:
        if event["node"] == "nap" and event["type"] in ("node.started", "node.succeeded"):
            napping += 1 if event["type"] == "node.started" else -1
            most = max(most, napping)
    assert most == 2
    assert journal.tasks[("each[3]", "say")].status == "succeeded"


async def test_iteration_of_something_that_is_not_a_list_fails_the_node():
    inner = chain(node("in", "start"), end())
    graph = chain(start("items"), node("each", "iteration", {"items": "{{ start.items }}", "graph": inner}), end())
    result, _ = await execute(graph, {"items": "abc"}, run_id="map-bad")
    assert result.status == "failed"
    assert "must be a list" in result.error


async def test_templates_are_sandboxed():
    graph = chain(start(), node("evil", "template", {"template": "{{ ''.__class__.__mro__ }}"}), end())
    result, _ = await execute(graph, run_id="sandbox")
    assert result.status == "failed"
    assert "unsafe" in result.error or "Template error" in result.error


async def test_an_undefined_variable_fails_the_node():
    graph = chain(start("city"), node("t", "template", {"template": "{{ start.city }}"}), end())
    result, _ = await execute(graph, {}, run_id="undefined")
    assert result.status == "failed"
    assert "has no attribute 'city'" in result.error


async def test_node_delta_events_stream_before_the_node_succeeds():
    graph = chain(start(), node("talk", "test_delta", {"parts": ["Hel", "lo"]}), end(text="{{ talk.text }}"))
    result, journal = await execute(graph, run_id="delta")
    assert result.outputs == {"text": "Hello"}
    talk = [(event["type"], event["data"].get("text")) for event in journal.events if event["node"] == "talk"]
    assert talk[1:3] == [("node.delta", "Hel"), ("node.delta", "lo")]


async def test_an_invalid_graph_fails_the_run_with_its_issues():
    result, journal = await execute(chain(start(), node("x", "teleport"), end()), run_id="invalid")
    assert result.status == "failed"
    assert "x type: Unknown node type" in result.error
    assert timeline(journal) == [("run.failed", "")]


async def test_seq_increases_by_one():
    _, journal = await execute(BRANCHES, {"t": 1}, run_id="seq")
    assert [event["seq"] for event in journal.events] == list(range(1, len(journal.events) + 1))


class _DurabilityLog(MemoryJournal):
    """Notes each flush and each outcome recorded, with whether it had to be stored at once."""

    def __init__(self):
        super().__init__()
        self.log: list[tuple] = []

    async def record(self, event_type, node_id, data, task=None, *, durable=False):
        if event_type in ("node.started", "node.succeeded", "node.failed"):
            self.log.append((event_type, node_id, durable))
        await super().record(event_type, node_id, data, task, durable=durable)

    async def flush(self):
        self.log.append(("flush",))


async def test_only_a_node_with_effects_waits_for_what_came_before_it_and_has_its_outcome_stored_at_once():
    graph = chain(start(), node("greet", "template", {"template": "hi"}), node("count", "test_flaky"), end())
    journal = _DurabilityLog()
    result = await RunExecutor(graph=graph, inputs={}, system={"run_id": "durability"}, journal=journal).run()
    assert result.status == "succeeded"
    assert journal.log == [
        ("node.started", "start", False),
        ("node.succeeded", "start", False),
        ("node.started", "greet", False),
        ("node.succeeded", "greet", False),
        ("flush",),  # before the node with effects starts: start's and greet's outcomes are stored
        ("node.started", "count", False),
        ("node.succeeded", "count", True),
        ("node.started", "end", False),
        ("node.succeeded", "end", False),
    ]
