"""The one percentile every benchmark here reports (import it as `from benchmarks.stats import pct`)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least a share `q` of the values at or below it (the
    ceil(q * n)-th smallest; p50 of an even count is the lower of the middle two). NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]
