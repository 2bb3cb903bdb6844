"""Plugins for the tests: the example package (installed by `make install-dev`), and small distributions a
test writes itself, a dist-info directory with an ``entry_points.txt`` beside a module, on ``sys.path``."""

import importlib
import sys
import textwrap

import pytest

from workflows.engine import plugins_reload

EXAMPLE = "weft-plugin-example"


@pytest.fixture
def engine_settings(settings):
    """Set engine tunables for one test: ``engine_settings(PLUGIN_THREADS=1)``."""

    def override(**values):
        settings.WEFT = {**settings.WEFT, "ENGINE": {**settings.WEFT.get("ENGINE", {}), **values}}

    return override


@pytest.fixture
def enable_plugins(engine_settings):
    """Enable the plugins named (their distribution names), as ``WEFT_ENGINE_PLUGINS`` would."""

    def enable(*names: str) -> None:
        engine_settings(PLUGINS=list(names))

    return enable


@pytest.fixture
def embedded(settings):
    """Runs execute in this process (the embedded engine), whether or not REDIS_URL is set."""
    settings.EMBEDDED = True


@pytest.fixture
def install_plugin(tmp_path):
    """Install a plugin distribution: ``install_plugin("weft-fake-x", {"fake_x": "Cls"}, source)``; its module is
    named after the distribution (``weft_fake_x``) and holds ``source``. Gone after the test."""
    site = tmp_path / "site"
    site.mkdir()
    modules = []

    def install(name: str, entry_points: dict[str, str], source: str, *, version: str = "1.0") -> str:
        module = name.replace("-", "_")
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{module}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = "".join(f"{type_name} = {module}:{target}\n" for type_name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[weft.nodes]\n{lines}")
        modules.append(module)
        importlib.invalidate_caches()
        plugins_reload()
        return module

    sys.path.insert(0, str(site))
    yield install
    sys.path.remove(str(site))
    for module in modules:
        sys.modules.pop(module, None)
    plugins_reload()


def plugin_graph(node_type: str, config: dict, **error_policy) -> dict:
    """start -> one node of ``node_type`` (id ``plug``) -> end, whose output ``out`` is the node's output."""
    plug = {"id": "plug", "type": node_type, "config": config}
    if error_policy:
        plug["error_policy"] = error_policy
    return {
        "nodes": [
            {"id": "start", "type": "start", "config": {"inputs": [{"name": "text", "type": "string"}]}},
            plug,
            {"id": "end", "type": "end", "config": {"outputs": {"out": "{{ plug }}"}}},
        ],
        "edges": [{"source": "start", "target": "plug"}, {"source": "plug", "target": "end"}],
    }
