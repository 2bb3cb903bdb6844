"""The code node in a run: inputs in, the returned dict out, failures, timeouts, cancel, warm chains."""

import asyncio
import time

import pytest

from tests.engine.conftest import chain, edge, end, execute, node, start, timeline
from workflows.engine import validate_graph
from workflows.engine.executor import RunExecutor
from workflows.engine.journal import MemoryJournal
from workflows.engine.sandbox import get_pool, shutdown

DOUBLE = "def main(n, label):\n    return {'double': n * 2, 'label': label.upper()}"


async def test_the_code_gets_rendered_inputs_and_its_dict_is_the_output():
    graph = chain(
        start(label="string", n="number"),
        node("calc", "code", {"code": DOUBLE, "inputs": {"n": "{{ start.n }}", "label": "{{ start.label }}"}}),
        end(double="{{ calc.double }}", label="{{ calc.label }}"),
    )
    result, _ = await execute(graph, {"n": 21, "label": "answer"})
    assert result.status == "succeeded", result.error
    assert result.outputs == {"double": 42, "label": "ANSWER"}


async def test_an_exception_fails_the_node_with_the_users_traceback_and_no_retry():
    code = "def main(**inputs):\n    return {'x': inputs['missing']}"
    retry = {"max_attempts": 3, "backoff": "fixed", "initial_s": 0.01, "jitter": False}
    graph = chain(start(), node("calc", "code", {"code": code}, retry=retry), end(x="{{ calc.x }}"))
    result, journal = await execute(graph)
    assert result.status == "failed"
    assert "KeyError: 'missing'" in result.error
    assert 'File "<code>", line 2, in main' in result.error
    assert ("node.retrying", "calc") not in timeline(journal)


async def test_the_nodes_timeout_kills_a_running_code():
    code = "import time\ndef main():\n    time.sleep(60)\n    return {}"
    graph = chain(start(), node("calc", "code", {"code": code}, timeout_s=0.5), end())
    started = time.monotonic()
    result, _ = await execute(graph)
    assert result.status == "failed"
    assert "Timed out" in result.error
    assert time.monotonic() - started < 60  # the node ended before the code's sleep would have


async def test_the_codes_own_limits_fail_the_node():
    code = "def main():\n    while True:\n        pass"
    graph = chain(start(), node("calc", "code", {"code": code, "cpu_s": 1, "timeout_s": 60}), end())
    result, _ = await execute(graph)
    assert result.status == "failed"
    assert "CPU time" in result.error


async def test_cancelling_the_run_stops_a_running_code(fast_polls):
    code = "import time\ndef main():\n    time.sleep(60)\n    return {}"
    journal = MemoryJournal()
    graph = chain(start(), node("calc", "code", {"code": code}), end())
    executor = RunExecutor(graph=graph, inputs={}, system={"run_id": "cancel-code"}, journal=journal)
    started = time.monotonic()
    run = asyncio.create_task(executor.run())
    await asyncio.sleep(0.5)
    journal.cancel_requested = True
    result = await run
    assert result.status == "cancelled"
    assert time.monotonic() - started < 60  # the run ended before the code's sleep would have


async def test_a_chain_of_forty_small_code_nodes_uses_warm_workers():
    code = "import time\ndef main(i):\n    time.sleep(0.01)\n    return {'i': i + 1}"
    nodes = [start()]
    previous: int | str = 0
    for index in range(40):
        nodes.append(node(f"c{index}", "code", {"code": code, "inputs": {"i": previous}}))
        previous = f"{{{{ c{index}.i }}}}"
    nodes.append(end(i=previous))
    pool = get_pool()
    for _ in range(3):  # a call takes an idle worker: the pool starts one more to keep min_idle
        await execute(chain(start(), node("warm", "code", {"code": code, "inputs": {"i": 0}}), end()))
    while pool.idle_count() <= pool.min_idle:
        await asyncio.sleep(0.02)
    workers_started = pool.started
    result, _ = await execute(chain(*nodes))
    assert result.status == "succeeded", result.error
    assert result.outputs == {"i": 40}
    # No worker (no interpreter) was started for any of the 40 nodes: the chain's speed is in make bench.
    assert pool.started == workers_started


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("def main(:\n    pass", "Line 1"),
        ("x = 1", "def main"),
        ("def helper():\n    pass", "def main"),
        ("", ""),
    ],
)
def test_code_that_cannot_run_is_reported_at_validation(code, message):
    graph = chain(start(), node("calc", "code", {"code": code}), end())
    issues = [issue for issue in validate_graph(graph) if issue.node == "calc"]
    assert [issue.field for issue in issues] == ["config.code"]
    assert message in issues[0].message


SLOW_CLOCKED = (
    "import time\ndef main():\n    start = time.time()\n    time.sleep(2)\n"
    "    return {'start': start, 'end': time.time()}"
)
CLOCKED = "import time\ndef main():\n    return {'start': time.time()}"


async def test_one_users_long_code_nodes_leave_a_worker_for_another_users(settings):
    # Four sandbox workers: user 1's run has four code nodes at once, each sleeping. User 2's
    # trivial code node, started while they sleep, runs before any of them ends.
    shutdown()
    settings.WEFT = {**settings.WEFT, "SANDBOX_MAX_WORKERS": 4, "SANDBOX_MIN_IDLE": 0}
    try:
        sleepers = [node(f"slow{i}", "code", {"code": SLOW_CLOCKED}) for i in range(4)]
        hog_graph = {
            "nodes": [start(), *sleepers, end(**{s["id"]: f"{{{{ {s['id']} }}}}" for s in sleepers})],
            "edges": [edge("start", s["id"]) for s in sleepers] + [edge(s["id"], "end") for s in sleepers],
        }
        hog = RunExecutor(graph=hog_graph, inputs={}, system={"run_id": "hog", "user_id": 1}, journal=MemoryJournal())
        hogging = asyncio.create_task(hog.run())
        while get_pool()._held.get("user:1", 0) < get_pool().user_share:
            await asyncio.sleep(0.02)
        other_graph = chain(start(), node("calc", "code", {"code": CLOCKED}), end(start="{{ calc.start }}"))
        other = RunExecutor(
            graph=other_graph, inputs={}, system={"run_id": "other", "user_id": 2}, journal=MemoryJournal()
        )
        result = await other.run()
        assert result.status == "succeeded", result.error
        hogged = await hogging
        assert hogged.status == "succeeded", hogged.error
        assert result.outputs["start"] < min(output["end"] for output in hogged.outputs.values())
    finally:
        shutdown()
