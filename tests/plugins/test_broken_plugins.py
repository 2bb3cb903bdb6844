"""A plugin that fails to import, raises or hangs fails its own nodes only: validation names it (plugin and
version), a run fails that node, and the loop on which other runs execute never waits for it."""

import asyncio
import sys
import threading

import pytest

from tests.engine.conftest import execute
from tests.plugins.conftest import plugin_graph
from workflows.checks import node_plugins
from workflows.engine import (
    MemoryJournal,
    NodePorts,
    RunExecutor,
    get_plugin_of,
    plugin_threads_abandoned,
    plugins_installed,
    plugins_load,
    validate_graph,
)

TEMPLATE_ONLY = plugin_graph("template", {"template": "{{ start.text }}!"})

BLOCKING = """
    import threading
    import time

    from workflows.engine import NodeType

    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()


    class Block(NodeType):
        type = "fake_block"
        config_schema = {"type": "object", "properties": {"spin": {"type": "boolean"}}}
        outputs = frozenset({"text"})

        async def execute(self, ctx, config):
            started.set()
            if config.get("spin"):
                while not release.is_set():  # a busy loop: it never awaits
                    pass
            else:
                release.wait(10)  # blocking, inside async def
            finished.set()
            return {"text": await ctx.render("released {{ start.text }}")}
"""


def loaded(module: str):
    """The module of an enabled plugin, imported."""
    plugins_load()
    return sys.modules[module]


def release_and_join(plugin) -> None:
    """Let the blocked plugin node go on, and wait for its thread to end."""
    plugin.release.set()
    for thread in threading.enumerate():
        if thread.name == "weft-plugin-fake_block":
            thread.join(5)


def problem_of(graph: dict) -> str:
    (issue,) = validate_graph(graph)
    assert (issue.node, issue.field) == ("plug", "type")
    return issue.message


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("raise ImportError('no such thing: fancylib')", "it failed to import: ImportError: no such thing: fancylib"),
        ("import sys\nsys.exit(3)", "it failed to import: SystemExit: 3"),
        ("Broken = 42", "its entry point 'fake_broken' is not a NodeType subclass."),
    ],
)
def test_a_plugin_that_cannot_be_loaded_fails_validation_naming_it(install_plugin, enable_plugins, source, error):
    install_plugin("weft-fake-broken", {"fake_broken": "Broken"}, source, version="2.3.4")
    enable_plugins("weft-fake-broken", "weft-plugin-example")

    message = problem_of(plugin_graph("fake_broken", {}))

    assert (
        message
        == f"Node type 'fake_broken' comes from the plugin weft-fake-broken 2.3.4, which cannot be used: {error}"
    )
    assert validate_graph(TEMPLATE_ONLY) == []
    assert validate_graph(plugin_graph("example_reverse", {"text": "x"})) == []  # another plugin is unaffected
    (broken,) = [info for info in plugins_installed() if info.name == "weft-fake-broken"]
    assert broken.error == error
    assert [warning.id for warning in node_plugins(None)] == ["weft.W021"]


def test_an_import_that_hangs_is_given_up_after_its_timeout(install_plugin, enable_plugins, engine_settings):
    module = install_plugin(
        "weft-fake-slow-import",
        {"fake_slow": "Slow"},
        "import threading\nthreading.Event().wait(3)\n",
    )
    engine_settings(PLUGIN_IMPORT_TIMEOUT_S=0.1)
    enable_plugins("weft-fake-slow-import")

    assert "which cannot be used: its import did not finish within 0.1 s." in problem_of(plugin_graph("fake_slow", {}))
    assert module not in sys.modules or not hasattr(sys.modules[module], "Slow")


def test_a_check_that_raises_is_a_validation_issue_naming_the_plugin(install_plugin, enable_plugins):
    install_plugin(
        "weft-fake-check",
        {"fake_check": "Checked"},
        """
        from workflows.engine import NodeType

        class Checked(NodeType):
            type = "fake_check"

            def check(self, config):
                raise KeyError("oops")
        """,
    )
    enable_plugins("weft-fake-check")

    (issue,) = validate_graph(plugin_graph("fake_check", {}))

    assert (issue.node, issue.field) == ("plug", "config")
    assert issue.message == "The plugin weft-fake-check 1.0 failed to check it: KeyError: 'oops'"


