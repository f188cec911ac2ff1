"""The alignment dynamic programme shared by every matching method (DPIAT, section 2).

Items of a source list s_1..s_m are aligned to the items of a target list t_1..t_n, keeping
order. One source item may initialise a run of consecutive target items; the run's credit is
the sum of its scores divided by sqrt(run length), so longer runs earn more, but less than
linearly. Both sides may skip items.

The loop order, comparisons and tie-breaking reproduce the authors' implementation exactly,
so that ``method="dpiat"`` picks the same pairs as their package.
"""
from __future__ import annotations

from typing import Sequence


def align(scores: Sequence[Sequence[float]], n_source: int) -> tuple[float, list[tuple[int | None, int | None]]]:
    """Align targets (rows of `scores`) with sources (columns).

    Returns the DP value and the alignment as a list of ``(source, target)`` index pairs in
    order, where ``None`` marks a skipped item on that side. A target inside a run whose own
    score is 0 is reported unmatched.
    """
    n, m = len(scores), n_source
    dp = [[0.0] * (m + 1) for _ in range(n + 1)]
    back = [[(i - 1, 0)] + [(0, 0)] * m for i in range(n + 1)]
    # columns with no positive score above row i cannot start a run worth taking: skip them
    first_positive = [n + 1] * m
    for j in range(m):
        for i in range(n):
            if scores[i][j] > 0:
                first_positive[j] = i + 1
                break
    for i in range(1, n + 1):
        row_prev, row = dp[i - 1], dp[i]
        for j in range(1, m + 1):
            if row_prev[j] > row[j - 1]:
                best, step = row_prev[j], (i - 1, j)
            else:
                best, step = row[j - 1], (i, j - 1)
            if first_positive[j - 1] <= i:
                total = 0.0
                for k in range(i, 0, -1):
                    total += scores[k - 1][j - 1]
                    value = total / (i - k + 1) ** 0.5 + dp[k - 1][j - 1]
                    if value > best:
                        best, step = value, (k - 1, j - 1)
            row[j] = best
            back[i][j] = step
    pairs: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i > 0:
        start, prev_j = back[i][j]
        if j == 0 or prev_j == j:  # target i left alone
            i -= 1
            pairs.append((None, i))
            continue
        j -= 1
        used = False
        while start < i:
            i -= 1
            if scores[i][j] > 0:
                pairs.append((j, i))
                used = True
            else:
                pairs.append((None, i))
        if not used:
            pairs.append((j, None))
    pairs.reverse()
    return dp[n][m], pairs
