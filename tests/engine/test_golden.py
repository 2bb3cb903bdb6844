"""Golden run histories: a graph and its inputs, and the events the run must produce, in order.

Each ``golden/*.json`` holds ``graph``, ``inputs``, ``status``, ``outputs`` and ``events`` (a
list of ``[type, node]``). A change of behaviour shows up as a diff here. After an intended
change, regenerate with ``WEFT_GOLDEN_UPDATE=1 pytest tests/engine/test_golden.py`` and review
the diff.
"""

import json
import os
from pathlib import Path

import pytest

from tests.engine.conftest import EXECUTIONS, execute, timeline

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
async def test_golden_history(path: Path):
    case = json.loads(path.read_text())
    run_id = f"golden-{path.stem}"
    for key in [key for key in EXECUTIONS if key[0] == run_id]:
        del EXECUTIONS[key]
    result, journal = await execute(case["graph"], case.get("inputs", {}), run_id=run_id)
    events = [list(pair) for pair in timeline(journal)]
    if os.environ.get("WEFT_GOLDEN_UPDATE") == "1":
        case.update(status=result.status, outputs=result.outputs, events=events)
        path.write_text(json.dumps(case, indent=2, ensure_ascii=False) + "\n")
    assert result.status == case["status"]
    assert result.outputs == case["outputs"]
    assert events == case["events"]


def test_there_are_golden_histories():
    assert len(CASES) >= 6
