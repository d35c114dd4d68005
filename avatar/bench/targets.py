"""Targets kept in the repository (``bench/thresholds.toml``) and figures checked against them."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avatar.config import PROJECT_ROOT

THRESHOLDS = PROJECT_ROOT / "bench" / "thresholds.toml"


def load_thresholds(path: Path = THRESHOLDS) -> dict[str, dict[str, float]]:
    """The ``[bench]`` and ``[eval]`` tables of the thresholds file."""
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return {section: {k: float(v) for k, v in data.get(section, {}).items()} for section in ("bench", "eval")}


@dataclass(frozen=True)
class Check:
    """One figure against its limit. ``value`` None means it could not be measured in this run."""

    name: str
    label: str
    value: float | None
    limit: float
    unit: str = ""
    higher_is_better: bool = False
    note: str = ""

    @property
    def measured(self) -> bool:
        return self.value is not None

    @property
    def ok(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    @property
    def status(self) -> str:
        return "not measured" if not self.measured else ("met" if self.ok else "MISSED")

    def verdict(self) -> str:
        """ "met (0.31 s to spare)", "MISSED by 0.42 s (12 %)" or "not measured: <why>"."""
        if self.value is None:
            return f"not measured{': ' + self.note if self.note else ''}"
        gap = abs(self.value - self.limit)
        share = f" ({100 * gap / abs(self.limit):.0f} %)" if self.limit else ""
        amount = f"{_fmt(gap)}{(' ' + self.unit) if self.unit else ''}"
        return f"met ({amount} to spare)" if self.ok else f"MISSED by {amount}{share}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "value": None if self.value is None else round(self.value, 4),
            "limit": self.limit,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "status": self.status,
            "verdict": self.verdict(),
        }


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def failed(checks: list[Check], *, unmeasured_fails: bool) -> list[Check]:
    """The checks that fail; with ``unmeasured_fails`` a figure that could not be measured fails too."""
    return [c for c in checks if (not c.ok) and (c.measured or unmeasured_fails)]
