"""diffusers' MagCache: skip the stack while the accumulated magnitude-ratio error stays under a threshold."""

from __future__ import annotations

import ast
import contextlib
import io
import logging
from typing import Any

from autodelta.baselines.base import RuntimeMethod
from autodelta.baselines.hooks import Installer, diffusers_installer
from autodelta.errors import ModelError


class MagCache(RuntimeMethod):
    """Its ratios are calibrated on the calibration items first (its ``calibrate=True`` run), as its docs ask.

    At most 3 skipped steps in a row and the first 20% of steps never skipped (its
    defaults), so it tops out near 2.5x.
    """

    name = "magcache"
    description = "diffusers MagCache, ratios calibrated, threshold tuned to the budget"
    knob = "threshold"
    high = 100.0

    def installer(self, value: Any, extras: Any = None) -> Installer:
        from diffusers.hooks import MagCacheConfig

        steps, ratios = extras
        return diffusers_installer("apply_mag_cache", lambda _pipe: MagCacheConfig(
            threshold=value, num_inference_steps=steps, mag_ratios=ratios))

    def calibrate(self, runner: Any, steps: int) -> tuple[int, list[float]]:
        """MagCache's calibration run on the calibration items; the ratios are averaged over items.

        diffusers reports them only in its log line at the end of the run (the hook's state is
        reset right after), so that line is where they are read.
        """
        from diffusers.hooks import MagCacheConfig

        found: list[list[float]] = []

        class Grab(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                text = record.getMessage()
                if "Calibration Results:" in text:
                    found.append([float(v) for v in ast.literal_eval(text.split("Results:", 1)[1].strip())])

        logger = logging.getLogger("diffusers.hooks.mag_cache")
        handler, level, propagate = Grab(), logger.level, logger.propagate
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # diffusers' own handler would print every INFO line
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # it also prints the ratios
                runner.run(diffusers_installer("apply_mag_cache", lambda _pipe: MagCacheConfig(
                    calibrate=True, num_inference_steps=steps)), desc="magcache calibration")
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
        if not found:
            raise ModelError("MagCache's calibration run reported no magnitude ratios on this model")
        return steps, [sum(column) / len(found) for column in zip(*found)]
