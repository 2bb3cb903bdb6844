"""Templates are user code: every render is bounded (steps, output, operand sizes, the node's timeout)
and a heavy one never holds the event loop that every run of the worker shares."""

import asyncio
import threading
import tracemalloc

import pytest

from tests.engine.conftest import chain, end, execute, node, start
from workflows.engine.executor import RunExecutor
from workflows.engine.journal import MemoryJournal
from workflows.engine.nodes import NodeContext, NodeType, get_node_type, register
from workflows.engine.templating import RenderBudgetExceeded, arender_text, render_text, render_value

LOOP_BOMB = "{% for i in range(100000) %}{% for j in range(5000) %}{% endfor %}{% endfor %}"
#: Renders for as long as nobody stops it (a ``test_probed`` node), or a minute.
LONG = "{% for i in probe.items() %}{% endfor %}"
#: The probe of each run (by run id) that ``test_probed`` nodes hand their template.
PROBES: dict[str, "Probe"] = {}
MACRO_BOMB = "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(18) }}"
#: About a second of rendering, within budgets raised for the test.
HEAVY = "{% for i in range(100000) %}{% for j in range(40) %}{% endfor %}{% endfor %}heavy"


@pytest.fixture
def budgets(settings):
    """Set template budgets for one test: ``budgets(TEMPLATE_MAX_ITERATIONS=10)``."""

    def override(**values):
        settings.WEFT = {**settings.WEFT, **values}

    return override


class Probe:
    """Hands a template a very long loop; tells which threads iterate it and whether it still runs."""

    def __init__(self):
        self.threads: set[str] = set()
        self.in_thread = threading.Event()
        self.count = 0

    def items(self):
        for _ in range(100_000_000):
            self.count += 1
            name = threading.current_thread().name
            self.threads.add(name)
            if name.startswith("weft-render"):
                self.in_thread.set()
            yield 0

    async def stops(self) -> bool:
        """Whether the loop stops being iterated (within seconds)."""
        for _ in range(50):
            before = self.count
            await asyncio.sleep(0.2)
            if self.count == before:
                return True
        return False


if get_node_type("test_probed") is None:

    @register
    class Probed(NodeType):
        """A template node whose template may also read ``probe``, the run's :class:`Probe`."""

        type = "test_probed"
        effects = False
        config_schema = {"type": "object", "required": ["template"]}

        def template_strings(self, config: dict):
            return iter(())

        async def execute(self, ctx: NodeContext, config: dict) -> dict:
            ctx.variables = {**ctx.variables, "probe": PROBES[ctx.run_id]}
            return {"text": await ctx.render(config["template"])}


def probed_run(run_id: str, journal: MemoryJournal) -> tuple[RunExecutor, Probe]:
    """A run whose one node renders LONG; its probe."""
    probe = PROBES[run_id] = Probe()
    graph = chain(start(), node("long", "test_probed", {"template": LONG}), end())
    return RunExecutor(graph=graph, inputs={}, system={"run_id": run_id}, journal=journal), probe


# --- The node's timeout and the budgets hold for what a template computes ------------------------


async def test_the_loop_bomb_fails_its_node_instead_of_running_for_half_a_minute():
    graph = chain(start(), node("bomb", "template", {"template": LOOP_BOMB}, timeout_s=1), end(text="{{ bomb.text }}"))
    result, journal = await execute(graph, run_id="loop-bomb")
    assert result.status == "failed"
    error = journal.tasks[("", "bomb")].error
    assert "WEFT_TEMPLATE_MAX_ITERATIONS" in error or "Timed out" in error


async def test_a_node_timeout_stops_a_render_that_is_within_its_budgets(budgets):
    budgets(TEMPLATE_MAX_ITERATIONS=10**12)
    graph = chain(start(), node("bomb", "template", {"template": LOOP_BOMB}, timeout_s=1), end())
    result, journal = await execute(graph, run_id="loop-timeout")
    assert result.status == "failed"
    assert "Timed out" in journal.tasks[("", "bomb")].error


@pytest.mark.usefixtures("fast_polls")
async def test_cancelling_a_run_stops_its_render_thread(budgets):
    budgets(TEMPLATE_MAX_ITERATIONS=10**12)
    journal = MemoryJournal()
    executor, probe = probed_run("cancel-render", journal)
    running = asyncio.create_task(executor.run())
    assert await asyncio.to_thread(probe.in_thread.wait, 10)
    journal.cancel_requested = True
    assert (await asyncio.wait_for(running, timeout=10)).status == "cancelled"
    assert await probe.stops()


