"""The trajectory error model: a plan's error against full compute, predicted without generating.

A Δ step at ``i`` over span ``R``, after full steps ``a`` > ``b``, adds to the output the
error ``ε = Δ̂ − Δ_R(i)``: ``Δ̂ = Δ_R(a)`` for a replay, ``Δ_R(a) + w (Δ_R(a) − Δ_R(b))`` for
a forecast, all read from the recorded trajectory (:mod:`autodelta.evaluation.trajectory`).

How much of ``ε`` reaches the final image depends on the step and on the kind of error:
a *gain* ``g_i`` (image MSE per unit of ``‖ε‖²``) per step for replays and one for
forecasts, measured once by real probes (one whole-stack replay, or forecast, at step
``i`` with every other step full) on a few items. Forecast errors are not stale offsets but
curvature, and reach the image 3–6x harder at late steps (tiny-dit, measured).

Errors inside one run of Δ steps are stale in the same direction, so they add
coherently, each ``(1 + β)`` times the one before it (drift compounds): a run costs
``Σ_items (Σ_k (1+β)^k √g_i ‖ε_i‖)²``; runs separated by a full step add. Real evaluations
then **calibrate* how far forecasts follow their probe and ``β`` (:meth:`ErrorModel.calibrated`). See docs/design.md,
"search cost".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from autodelta.errors import AutodeltaError
from autodelta.evaluation.trajectory import Trajectory
from autodelta.plan.schedule import CachedRange, Step


def segments(plan: Sequence[Step]) -> list[tuple[int, int | None, list[int]]]:
    """``(a, b, Δ steps)`` of each run of Δ steps: ``a`` its full step, ``b`` the full step before ``a``."""
    out: list[tuple[int, int | None, list[int]]] = []
    fulls: list[int] = []
    for i, step in enumerate(plan):
        if step is None:
            fulls.append(i)
            out.append((i, fulls[-2] if len(fulls) > 1 else None, []))
        else:
            out[-1][2].append(i)
    return [s for s in out if s[2]]


Observation = tuple[Sequence[Step], Sequence[float], Sequence[int] | None]
"""A real evaluation as calibration reads it: the plan, each item's image MSE, and the items' positions in the
trajectory (``None``: all of them)."""

MIXES = (0.0, 0.5, 1.0)
"""How far a forecast's gain follows its own probe (1) rather than the replay's (0): the model's alternatives."""
COMPOUNDINGS = (0.0, 0.15, 0.3, 0.6)
"""β values the calibration tries."""


@dataclass(frozen=True)
class Gains:
    """Image MSE per unit of ``‖ε‖²`` at each step, for replays and forecasts; ``compounding`` is β.

    A forecast's gain is ``replay^(1-mix) · forecast^mix``: its probe sees an isolated forecast
    with ``w = 1``, which at low budgets overstates forecasts between closer full steps.
    """

    replay: tuple[float, ...]
    forecast: tuple[float, ...]
    compounding: float = 0.0
    mix: float = 1.0
    correction: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # per-step factors fitted to trials
    source: str = "probes"  # "prior": no probe measured them

    def of(self, step: int, choice: CachedRange) -> float:
        gain = self.replay[step] ** (1 - self.mix) * self.forecast[step] ** self.mix if choice.forecast else \
            self.replay[step]
        return gain * self.correction[choice.order][step] if self.correction else gain

    @classmethod
    def prior(cls, steps: int) -> Gains:
        """Equal gains at every step: the model then ranks plans by how far their Δs drift alone, and the
        trials' calibration corrects it step by step. What a search too small for probes starts from."""
        return cls((1.0,) * steps, (1.0,) * steps, source="prior")

    def as_dict(self) -> dict[str, Any]:
        return {"replay": list(self.replay), "forecast": list(self.forecast), "compounding": self.compounding,
                "mix": self.mix, "source": self.source}

    @classmethod
    def from_dict(cls, doc: Any, steps: int) -> Gains | None:
        """Gains stored in a study, or ``None`` when they are missing or made for another step count."""
        try:
            replay, forecast = tuple(map(float, doc["replay"])), tuple(map(float, doc["forecast"]))
            gains = cls(replay, forecast, float(doc.get("compounding", 0.0)), float(doc.get("mix", 1.0)),
                        source=str(doc.get("source", "probes")))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        ok = len(replay) == len(forecast) == steps and all(math.isfinite(g) and g >= 0 for g in replay + forecast)
        return gains if ok else None


