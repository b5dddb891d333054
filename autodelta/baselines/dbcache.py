"""cache-dit's DBCache (its defaults: F8B0, 8 warm-up steps), plain or with its first-order TaylorSeer calibrator."""

from __future__ import annotations

from typing import Any

from autodelta.baselines.base import RuntimeMethod
from autodelta.baselines.hooks import Installer, cache_dit_installer


class DBCache(RuntimeMethod):
    """With 8 warm-up steps of 20 it reaches at most ~1.75x, and says so."""

    name = "dbcache"
    description = "cache-dit DBCache (F8B0, F halved on models under 16 blocks; 8 warm-up steps), threshold tuned"
    knob = "threshold"
    taylorseer = False

    def installer(self, value: Any, extras: Any = None) -> Installer:
        return cache_dit_installer(value, taylorseer=self.taylorseer)


class DBCacheTaylorSeer(DBCache):
    name = "dbcache-taylorseer"
    description = "cache-dit DBCache with its TaylorSeer calibrator, threshold tuned"
    taylorseer = True