def test_a_huge_repeat_is_refused_without_being_allocated():
    tracemalloc.start()
    try:
        with pytest.raises(RenderBudgetExceeded, match="WEFT_TEMPLATE_MAX_OPERAND = 1000000"):
            render_text("{{ ('x' * 400000000) | length }}", {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024


def test_a_recursive_macro_bomb_fails_on_the_iteration_budget(budgets):
    budgets(TEMPLATE_MAX_ITERATIONS=10_000)
    with pytest.raises(RenderBudgetExceeded, match="WEFT_TEMPLATE_MAX_ITERATIONS = 10000"):
        render_text(MACRO_BOMB, {})


@pytest.mark.parametrize(
    ("source", "setting"),
    [
        ("{{ 'x'.center(10 ** 9) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ 'x' | center(10 ** 9) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ 'x' | indent(10 ** 9) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ 'x'.zfill(10 ** 9) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ [1] * 10 ** 9 }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ [big] * 1000 }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ 7 ** (10 ** 8) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ (2 ** 900000) * (2 ** 900000) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ '%1000000000d' % 1 }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ '%*d' % (10 ** 9, 1) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ '%1000000000d' | format(1) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ '{:>1000000000}'.format(1) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ '{:>{w}}'.format(1, w=10 ** 9) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ big.replace('', big) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ big | replace('y', 'yyyyyyyyyyyyyyyyy') }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ big.join(big) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ big.join(range(100000) | map('string')) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ range(100000) | join(big) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ range(100000) | map('string') | join(big) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ [1] | batch(10 ** 9, 'x') | list }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ lipsum(10 ** 6) }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        ("{{ (1).to_bytes(10 ** 9, 'big') }}", "WEFT_TEMPLATE_MAX_OPERAND"),
        # Doubling a string: each step fits the operand budget, together they pass the output budget.
        (
            "{% set ns = namespace(s=big) %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
            "WEFT_TEMPLATE_MAX_OUTPUT_CHARS",
        ),
        (
            "{% set ns = namespace(s=big) %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
            "WEFT_TEMPLATE_MAX_OUTPUT_CHARS",
        ),
        (
            "{% set ns = namespace(s=big) %}{% for i in range(40) %}{% set ns.s %}{{ ns.s }}{{ ns.s }}{% endset %}"
            "{% endfor %}",
            "WEFT_TEMPLATE_MAX_OUTPUT_CHARS",
        ),
        ("{{ range(100000) | map('center', 100000) | list | length }}", "WEFT_TEMPLATE_MAX_OUTPUT_CHARS"),
        # A million references to one string: its text is refused before str() would write it.
        ("{{ {}.fromkeys(range(100000), big) }}", "WEFT_TEMPLATE_MAX_OUTPUT_CHARS"),
        ("{{ {}.fromkeys(range(100000), big) | tojson }}", "WEFT_TEMPLATE_MAX_OUTPUT_CHARS"),
        ("{{ {}.fromkeys(range(100000), big) ~ '' }}", "WEFT_TEMPLATE_MAX_OUTPUT_CHARS"),
        ("{{ '%s' % ({}.fromkeys(range(100000), big),) }}", "WEFT_TEMPLATE_MAX_OUTPUT_CHARS"),
        ("{% for i in range(100000) %}{{ big }}{% endfor %}", "WEFT_TEMPLATE_MAX_OUTPUT_CHARS"),
        ("{% for i in range(100000) %}" + "literal text " * 200 + "{% endfor %}", "WEFT_TEMPLATE_MAX_OUTPUT_CHARS"),
        (
            "{% macro f(s, n) %}{% if n %}{{ f(s[1:], n - 1) }}{% endif %}{% endmacro %}{{ f(big * 5, 100) }}",
            "WEFT_TEMPLATE_MAX_OUTPUT_CHARS",
        ),
    ],
)
def test_costly_templates_fail_naming_the_budget(source, setting):
    tracemalloc.start()
    try:
        with pytest.raises(RenderBudgetExceeded, match=setting):
            render_text(source, {"big": "y" * 100_000})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 1024 * 1024


def test_the_output_budget_counts_the_text_and_a_whole_value(budgets):
    budgets(TEMPLATE_MAX_OUTPUT_CHARS=1000)
    assert len(render_text("{% for i in range(99) %}0123456789{% endfor %}", {})) == 990
    with pytest.raises(RenderBudgetExceeded, match="WEFT_TEMPLATE_MAX_OUTPUT_CHARS = 1000"):
        render_text("{% for i in range(101) %}0123456789{% endfor %}", {})
    with pytest.raises(RenderBudgetExceeded, match="WEFT_TEMPLATE_MAX_OUTPUT_CHARS"):
        render_value({"a": "{{ x }}", "b": ["{{ x }}"]}, {"x": "z" * 600})


async def test_a_budget_failure_fails_the_node_without_retries():
    graph = chain(
        start(),
        node("big", "template", {"template": "{{ 'x' * 10 ** 9 }}"}, retry={"max_attempts": 3, "initial_s": 0}),
        end(),
    )
    result, journal = await execute(graph, run_id="operand")
    assert result.status == "failed"
    assert "operand budget (WEFT_TEMPLATE_MAX_OPERAND = 1000000)" in journal.tasks[("", "big")].error
    assert journal.tasks[("", "big")].attempt == 1


# --- Ordinary templates render as before ---------------------------------------------------------

TREE = [{"n": 1, "c": [{"n": 2, "c": []}]}, {"n": 3, "c": []}]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Hello {{ start.name }}!", "Hello Ada!"),
        (
            "{% for x in start.items %}{{ loop.index }}/{{ loop.length }}{{ ',' if not loop.last }}{% endfor %}",
            "1/3,2/3,3/3",
        ),
        ("{% for x in start.items if x > 1 %}{{ x }}{% else %}none{% endfor %}", "23"),
        ("{% for x in [] %}{{ x }}{% else %}none{% endfor %}", "none"),
        ("{% for k, v in {'a': 1} | dictsort %}{{ k }}={{ v }}{% endfor %}", "a=1"),
        ("{% for x in tree recursive %}{{ x.n }}{% if x.c %}({{ loop(x.c) }}){% endif %}{% endfor %}", "1(2)3"),
        ("{% macro hi(who) %}hi {{ who }}{% endmacro %}{{ hi('you') }}", "hi you"),
        ("{% macro box() %}[{{ caller() }}]{% endmacro %}{% call box() %}in{% endcall %}", "[in]"),
        ("{% set x | upper %}abc{% endset %}{% set y %}d{{ 1 }}{% endset %}{{ x }}{{ y }}", "ABCd1"),
        ("{% filter upper %}up{% endfilter %}", "UP"),
        ("{{ 'a' ~ 1 ~ none }}|{{ [1, 2, 3][1:] }}|{{ 'abc'[::-1] }}|{{ 'abc'[:1] }}", "a1None|[2, 3]|cba|a"),
        (
            "{{ '%05.1f|%s' % (3.14159, 'z') }}|{{ '{:>4}'.format('q') }}|{{ '%s-%s' | format(1, 2) }}",
            "003.1|z|   q|1-2",
        ),
        ("{{ 'a b' | replace(' ', '_') }}|{{ start.items | join(',') }}|{{ 'x' | center(5) }}", "a_b|1,2,3|  x  "),
        (
            "{{ 'a\nb' | indent(2) }}|{{ start.items | batch(2) | list }}|{{ start.items | map('string') | join }}",
            "a\n  b|[[1, 2], [3]]|123",
        ),
        (
            "{{ start.items | select('odd') | list }}|{{ start.items | sum }}|{{ 2 ** 10 }}|{{ 3 * 'ab' }}",
            "[1, 3]|6|1024|ababab",
        ),
        ("{% set ns = namespace(n=0) %}{% for x in start.items %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}", "6"),
        (
            "{{ start.items + [4] }}|{{ start.name * 2 }}|{{ 10 % 4 }}|{{ {'a': [1]} | tojson }}",
            '[1, 2, 3, 4]|AdaAda|2|{"a": [1]}',
        ),
        ("line\r\nkept\n", "line\nkept\n"),
    ],
)
def test_ordinary_templates_render_as_before(source, expected):
    assert render_text(source, {"start": {"name": "Ada", "items": [1, 2, 3]}, "tree": TREE}) == expected


def test_a_lone_expression_keeps_its_type():
    scope = {"start": {"items": [1, 2], "n": 3}}
    assert render_value({"a": "{{ start.items }}", "b": ["{{ start.n * 2 }}", "n={{ start.n }}"]}, scope) == {
        "a": [1, 2],
        "b": [6, "n=3"],
    }


# --- One run's render never holds up another run ------------------------------------------------


async def test_a_trivial_run_finishes_while_another_run_renders_a_heavy_template(budgets):
    budgets(TEMPLATE_MAX_ITERATIONS=10**12)
    heavy = chain(start(), node("heavy", "template", {"template": HEAVY}), end(text="{{ heavy.text }}"))
    trivial = chain(start(), node("hello", "template", {"template": "hello"}), end(text="{{ hello.text }}"))
    journal = MemoryJournal()
    running = asyncio.create_task(RunExecutor(graph=heavy, inputs={}, system={"run_id": "A"}, journal=journal).run())
    while ("node.started", "heavy") not in [(event["type"], event["node"]) for event in journal.events]:
        await asyncio.sleep(0.01)
    result, _ = await execute(trivial, run_id="B")
    assert result.outputs == {"text": "hello"}
    assert not running.done()  # B began after A's render and ended before it: A did not hold the loop
    assert (await running).outputs == {"text": "heavy"}


async def test_a_heavy_render_moves_off_the_loop_and_still_gives_its_text(budgets):
    budgets(TEMPLATE_MAX_ITERATIONS=10**12)
    probe = Probe()
    text = await arender_text(
        "{% for i in range(100000) %}{% for j in range(20) %}{% endfor %}{% endfor %}done {{ probe.items() | first }}",
        {"probe": probe},
    )
    assert text == "done 0"
    assert any(name.startswith("weft-render") for name in probe.threads)


async def test_a_node_renders_through_its_context():
    ctx = NodeContext(variables={"start": {"name": "Ada"}})
    assert await ctx.render("hi {{ start.name }}") == "hi Ada"
    assert await ctx.render_value({"n": "{{ start.name | length }}"}) == {"n": 3}
