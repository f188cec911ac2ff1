"""Robustness over the real zoo: transfer between ~170 timm architectures of every family.

Pairs cross families (each target's source sits half the zoo away) and the target's input
channels cycle through 3, 1 and 13. Every pair must transfer, give a finite output, and fill
something on convolutional pairs; anything unsupported must be an UnsupportedModelError. Over
the sweep, the default method must change more of each target than DPIAT does.
The full 341-model sweep is `python benchmarks/coverage_sweep.py`.
"""
import statistics

import pytest

from benchmarks.coverage_sweep import run_pair, sweep_pairs, summarise

PAIRS = sweep_pairs(models=170)
RESULTS: dict = {}


def test_sweep_is_broad():
    from benchmarks.timm_zoo import FAMILY
    targets = {p.target for p in PAIRS}
    names = targets | {p.source for p in PAIRS}
    assert len(names) >= 150
    assert len({FAMILY[n] for n in names}) == len(set(FAMILY.values()))  # every family
    assert sum(FAMILY[p.source] != FAMILY[p.target] for p in PAIRS) >= 0.9 * len(PAIRS)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p.source}->{p.target}@{p.in_chans}")
def test_pair(pair):
    outcomes = run_pair(pair)
    RESULTS[(pair.source, pair.target)] = outcomes
    for o in outcomes:
        assert o.status in ("ok", "unsupported"), f"{o.method}: {o.error}"
        if o.status == "unsupported":
            assert "layer" in o.error
            continue
        assert o.finite, f"{o.method}: non-finite output"
        if o.convolutional and o.method == "graft":
            assert o.coverage > 0 and o.changed > 0


def test_default_changes_more_of_the_target_than_dpiat():
    if len(RESULTS) < len(PAIRS):
        pytest.skip("needs the whole sweep (run the file, not a selection)")
    summary = summarise([o for outs in RESULTS.values() for o in outs])
    assert summary["graft"]["failed"] == summary["dpiat"]["failed"] == 0
    assert summary["graft"]["mean_changed"] > summary["dpiat"]["mean_changed"] + 0.1
    graft = {k: v[0].changed for k, v in RESULTS.items()}
    dpiat = {k: v[1].changed for k, v in RESULTS.items()}
    assert statistics.fmean(graft[k] >= dpiat[k] - 1e-9 for k in graft) > 0.8