def test_an_enabled_plugin_that_is_not_installed_is_a_warning(enable_plugins):
    enable_plugins("weft-not-here")

    (warning,) = node_plugins(None)

    assert warning.id == "weft.W020"
    assert "'weft-not-here'" in warning.msg


async def test_an_execute_that_raises_fails_its_node_naming_the_plugin(install_plugin, enable_plugins):
    install_plugin(
        "weft-fake-raising",
        {"fake_raise": "Raise"},
        """
        from workflows.engine import NodeType

        class Raise(NodeType):
            type = "fake_raise"

            async def execute(self, ctx, config):
                raise ZeroDivisionError("boom")
        """,
        version="0.9",
    )
    enable_plugins("weft-fake-raising")

    result, journal = await execute(
        plugin_graph("fake_raise", {}, retry={"max_attempts": 2, "initial_s": 0}), {"text": "x"}
    )

    assert result.status == "failed"
    task = journal.tasks[("", "plug")]
    assert task.error == "Plugin weft-fake-raising 0.9: ZeroDivisionError: boom"
    assert task.attempt == 2  # retryable, as any exception of a built-in node's
    assert (await execute(TEMPLATE_ONLY, {"text": "x"}))[0].status == "succeeded"


@pytest.mark.parametrize("spin", [False, True])
async def test_a_blocking_execute_does_not_stall_the_loop_other_runs_execute_on(install_plugin, enable_plugins, spin):
    module = install_plugin("weft-fake-blocking", {"fake_block": "Block"}, BLOCKING)
    enable_plugins("weft-fake-blocking")
    plugin = loaded(module)
    blocking = asyncio.create_task(execute(plugin_graph("fake_block", {"spin": spin}), {"text": "me"}))
    while not plugin.started.is_set():
        await asyncio.sleep(0.005)

    other, _ = await execute(TEMPLATE_ONLY, {"text": "meanwhile"})

    assert other.outputs == {"out": {"text": "meanwhile!"}}
    assert not plugin.finished.is_set()  # the other run ended while the plugin still blocked its own thread
    plugin.release.set()
    result, _ = await blocking
    assert result.status == "succeeded", result.error
    assert result.outputs == {"out": {"text": "released me"}}  # ctx.render, from the plugin's thread


async def test_a_hung_execute_times_out_and_its_thread_is_abandoned_and_counted(install_plugin, enable_plugins):
    module = install_plugin("weft-fake-hung", {"fake_block": "Block"}, BLOCKING.replace("10", "5"))
    enable_plugins("weft-fake-hung")
    plugin = loaded(module)

    result, journal = await execute(plugin_graph("fake_block", {}, timeout_s=0.2), {"text": "x"})

    assert result.status == "failed"
    assert journal.tasks[("", "plug")].error == "Plugin weft-fake-hung 1.0: timed out (the node's timeout_s)."
    assert plugin_threads_abandoned() == 1
    release_and_join(plugin)
    assert plugin_threads_abandoned() == 0


async def test_plugin_threads_are_bounded_and_a_node_waits_for_one(install_plugin, enable_plugins, engine_settings):
    module = install_plugin("weft-fake-queued", {"fake_block": "Block"}, BLOCKING)
    enable_plugins("weft-fake-queued")
    engine_settings(PLUGIN_THREADS=1)
    plugin = loaded(module)
    first = asyncio.create_task(execute(plugin_graph("fake_block", {}), {"text": "1"}, run_id="one"))
    while not plugin.started.is_set():
        await asyncio.sleep(0.005)
    second = asyncio.create_task(execute(plugin_graph("fake_block", {}), {"text": "2"}, run_id="two"))
    await asyncio.sleep(0.05)

    assert sum(thread.name == "weft-plugin-fake_block" for thread in threading.enumerate()) == 1
    plugin.release.set()
    assert [result.status for result, _ in await asyncio.gather(first, second)] == ["succeeded", "succeeded"]


