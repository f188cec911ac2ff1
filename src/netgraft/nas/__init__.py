"""Neural architecture search that reuses knowledge: Optuna trials warm-started by grafting.

* `WarmStartPool` — a directory of trained models; `warm_start(model, params, trial=trial)`
  grafts the most similar one into a new trial's model, `add(model, params, trial=trial)`
  stores the trained weights (safetensors, content-addressed). Plugs into any Optuna
  objective in a few lines (see `netgraft.nas.pool`).
* `run_search(SearchConfig(...))` — the ready search (`netgraft search`): a space of small
  timm convnets (`effnet`, `resnet`), objectives accuracy / params / flops / latency_ms,
  TPE (one objective) or NSGA-II (several), SQLite or PostgreSQL storage, several workers.
"""
from .pool import PoolEntry, WarmStart, WarmStartPool, arch_key
from .search import (OBJECTIVES, SearchConfig, SearchResult, TrialFailed, budget_counts, front,
                     hypervolume_2d, open_study, parse_objectives, run_search, storage_url)
from .space import SPACES, EffNetSpace, ResNetSpace, SearchSpace, get_space

__all__ = [
    "EffNetSpace", "OBJECTIVES", "PoolEntry", "ResNetSpace", "SPACES", "SearchConfig",
    "SearchResult", "SearchSpace", "TrialFailed", "WarmStart", "WarmStartPool", "arch_key",
    "budget_counts", "front", "get_space", "hypervolume_2d", "open_study", "parse_objectives",
    "run_search", "storage_url",
]
