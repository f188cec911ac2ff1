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

import numpy as np


#: above this many inner steps (targets² · sources) the row-wise vectorised fill is faster than
#: the scalar loop (measured: 12×12 breaks even, 60×60 is 7× faster, 150×150 16×)
VECTORISE_FROM = 2048


def align(scores: Sequence[Sequence[float]], n_source: int) -> tuple[float, list[tuple[int | None, int | None]]]:
    """Align targets (rows of `scores`) with sources (columns).

    Returns the DP value and the alignment as a list of ``(source, target)`` index pairs in
    order, where ``None`` marks a skipped item on that side. A target inside a run whose own
    score is 0 is reported unmatched.
    """
    n, m = len(scores), n_source
    fill = _fill_rows if n * n * m >= VECTORISE_FROM else _fill_loop
    dp, back = fill(scores, n, m)
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


def _tables(n: int, m: int) -> tuple[list[list[float]], list[list[tuple[int, int]]]]:
    """The DP values, all 0, and the back-pointers, each target skipped by default."""
    return ([[0.0] * (m + 1) for _ in range(n + 1)],
            [[(i - 1, 0)] + [(0, 0)] * m for i in range(n + 1)])


def _skip(row_prev: list[float], row: list[float], i: int, j: int) -> tuple[float, tuple[int, int]]:
    """The better of leaving target i alone and leaving source j alone (a tie leaves j)."""
    if row_prev[j] > row[j - 1]:
        return row_prev[j], (i - 1, j)
    return row[j - 1], (i, j - 1)


def _first_positive(scores: Sequence[Sequence[float]], n: int, m: int) -> list[int]:
    """For each source, the first target row (from 1) with a positive score, n + 1 if none:
    a column cannot start a run worth taking above it."""
    return [next((i + 1 for i in range(n) if scores[i][j] > 0), n + 1) for j in range(m)]


def _fill_loop(scores, n: int, m: int):
    """The authors' loop: for every cell, every run of targets ending there."""
    dp, back = _tables(n, m)
    first_positive = _first_positive(scores, n, m)
    for i in range(1, n + 1):
        row_prev, row = dp[i - 1], dp[i]
        for j in range(1, m + 1):
            best, step = _skip(row_prev, row, i, j)
            if first_positive[j - 1] <= i:
                total = 0.0
                for k in range(i, 0, -1):
                    total += scores[k - 1][j - 1]
                    value = total / (i - k + 1) ** 0.5 + dp[k - 1][j - 1]
                    if value > best:
                        best, step = value, (k - 1, j - 1)
            row[j] = best
            back[i][j] = step
    return dp, back


def _fill_rows(scores, n: int, m: int):
    """The same values and choices as `_fill_loop`, with the runs ending in one target row
    computed for every source at once.

    A run of targets k..i for source j earns (s_k + … + s_i) / sqrt(i - k + 1) + dp[k-1][j-1],
    which depends on earlier rows only: the sums accumulate from row i upwards in the loop's
    order, and the first best k (from i down) wins as the loop's strict `>` makes it. Only
    the choice against skipping, which reads the row's previous cell, stays a scalar loop."""
    dp, back = _tables(n, m)
    if not (n and m):
        return dp, back
    table = np.asarray(scores, dtype=np.float64).reshape(n, m)
    first_positive = _first_positive(scores, n, m)
    roots = np.array([r ** 0.5 for r in range(1, n + 1)])  # Python's powers, as in the loop
    done = np.zeros((n + 1, m))  # dp[k][j - 1], filled row by row
    columns = np.arange(m)
    for i in range(1, n + 1):
        values = np.cumsum(table[i - 1::-1], axis=0) / roots[:i, None] + done[i - 1::-1]
        first = values.argmax(axis=0)
        runs, starts = values[first, columns].tolist(), (i - 1 - first).tolist()
        row_prev, row = dp[i - 1], dp[i]
        for j in range(1, m + 1):
            best, step = _skip(row_prev, row, i, j)
            if first_positive[j - 1] <= i and runs[j - 1] > best:
                best, step = runs[j - 1], (starts[j - 1], j - 1)
            row[j] = best
            back[i][j] = step
        done[i] = row[:m]
    return dp, back