def test_a_type_name_already_taken_leaves_it_to_its_first_owner(install_plugin, enable_plugins):
    source = """
        from workflows.engine import NodeType

        class Twice(NodeType):
            type = "fake_twice"

        class Template(NodeType):
            type = "template"
        """
    install_plugin("weft-fake-first", {"fake_twice": "Twice"}, source)
    install_plugin("weft-fake-second", {"fake_twice": "Twice"}, source)
    install_plugin("weft-fake-shadow", {"template": "Template"}, source)
    enable_plugins("weft-fake-first", "weft-fake-second", "weft-fake-shadow")

    errors = {info.name: info.error for info in plugins_installed() if info.name.startswith("weft-fake-")}

    assert errors == {
        "weft-fake-first": "",
        "weft-fake-second": "its node type 'fake_twice' is declared by weft-fake-first 1.0 too.",
        "weft-fake-shadow": "its node type 'template' is already a built-in node type.",
    }
    assert get_plugin_of("fake_twice").name == "weft-fake-first"
    assert get_plugin_of("template") is None


async def test_a_cancelled_run_stops_waiting_for_its_blocked_node(install_plugin, enable_plugins, engine_settings):
    module = install_plugin("weft-fake-cancelled", {"fake_block": "Block"}, BLOCKING)
    enable_plugins("weft-fake-cancelled")
    engine_settings(CANCEL_POLL_S=0.02)
    plugin = loaded(module)
    journal = MemoryJournal()
    executor = RunExecutor(graph=plugin_graph("fake_block", {}), inputs={"text": "x"}, system={}, journal=journal)
    running = asyncio.create_task(executor.run())
    while not plugin.started.is_set():
        await asyncio.sleep(0.005)

    journal.cancel_requested = True
    result = await running

    assert result.status == "cancelled"
    assert not plugin.finished.is_set()
    assert plugin_threads_abandoned() == 1
    release_and_join(plugin)


async def test_the_ports_a_plugin_awaits_are_called_on_the_runs_loop(install_plugin, enable_plugins):
    install_plugin(
        "weft-fake-ports",
        {"fake_owner": "Owner"},
        """
        from workflows.engine import NodeType

        class Owner(NodeType):
            type = "fake_owner"

            async def execute(self, ctx, config):
                owner_id = ctx.ports.need("owner_id", "It reads the owner.")
                return {"owner": await owner_id()}
        """,
    )
    enable_plugins("weft-fake-ports")
    run_loop = asyncio.get_running_loop()

    async def owner_id():
        assert asyncio.get_running_loop() is run_loop
        return 7

    journal = MemoryJournal()
    executor = RunExecutor(
        graph=plugin_graph("fake_owner", {}), inputs={}, system={}, journal=journal, ports=NodePorts(owner_id=owner_id)
    )

    result = await executor.run()

    assert result.status == "succeeded", result.error
    assert result.outputs == {"out": {"owner": 7}}


@pytest.mark.parametrize(
    ("returned", "error"),
    [
        ("['not', 'a', 'dict']", "Plugin weft-fake-output 1.0: The node returned list, not an object."),
        ("{'big': 'x' * 2000}", "Plugin weft-fake-output 1.0: The node's output is 2010 bytes of JSON, over"),
    ],
)
async def test_an_output_that_fails_the_checks_fails_its_node_naming_the_plugin(
    install_plugin, enable_plugins, settings, returned, error
):
    install_plugin(
        "weft-fake-output",
        {"fake_output": "Output"},
        f"""
        from workflows.engine import NodeType

        class Output(NodeType):
            type = "fake_output"

            async def execute(self, ctx, config):
                return {returned}
        """,
    )
    enable_plugins("weft-fake-output")
    settings.WEFT = {**settings.WEFT, "NODE_OUTPUT_MAX_BYTES": 1000}

    result, journal = await execute(plugin_graph("fake_output", {}, retry={"max_attempts": 3}), {})

    assert result.status == "failed"
    assert journal.tasks[("", "plug")].error.startswith(error)
    assert journal.tasks[("", "plug")].attempt == 1
