"""Summaries of repeated measurements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Spread:
    """Median, 95th percentile and extremes of a set of samples."""

    p50: float
    p95: float
    min: float
    max: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def spread(samples: Sequence[float]) -> Spread | None:
    """The spread of ``samples`` (linear-interpolated percentiles); None when there are none."""
    if not samples:
        return None
    values = np.asarray(samples, dtype=np.float64)
    return Spread(
        p50=float(np.percentile(values, 50)),
        p95=float(np.percentile(values, 95)),
        min=float(values.min()),
        max=float(values.max()),
        n=int(values.size),
    )
