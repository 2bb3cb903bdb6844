"""The rule that makes a node's output storable (workflows/engine/outputs.py), and the executor applying it.

Strings and keys lose NUL and lone surrogates (to U+FFFD), NaN and ±Infinity become null;
what is not JSON, nested too deep or larger than NODE_OUTPUT_MAX_BYTES fails the node, once.
"""

import datetime
import math

import pytest

from tests.engine.conftest import EXECUTIONS, chain, end, execute, node, start, timeline
from workflows.engine.errors import NonRetryableError
from workflows.engine.nodes import NodeContext, NodeType, get_node_type, register
from workflows.engine.outputs import (
    MAX_DEPTH,
    OutputInvalid,
    OutputTooLarge,
    cleaned,
    output_checked,
    storable_json,
)

FFFD = "\ufffd"
RETRY = {"max_attempts": 3, "backoff": "fixed", "initial_s": 0.01, "jitter": False}


def nested(levels: int, inner=1):
    """``levels`` arrays one inside the other."""
    value = inner
    for _ in range(levels):
        value = [value]
    return value


#: Outputs a node can return, by name (a graph's config is JSON: it cannot hold them itself).
MADE = {
    "nul": lambda: {"text": "a\x00b", "k\x00": 1},
    "mixed": lambda: {"text": "lone \ud800 high", "n": math.nan, "list": [math.inf, -math.inf, 1.5]},
    "large": lambda: {"text": "x" * 2000},
    "set": lambda: {"tags": {"a", "b"}},
    "deep": lambda: {"tree": nested(MAX_DEPTH + 10)},
    "plain": lambda: {"text": "fine"},
    "refusable": lambda: {"text": "refuse-me"},  # see test_outputs_stored.py
}

if get_node_type("test_made") is None:

    @register
    class Made(NodeType):
        """Acts outside the run (counted), streams ``deltas`` as made, returns ``MADE[make]()``; with
        ``error`` it raises a NonRetryableError whose message holds a NUL and a lone surrogate."""

        type = "test_made"
        config_schema = {
            "type": "object",
            "properties": {"make": {"enum": list(MADE)}, "deltas": {"type": "boolean"}, "error": {"type": "boolean"}},
        }

        async def execute(self, ctx: NodeContext, config: dict) -> dict:
            EXECUTIONS[(ctx.run_id, ctx.node_id, ctx.scope)] += 1
            if config.get("deltas"):
                await ctx.delta({"text": "part\x00", "score": math.nan, "lone": "\udc80"})
            if config.get("error"):
                raise NonRetryableError("refused: \x00 and \ud800")
            return MADE[config.get("make", "plain")]()


# --- the rule ----------------------------------------------------------------------------------


def test_nul_in_strings_and_keys_becomes_the_replacement_character():
    assert cleaned({"a\x00": ["x\x00y", {"\x00": "\x00\x00"}]}) == {f"a{FFFD}": [f"x{FFFD}y", {FFFD: FFFD * 2}]}


def test_lone_surrogates_become_the_replacement_character_and_split_pairs_are_joined():
    value = {"k\udc80": ["\ud800", "a\udfffb", "end \ud83d", "\ud83d\ude00", "\ude00\ud83d"]}
    assert cleaned(value) == {f"k{FFFD}": [FFFD, f"a{FFFD}b", f"end {FFFD}", "😀", FFFD * 2]}


def test_nan_infinities_and_unwritable_integers_become_null():
    value = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "huge": 10**5000, "ok": [1.5, -2, 10**20]}
    assert cleaned(value) == {"nan": None, "inf": None, "-inf": None, "huge": None, "ok": [1.5, -2, 10**20]}


def test_tuples_become_lists_and_keys_that_are_numbers_booleans_or_null_become_strings_as_json_writes_them():
    assert cleaned({1: (1, 2), None: "n", 2.5: math.nan, False: "f"}) == {
        "1": [1, 2],
        "null": "n",
        "2.5": None,
        "false": "f",
    }


def test_a_normal_output_is_returned_as_it_is():
    output = {"text": "Grüße 😀", "n": 3, "x": 0.1, "ok": True, "none": None, "list": [{"a": []}], "esc": "\\u0000"}
    assert output_checked(output) is output
    assert cleaned(output) is output
    assert storable_json(output) is not None


@pytest.mark.parametrize(
    ("value", "where", "kind"),
    [
        ({"a": {"b": b"bytes"}}, "output.a.b", "bytes"),
        ({"tags": {1, 2}}, "output.tags", "set"),
        ({"list": [0, datetime.date(2024, 1, 1)]}, "output.list[1]", "date"),
        ({"o": object()}, "output.o", "object"),
        ({"bad\x00": [math.nan, {"k": Ellipsis}]}, f"output.bad{FFFD}[1].k", "ellipsis"),
    ],
)
def test_what_is_not_json_is_an_error_naming_where_and_what(value, where, kind):
    with pytest.raises(OutputInvalid) as raised:
        output_checked(value)
    assert str(raised.value).startswith(f"{where}: a value of type {kind} is not JSON")


def test_a_key_that_is_not_a_string_number_boolean_or_null_is_an_error():
    with pytest.raises(OutputInvalid, match=r"output\.a: a key of type tuple is not JSON"):
        output_checked({"a": {(1, 2): "pair"}})


