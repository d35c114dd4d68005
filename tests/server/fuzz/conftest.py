"""Fuzzing fixtures: a tally of the cases tried per route, printed in the run's summary."""

from __future__ import annotations

from collections import Counter

import pytest

TALLY: Counter[str] = Counter()


@pytest.fixture(scope="session")
def cases_tried() -> Counter[str]:
    """``tally[label] += 1`` per case sent; the totals appear in the terminal summary."""
    return TALLY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY:
        terminalreporter.section("fuzz cases tried per route")
        for label, count in sorted(TALLY.items()):
            terminalreporter.write_line(f"{count:6d}  {label}")
        terminalreporter.write_line(f"{sum(TALLY.values()):6d}  in all")
