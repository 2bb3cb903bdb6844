"""The import contracts (.importlinter) hold, and their lists name every module they must."""

import configparser
import pkgutil
import subprocess
import sys
from pathlib import Path

import workflows

ROOT = Path(__file__).resolve().parent.parent


def contract(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser()
    parser.read(ROOT / ".importlinter")
    return parser[f"importlinter:contract:{name}"]


def listed(section: configparser.SectionProxy, key: str) -> set[str]:
    return {line.strip() for line in section[key].splitlines() if line.strip()}


def test_the_public_surface_contract_watches_every_workflows_module_but_the_engine():
    """A new module of the workflows app would otherwise import the engine's private modules unchecked."""
    modules = {f"workflows.{module.name}" for module in pkgutil.iter_modules(workflows.__path__)} - {"workflows.engine"}

    assert modules <= listed(contract("engine-public-surface"), "source_modules")


def test_the_public_surface_contract_forbids_every_private_engine_module():
    from workflows import engine
    from workflows.engine import sandbox

    private = {f"workflows.engine.{m.name}" for m in pkgutil.iter_modules(engine.__path__) if m.name != "sandbox"}
    private |= {f"workflows.engine.sandbox.{m.name}" for m in pkgutil.iter_modules(sandbox.__path__)}

    assert private == listed(contract("engine-public-surface"), "forbidden_modules")


def test_the_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stdout + result.stderr