class ErrorModel:
    """Per-item error of plans from a :class:`Trajectory` and :class:`Gains` (see the module docstring)."""

    def __init__(self, trajectory: Trajectory, gains: Gains, items: Sequence[int] | None = None) -> None:
        if len(gains.replay) != trajectory.steps:
            raise AutodeltaError(f"error model: {len(gains.replay)} gains for {trajectory.steps} steps")
        self.trajectory = trajectory
        self.steps = trajectory.steps
        self.gains = gains
        self.items = tuple(items) if items is not None else tuple(range(trajectory.items))
        index = torch.tensor(self.items)
        # per span, every item's inner products <Δ(x), Δ(y)> over steps x, y: each error norm below is
        # a few of them, so no recorded vector is read again after this
        self._gram = {span: torch.einsum("xjd,yjd->jxy", d, d).numpy()
                      for span, d in ((s, trajectory.deltas[s][:, index].double()) for s in trajectory.spans)}
        self._terms: dict[tuple[Any, ...], np.ndarray] = {}
        self._spread: tuple[np.ndarray, float] | None = None  # the fitted correction's inverse Gram and noise

    def with_gains(self, gains: Gains) -> ErrorModel:
        """The same trajectory and items under other gains (the Gram matrices are shared)."""
        other = object.__new__(ErrorModel)
        other.__dict__.update(self.__dict__, gains=gains, _terms={}, _spread=None)
        return other

    def error_energy(self, step: int, choice: CachedRange, last_full: int, previous_full: int | None) -> np.ndarray:
        """``‖ε‖²`` per item: the Δ the runtime would use at ``step`` minus the true one."""
        g = self._gram[choice.span]
        i, a = step, last_full
        if not choice.forecast:
            energy = g[:, a, a] - 2 * g[:, a, i] + g[:, i, i]
        else:
            if previous_full is None:
                raise AutodeltaError(f"a forecast at step {step} needs two full steps before it")
            b, w = previous_full, (step - last_full) / (last_full - previous_full)
            # ‖(1+w) Δ_a − w Δ_b − Δ_i‖²
            energy = ((1 + w) ** 2 * g[:, a, a] + w**2 * g[:, b, b] + g[:, i, i] - 2 * (1 + w) * w * g[:, a, b]
                      - 2 * (1 + w) * g[:, a, i] + 2 * w * g[:, b, i])
        return np.maximum(energy, 0.0)

    def step_terms(self, step: int, choice: CachedRange, last_full: int, previous_full: int | None) -> np.ndarray:
        """``(1+β)^k √g_i ‖ε‖`` per item (``k`` Δ steps before it in its run): its share of the run's sum."""
        key = (step, choice, last_full, previous_full if choice.forecast else None)
        terms = self._terms.get(key)
        if terms is None:
            energy = self.error_energy(step, choice, last_full, previous_full)
            scale = (1 + self.gains.compounding) ** (step - last_full - 1)
            terms = self._terms[key] = scale * np.sqrt(self.gains.of(step, choice) * energy)
        return terms

    def run_costs(self, terms: np.ndarray) -> np.ndarray:
        """Summed image MSE of runs of Δ steps (``[runs, steps, items]`` → ``[runs]``): terms add coherently per item."""
        return (terms.sum(axis=-2) ** 2).sum(axis=-1)

    def item_errors(self, plan: Sequence[Step]) -> np.ndarray:
        """Predicted image MSE of each item."""
        total = np.zeros(len(self.items))
        for a, b, deltas in segments(plan):
            terms = np.stack([self.step_terms(i, _delta(plan, i), a, b) for i in deltas])
            total += terms.sum(axis=0) ** 2
        return total

    def plan_cost(self, plan: Sequence[Step]) -> float:
        return float(self.item_errors(plan).sum())

    def quality(self, plan: Sequence[Step]) -> float:
        """Predicted PSNR in dB (of the mean MSE over items, as the psnr metric aggregates)."""
        return psnr_of_cost(self.plan_cost(plan), len(self.items))

    def alternatives(self) -> list[ErrorModel]:
        """The model under each forecast mix (:data:`MIXES`): their DP plans are the search's first seeds."""
        return [self.with_gains(replace(self.gains, mix=m)) for m in MIXES]

    def calibrated(self, observed: Sequence[Observation], ridge: float = 1.0) -> ErrorModel:
        """The model fitted to real evaluations: ``(plan, per-item image MSE, item positions)``, the positions
        ``None`` for every item (a trial) or the items a screen generated.

        First the reading (forecast mix, compounding β) that ranks them best (Spearman, ties
        broken by the log error), then per-step gain factors from what it still gets wrong
        (:meth:`_corrected`). Measured on the trials of an earlier search (tiny-dit-p2 at 2x,
        half of them fitted, half held out): the correction lifts the model's rank correlation
        in a neighbourhood of plans from 0.06 to 0.74. With fewer than three plans the model
        stays as it is.
        """
        usable = [u for u in (self._usable(entry) for entry in observed) if u is not None]
        if len(usable) < 3:
            return self
        from scipy.stats import spearmanr

        real = np.log([m for _, m, _ in usable])
        best: tuple[float, float] | None = None
        chosen = self
        for mix in MIXES:
            for compounding in COMPOUNDINGS:
                model = self.with_gains(replace(self.gains, mix=mix, compounding=compounding, correction=None))
                predicted = np.log([model.mean_error(p, items) for p, _, items in usable])
                rho = spearmanr(predicted, real).statistic
                score = (float(rho) if math.isfinite(rho) else -1.0, -float(np.mean((predicted - real) ** 2)))
                if best is None or score > best:
                    best, chosen = score, model
        return chosen._corrected(usable, ridge)

    def _usable(self, entry: Observation) -> tuple[tuple[Step, ...], float, tuple[int, ...] | None] | None:
        plan, mse = tuple(entry[0]), entry[1]
        items = tuple(entry[2]) if len(entry) > 2 and entry[2] is not None else None
        if not segments(plan) or len(mse) != (len(self.items) if items is None else len(items)):
            return None
        mean = float(np.mean(mse))
        return (plan, mean, items) if math.isfinite(mean) and mean > 0 else None

    def mean_error(self, plan: Sequence[Step], items: Sequence[int] | None = None) -> float:
        """Predicted mean image MSE over ``items`` (positions; ``None``: all), floored above 0 for logs."""
        errors = self.item_errors(plan)
        return max(float(errors.mean() if items is None else errors[list(items)].mean()), 1e-300)

    def _corrected(self, usable: Sequence[tuple[tuple[Step, ...], float, tuple[int, ...] | None]],
                   ridge: float) -> ErrorModel:
        """Per-step, per-kind gain factors from a ridge regression of the log residuals on which steps are
        replayed or forecast: where the trials say this model misjudges a step, its gain moves."""
        features = np.stack([_kinds(plan, self.steps) for plan, _, _ in usable])
        residual = np.array([math.log(m) - math.log(self.mean_error(p, items)) for p, m, items in usable])
        centred = residual - residual.mean()  # a common offset moves no ranking
        theta = np.linalg.solve(features.T @ features + ridge * np.eye(features.shape[1]), features.T @ centred)
        factors = np.exp(np.clip(theta, -3.0, 3.0)).reshape(self.steps, 2)
        correction = (tuple(factors[:, 0].tolist()), tuple(factors[:, 1].tolist()))
        model = self.with_gains(replace(self.gains, correction=correction))
        noise = float(np.mean((centred - features @ theta) ** 2)) + 1e-3
        model._spread = (np.linalg.inv(features.T @ features + ridge * np.eye(features.shape[1])), noise)
        return model

    def uncertainty(self, plan: Sequence[Step], than: Sequence[Step] | None = None) -> float:
        """How unsure the fitted correction is about ``plan`` (relative to ``than``), in dB (one standard
        deviation; 0 before fitting): large where the two differ at steps the trials never varied."""
        if self._spread is None:
            return 0.0
        inverse, noise = self._spread
        x = _kinds(plan, self.steps) - (_kinds(than, self.steps) if than is not None else 0.0)
        return 10 / math.log(10) * math.sqrt(max(float(x @ inverse @ x) * noise, 0.0))


