"""Is an A/B arm's rate different from the control's? The two-proportion z-test (pure).

With ``x1`` successes out of ``n1`` trials in the control and ``x2`` out of ``n2`` in the arm,
the pooled proportion is ``p = (x1 + x2) / (n1 + n2)``, the standard error under the null
hypothesis (equal rates) ``se = sqrt(p (1 - p) (1/n1 + 1/n2))``, and

    z = (x2/n2 - x1/n1) / se,        two-sided p-value = erfc(|z| / sqrt(2))

(the normal approximation; e.g. NIST/SEMATECH e-Handbook of Statistical Methods, 7.3.3,
"How can we compare two proportions?"; ``z**2`` equals the Pearson chi-squared statistic of
the 2x2 table without continuity correction, R's ``prop.test(correct = FALSE)``). It is a fair
approximation when each arm has at least ~5 successes and ~5 failures; below that the result
says so (``reliable`` false) rather than hiding the figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_CELL = 5  # successes and failures per arm for the normal approximation to be fair


@dataclass(frozen=True, slots=True)
class ZTest:
    z: float | None  # None when undefined (an empty arm, or no variation at all)
    p_value: float | None
    reliable: bool


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> ZTest:
    """Arm (``x2`` of ``n2``) against control (``x1`` of ``n1``)."""
    if min(x1, x2) < 0 or x1 > n1 or x2 > n2:
        raise ValueError("successes must be between 0 and the number of trials")
    if n1 <= 0 or n2 <= 0:
        return ZTest(None, None, False)
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    if variance <= 0.0:
        return ZTest(None, None, False)  # both arms all-success or all-failure
    z = (x2 / n2 - x1 / n1) / math.sqrt(variance)
    reliable = min(x1, n1 - x1, x2, n2 - x2) >= MIN_CELL
    return ZTest(z, math.erfc(abs(z) / math.sqrt(2.0)), reliable)
