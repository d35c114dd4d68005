"""The load test's figures, printed in the run's summary."""

from __future__ import annotations

import pytest

REPORT: list[str] = []


@pytest.fixture(scope="session")
def load_report() -> list[str]:
    """Lines to print in the terminal summary."""
    return REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("load test")
        for line in REPORT:
            terminalreporter.write_line(line)