def _kinds(plan: Sequence[Step], steps: int) -> np.ndarray:
    """One-hot of each step's kind (index ``2i``: replayed, ``2i+1``: forecast; both 0: full)."""
    x = np.zeros(2 * steps)
    for i, step in enumerate(plan):
        if step is not None:
            x[2 * i + step.order] = 1.0
    return x


def _delta(plan: Sequence[Step], step: int) -> CachedRange:
    choice = plan[step]
    assert choice is not None, f"step {step} is full"
    return choice


def psnr_of_cost(cost: float, items: int) -> float:
    mse = cost / max(items, 1)
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)


def probe_plans(steps: int, widest: CachedRange) -> list[tuple[Step, ...]]:
    """The probes that measure the gains: a whole-stack replay at every step ``i`` ≥ 1, then a forecast at every ``i`` ≥ 2,
    every other step full."""
    forecast = CachedRange(widest.start, widest.length, 1)
    replays = [tuple(widest if k == i else None for k in range(steps)) for i in range(1, steps)]
    forecasts = [tuple(forecast if k == i else None for k in range(steps)) for i in range(2, steps)]
    return replays + forecasts


def fit_gains(trajectory: Trajectory, widest: CachedRange, probe_mse: Sequence[Sequence[float]],
              items: Sequence[int]) -> Gains:
    """Gains from the probes of :func:`probe_plans` (in that order): ``g_i = Σ_j MSE_ij / Σ_j ‖ε_ij‖²``
    over the probed items ``j``, where ``probe_mse`` holds each probe's real per-item image MSE.

    A step whose error energy is zero (its Δ did not change) takes the median gain of its kind;
    step 1 has no forecast probe (nothing to extrapolate from) and takes step 2's.
    """
    steps = trajectory.steps
    if len(probe_mse) != 2 * steps - 3:
        raise AutodeltaError(f"error model: {len(probe_mse)} probes for {steps} steps; expected {2 * steps - 3}")
    model = ErrorModel(trajectory, Gains((1.0,) * steps, (1.0,) * steps), items)
    forecast = CachedRange(widest.start, widest.length, 1)

    def fitted(first: int, choice: CachedRange, offset: int) -> list[float]:
        out: list[float | None] = []
        for i in range(first, steps):
            energy = float(model.error_energy(i, choice, i - 1, i - 2 if choice.forecast else None).sum())
            mse = float(np.sum(probe_mse[offset + i - first]))
            out.append(mse / energy if energy > 0 and math.isfinite(mse) else None)
        known = [g for g in out if g is not None]
        fallback = float(np.median(known)) if known else 1.0
        return [fallback if g is None else g for g in out]

    replay = fitted(1, widest, 0)
    forecasts = fitted(2, forecast, steps - 1)
    return Gains(tuple([replay[0]] + replay), tuple([forecasts[0], forecasts[0]] + forecasts))