def test_nesting_up_to_the_bound_is_kept_and_deeper_is_an_error():
    deepest = {"a": nested(MAX_DEPTH - 1)}  # the output itself is a level
    assert output_checked(deepest) is deepest
    wide = {"a": nested(MAX_DEPTH - 1), "many": [[] for _ in range(1000)]}  # many levels, none deeper
    assert output_checked(wide) is wide
    with pytest.raises(OutputInvalid, match=rf"output\.a\[0\]\[0\].*: nested deeper than {MAX_DEPTH}"):
        output_checked({"a": nested(MAX_DEPTH)})


def test_a_value_too_deep_for_json_or_recursion_is_an_error_not_a_crash():
    cycle: list = []
    cycle.append(cycle)
    for value in ({"a": nested(100_000)}, {"a": nested(100_000, inner=math.nan)}, {"cycle": cycle}):
        with pytest.raises(OutputInvalid, match="nested deeper than"):
            output_checked(value)


def test_an_output_over_the_limit_is_an_error_naming_the_limit_and_its_setting(settings):
    settings.WEFT = {**settings.WEFT, "NODE_OUTPUT_MAX_BYTES": 100}
    with pytest.raises(OutputTooLarge) as raised:
        output_checked({"text": "x" * 200})
    message = str(raised.value)
    assert "211 bytes" in message  # {"text":"…"}: compact JSON
    assert "limit of 100 bytes" in message
    assert "settings.WEFT['NODE_OUTPUT_MAX_BYTES']" in message
    assert "WEFT_NODE_OUTPUT_MAX_BYTES in the environment" in message
    assert isinstance(raised.value, NonRetryableError)


def test_the_size_is_of_the_cleaned_json_in_utf8(settings):
    settings.WEFT = {**settings.WEFT, "NODE_OUTPUT_MAX_BYTES": 14}
    assert output_checked({"t": "\x00\x00"}) == {"t": FFFD * 2}  # {"t":"��"}: 8 + 2 x 3 bytes
    assert output_checked({"t": "ééé"}) == {"t": "ééé"}  # 8 + 3 x 2 bytes
    with pytest.raises(OutputTooLarge, match="16 bytes"):
        output_checked({"t": "éééé"})  # 12 characters, 16 bytes


def test_what_is_cleaned_can_be_stored():
    value = {"a\x00": ["\ud800", math.nan, (1, {"b": -math.inf})], "huge": 10**5000}
    assert storable_json(value) is None
    assert storable_json(cleaned(value)) is not None


# --- the executor --------------------------------------------------------------------------------


async def test_a_node_output_is_cleaned_before_it_is_recorded_and_passed_on():
    graph = chain(start(), node("made", "test_made", {"make": "mixed"}), end(out="{{ made }}"))
    result, journal = await execute(graph, run_id="cleaned")
    assert result.status == "succeeded", result.error
    expected = {"text": f"lone {FFFD} high", "n": None, "list": [None, None, 1.5]}
    assert result.outputs == {"out": expected}
    succeeded = next(e for e in journal.events if e["type"] == "node.succeeded" and e["node"] == "made")
    assert succeeded["data"]["output"] == expected
    assert journal.tasks[("", "made")].output == expected


async def test_an_output_over_the_limit_fails_its_node_once_and_on_failure_applies(settings):
    settings.WEFT = {**settings.WEFT, "NODE_OUTPUT_MAX_BYTES": 1000}
    made = node("made", "test_made", {"make": "large"}, retry=RETRY, on_failure="continue", default_output={})
    result, journal = await execute(chain(start(), made, end(error="{{ made.error }}")), run_id="large")
    assert result.status == "succeeded"
    assert "over the limit of 1000 bytes" in result.outputs["error"]
    assert "WEFT_NODE_OUTPUT_MAX_BYTES" in result.outputs["error"]
    assert EXECUTIONS[("large", "made", "")] == 1
    assert ("node.retrying", "made") not in timeline(journal)
    assert journal.tasks[("", "made")].status == "failed"


@pytest.mark.parametrize(("make", "message"), [("set", "output.tags: a value of type set"), ("deep", "nested")])
async def test_an_output_that_is_not_json_fails_the_run_once_with_where(make, message):
    graph = chain(start(), node("made", "test_made", {"make": make}, retry=RETRY), end())
    result, _ = await execute(graph, run_id=f"not-json-{make}")
    assert result.status == "failed"
    assert message in result.error
    assert EXECUTIONS[(f"not-json-{make}", "made", "")] == 1


async def test_an_error_text_is_cleaned_as_outputs_are():
    made = node("made", "test_made", {"error": True}, on_failure="continue", default_output={})
    result, journal = await execute(chain(start(), made, end(error="{{ made.error }}")), run_id="error-text")
    assert result.outputs == {"error": f"refused: {FFFD} and {FFFD}"}
    failed = next(e for e in journal.events if e["type"] == "node.failed")
    assert failed["data"]["error"] == f"refused: {FFFD} and {FFFD}"


async def test_an_http_answer_with_nul_nan_and_a_lone_surrogate_is_cleaned(fake_http, allow_loopback):
    text = fake_http.url("/body?type=text/plain&text=a%00b")
    data = fake_http.url("/body?type=application/json&text=" + '{"s":"x\\u0000y","n":NaN,"lone":"\\ud800"}')
    graph = chain(
        start(),
        node("text", "http_request", {"url": text}),
        node("data", "http_request", {"url": data}),
        end(body="{{ text.body }}", json="{{ data.json }}"),
    )
    result, _ = await execute(graph, run_id="http")
    assert result.status == "succeeded", result.error
    assert result.outputs == {"body": f"a{FFFD}b", "json": {"s": f"x{FFFD}y", "n": None, "lone": FFFD}}
    assert [request["path"] for request in fake_http.requests] == ["/body", "/body"]
