"""Golden run histories, and every crash within them resumed.

Each ``golden/*.json`` holds ``graph``, ``inputs``, ``status``, ``outputs``, ``error`` and
``events``: ``[type, node, data]`` for each event in order, the data with its timings replaced by
``TIMING`` (they differ from one run to the next). Branches that run side by side interleave
their events differently from one run to the next, so events are compared node by node: each
node's (and each iteration scope's) own events, in their order. A change of behaviour shows up as
a diff here.

Each history is also replayed through the resume path. The database journal stores events in
``seq`` order, so what a crash leaves stored is a prefix of the history: for every prefix, the
task rows as they stood after it are handed to a new executor (``MemoryJournal.previous``, what
``DatabaseJournal.completed`` reads from the rows), which resumes the run. It must end as the
golden run did, and no node whose outcome is stored executes again: the test node types with
effects count their executions (``EXECUTIONS``), seeded with the executions the prefix saw end.

After an intended change, regenerate with ``WEFT_GOLDEN_UPDATE=1 pytest tests/engine/test_golden.py``:
the files that changed are rewritten and their tests fail, naming them, so that the diff is
reviewed (``git diff tests/engine/golden/``) before it is committed. CI never regenerates.
"""

import json
import os
from pathlib import Path

import pytest

from tests.engine.conftest import EXECUTIONS, execute
from workflows.engine.journal import TaskRecord
from workflows.engine.nodes import NodeContext, NodeType, get_node_type, register

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*.json"))
#: Event data that measures time: replaced by TIMING in the goldens.
TIMING_KEYS = frozenset({"duration_ms", "delay_s"})
TIMING = "<timing>"
#: Event types that end one execution of a node (its effect, if it has one, happened).
EXECUTION_ENDS = frozenset({"node.succeeded", "node.failed", "node.retrying"})
#: Task statuses a resumed run does not execute again.
STORED_OUTCOMES = frozenset({"succeeded", "failed", "skipped"})

#: Goldens whose graphs hold no node with effects (their replays still check the outputs).
WITHOUT_EFFECTS = frozenset({"chain", "condition_parallel_join", "iteration"})

if get_node_type("test_effect") is None:

    @register
    class Effect(NodeType):
        """Acts outside the run (as a request would; counted in EXECUTIONS): returns what it was told to say."""

        type = "test_effect"
        config_schema = {"type": "object", "properties": {"say": {"type": "string"}}}
        outputs = frozenset({"said"})

        async def execute(self, ctx: NodeContext, config: dict) -> dict:
            EXECUTIONS[(ctx.run_id, ctx.node_id, ctx.scope)] += 1
            return {"said": await ctx.render(config.get("say", ""))}


def normalised(data: dict) -> dict:
    return {key: TIMING if key in TIMING_KEYS else value for key, value in data.items()}


def history(journal) -> list[list]:
    return [[event["type"], event["node"], normalised(event["data"])] for event in journal.events]


def by_node(events: list[list]) -> dict[tuple[str, str], list[list]]:
    """Each node's events (per iteration scope), in order: what does not depend on how branches interleave."""
    nodes: dict[tuple[str, str], list[list]] = {}
    for event_type, node, data in events:
        scope = data.get("scope", "") if isinstance(data, dict) else ""
        nodes.setdefault((node, scope), []).append([event_type, data])
    return nodes


def golden_text(case: dict) -> str:
    """The case as JSON, one event a line (a diff shows which events changed)."""
    head = json.dumps({key: value for key, value in case.items() if key != "events"}, indent=2, ensure_ascii=False)
    events = ",\n".join(f"    {json.dumps(event, ensure_ascii=False)}" for event in case["events"])
    return f'{head.removesuffix("}").rstrip()},\n  "events": [\n{events}\n  ]\n}}\n'


def forget_executions(run_id: str) -> None:
    for key in [key for key in EXECUTIONS if key[0] == run_id]:
        del EXECUTIONS[key]


def stored_after(events: list[dict]) -> dict[tuple[str, str], TaskRecord]:
    """The task rows after ``events``: each node execution's last change."""
    rows = {}
    for event in events:
        task = event["task"]
        if task is not None:
            rows[(task.scope, task.node_id)] = TaskRecord(task.status, task.attempt, task.output, task.error)
    return rows


def executions_ended(events: list[dict]) -> dict[tuple[str, str], int]:
    ended: dict[tuple[str, str], int] = {}
    for event in events:
        task = event["task"]
        if event["type"] in EXECUTION_ENDS and task is not None:
            ended[(task.scope, task.node_id)] = ended.get((task.scope, task.node_id), 0) + 1
    return ended


@pytest.fixture(scope="module")
def regenerate() -> bool:
    wanted = os.environ.get("WEFT_GOLDEN_UPDATE") == "1"
    if wanted and os.environ.get("CI"):
        pytest.fail("WEFT_GOLDEN_UPDATE=1 in CI: goldens are regenerated by hand and reviewed, never in CI.")
    return wanted


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
async def test_golden_history(path: Path, regenerate: bool):
    case = json.loads(path.read_text())
    run_id = f"golden-{path.stem}"
    forget_executions(run_id)
    result, journal = await execute(case["graph"], case.get("inputs", {}), run_id=run_id)
    observed = {"status": result.status, "outputs": result.outputs, "error": result.error, "events": history(journal)}
    expected = {key: case.get(key) for key in observed}
    if regenerate and comparable(observed) != comparable(expected):
        path.write_text(golden_text({**case, **observed}))
        pytest.fail(f"Rewrote {path.name}: review `git diff {path}` before committing it.")
    assert comparable(observed) == comparable(expected)


def comparable(history: dict) -> dict:
    return {**history, "events": by_node(history["events"])}


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
async def test_every_crash_in_a_golden_history_resumes_to_its_end_executing_nothing_stored_again(path: Path):
    case = json.loads(path.read_text())
    run_id = f"golden-{path.stem}"
    forget_executions(run_id)
    _, whole = await execute(case["graph"], case.get("inputs", {}), run_id=run_id)
    assert len(whole.events) == len(case["events"])
    effectful = {key for key in EXECUTIONS if key[0] == run_id}
    for length in range(len(whole.events) + 1):
        prefix = whole.events[:length]
        rows, ended = stored_after(prefix), executions_ended(prefix)
        forget_executions(run_id)
        for scope, node_id in ended:
            EXECUTIONS[(run_id, node_id, scope)] = ended[(scope, node_id)]
        result, _ = await execute(case["graph"], case.get("inputs", {}), run_id=run_id, previous=rows)
        crash = f"a crash after event {length} of {path.stem}"
        assert (result.status, result.outputs, result.error) == (case["status"], case["outputs"], case["error"]), crash
        for scope, node_id in [key for key, row in rows.items() if row.status in STORED_OUTCOMES]:
            again = EXECUTIONS[(run_id, node_id, scope)] - ended.get((scope, node_id), 0)
            assert again == 0, f"{crash}: {node_id} {scope} stored {rows[(scope, node_id)].status}, executed again"
    assert effectful or path.stem in WITHOUT_EFFECTS, f"{path.stem}: no node with effects executed"


def test_there_are_golden_histories_with_effects_in_branches_and_iterations():
    assert len(CASES) >= 9
    graphs = [json.dumps(json.loads(path.read_text())["graph"]) for path in CASES]
    assert any('"type": "test_effect"' in graph and '"type": "iteration"' in graph for graph in graphs)
