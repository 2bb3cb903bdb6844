"""Figures a test measured, printed at the end of the run: ``record_property("figures", "…")``.

Loaded for every run by ``pytest_plugins`` in tests/conftest.py, so that it also runs in the
xdist controller, which receives the workers' reports (a worker's own output is not shown).
"""

FIGURES = "figures"

_lines: list[str] = []


def pytest_runtest_logreport(report) -> None:
    if report.when == "call":
        _lines.extend(f"{report.nodeid}: {value}" for name, value in report.user_properties if name == FIGURES)


def pytest_terminal_summary(terminalreporter) -> None:
    if _lines:
        terminalreporter.write_sep("-", "measured")
        for line in _lines:
            terminalreporter.write_line(line)
