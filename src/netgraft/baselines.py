"""The authors' own DPIAT package, `iatransfer`, loaded as a baseline to compare against.

Install it with ``pip install --no-deps iatransfer==1.0.3 inflection networkx graphviz
matplotlib``. Its package ``__init__`` imports every option it has, including a graph-embedding
one that needs `karateclub`, which does not install on current Python; that option is never
used by DPIAT, so a stand-in module is registered before the import.
"""
from __future__ import annotations

import sys
import types
from typing import Any

from torch import nn

INSTALL_HINT = ("pip install --no-deps iatransfer==1.0.3 inflection networkx graphviz matplotlib")


class _Unused:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


def load_iat() -> type:
    """The `IAT` class of `iatransfer`; ImportError with the install command when absent."""
    if "karateclub" not in sys.modules:
        stub = types.ModuleType("karateclub")
        stub.FeatherNode = _Unused
        stub.NetMF = _Unused
        sys.modules["karateclub"] = stub
    try:
        from iatransfer.toolkit import IAT
    except ImportError as exc:
        raise ImportError(f"the authors' package iatransfer is not installed: {INSTALL_HINT}") from exc
    return IAT


def iatransfer_pairs(source: nn.Module, target: nn.Module) -> dict[str, str]:
    """{target layer name: source layer name} as matched by the authors' DPIAT (no writes)."""
    iat = load_iat()()
    src_items, tgt_items = iat.standardization(source), iat.standardization(target)
    iat.score.precompute_scores(source, target)
    iat.matching.set_score(iat.score)
    matched = iat.matching(src_items, tgt_items)
    src_names = {m: n for n, m in source.named_modules()}
    tgt_names = {m: n for n, m in target.named_modules()}
    pairs: dict[str, str] = {}

    def walk(items: list) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item)
            elif item[0] is not None and item[1] is not None:
                pairs[tgt_names[item[1]]] = src_names[item[0]]

    walk(matched)
    return pairs


def iatransfer_transfer(source: nn.Module, target: nn.Module) -> None:
    """Run the authors' DPIAT (blocks + DP + shape score + clip) from `source` into `target`."""
    load_iat()()(source, target)


def iatransfer_similarity(a: nn.Module, b: nn.Module) -> float:
    return float(load_iat()().sim(a, b))
