"""Transfer quality on real data: does a graft train faster than random init?

    python benchmarks/transfer_quality.py [--quick] [--cache DIR] [--out DIR] [--estimate] ...

A thin wrapper around `netgraft.bench` (also `netgraft bench`); see that module for the
protocol, the pairs and the inits. Writes benchmarks/results/transfer_quality[_quick].{json,md}
and one PNG per training regime.
"""
from __future__ import annotations

import sys
from pathlib import Path

try:
    from netgraft.bench import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from netgraft.bench import main

if __name__ == "__main__":
    sys.exit(main())
