"""The caching methods autodelta is measured against, listed once: one class each, in a module of its own.

Plan baselines are explicit plans, so their MACs are exact: ``paper`` (Δ-DiT's hand-set
schedule), ``fora`` (whole-stack reuse, full steps spread evenly), ``deepcache`` (the middle
of the stack cached) and ``greedy`` (chosen on the calibration items). Run-time methods
decide while generating, and their own knob is tuned on the calibration items until the
MACs *measured* there meet the budget: diffusers' ``fbcache``, ``taylorseer``, ``magcache``,
``seacache`` and ``pab``, cache-dit's ``dbcache`` and ``dbcache-taylorseer``.
"""

from __future__ import annotations

from autodelta.baselines.base import Baseline
from autodelta.baselines.dbcache import DBCache, DBCacheTaylorSeer
from autodelta.baselines.deepcache import DeepCache
from autodelta.baselines.fbcache import FirstBlockCache
from autodelta.baselines.fora import Fora
from autodelta.baselines.greedy import Greedy
from autodelta.baselines.magcache import MagCache
from autodelta.baselines.pab import PyramidAttentionBroadcast
from autodelta.baselines.paper import Paper
from autodelta.baselines.seacache import SeaCache
from autodelta.baselines.taylorseer import TaylorSeer
from autodelta.errors import BudgetError

BASELINES: dict[str, Baseline] = {b.name: b for b in [
    Paper(), Fora(), DeepCache(), Greedy(), FirstBlockCache(), TaylorSeer(), MagCache(), SeaCache(),
    PyramidAttentionBroadcast(), DBCache(), DBCacheTaylorSeer(),
]}


def get_baseline(name: str) -> Baseline:
    try:
        return BASELINES[name]
    except KeyError:
        raise BudgetError(f"unknown baseline {name!r}; choose one of: {', '.join(BASELINES)}") from None
