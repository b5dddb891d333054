"""The objective: a trial's plan scored (or answered from the study), its figures stored on the trial."""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna

from autodelta.evaluation.evaluator import Evaluation, Evaluator
from autodelta.evaluation.metrics import get_metric
from autodelta.evaluation.work import WorkExhausted
from autodelta.plan.schedule import encode_plan
from autodelta.search.records import QUALITY_CAP, finite_or_none
from autodelta.search.samplers.base import ExplicitPlanSampler
from autodelta.search.settings import SearchSettings
from autodelta.search.spaces import Param, ParamKind

logger = logging.getLogger(__name__)


class Objective:
    """Plan of the sampled parameters → (quality, MACs); duplicate plans are answered from the study."""

    def __init__(self, evaluator: Evaluator, settings: SearchSettings, study: optuna.Study) -> None:
        self.evaluator, self.settings, self.study = evaluator, settings, study
        self.metric = get_metric(settings.metric)
        self.reused = 0
        self.exhausted = False

    def _known(self) -> dict[tuple[Any, ...], dict[str, Any]]:
        known = {}
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if "plan" in t.user_attrs:
                known[tuple(map(str, t.user_attrs["plan"]))] = t.user_attrs
        return known

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        steps, blocks = self.evaluator.steps, self.evaluator.num_blocks

        def suggest(param: Param, low: float, high: float) -> Any:
            if param.kind is ParamKind.INT:
                return trial.suggest_int(param.name, int(low), int(high))
            return trial.suggest_float(param.name, low, high, log=param.log)

        values = self.settings.space.sample(suggest, steps, blocks)
        plan = self.settings.space.plan(values, steps, blocks)
        plan_list = encode_plan(plan)
        attrs = self._known().get(tuple(map(str, plan_list)))
        if attrs is not None:  # same explicit plan as an earlier trial: answer from the study
            self.reused += 1
            metrics, macs, speedup = attrs["metrics"], attrs["macs"], attrs["speedup"]
            trial.set_user_attr("duplicate_of", attrs.get("trial"))
            if "item_mse" in attrs:
                trial.set_user_attr("item_mse", attrs["item_mse"])
        else:
            try:  # the meter books the work in the study's ledger first, and refuses it past --max-generations
                evaluation: Evaluation = self.evaluator.evaluate(plan)
            except WorkExhausted:
                self.exhausted = True
                self.study.stop()
                raise optuna.TrialPruned(f"--max-generations {self.settings.max_generations} reached") from None
            metrics, macs, speedup = evaluation.metrics, evaluation.macs, evaluation.speedup
            try:
                trial.set_user_attr("item_mse", [finite_or_none(v) or 0.0 for v in evaluation.item_mse()])
            except ValueError:
                pass  # metrics without an image error: the model is not calibrated on this trial
        sampler = self.study.sampler
        screened = sampler.screened(plan) if isinstance(sampler, ExplicitPlanSampler) else None
        if screened is not None:  # both fidelities: for the report
            trial.set_user_attr("screen", finite_or_none(screened))
        trial.set_user_attr("trial", trial.number)
        trial.set_user_attr("plan", plan_list)
        trial.set_user_attr("metrics", {k: finite_or_none(v) for k, v in metrics.items()})
        trial.set_user_attr("macs", macs)
        trial.set_user_attr("speedup", speedup)
        trial.set_constraint("budget", self.settings.budget.speedup - speedup)  # feasible when <= 0
        quality = metrics[self.settings.metric]
        if math.isnan(quality) or quality == (-math.inf if self.metric.higher_is_better else math.inf):
            # a broken generation is never a schedule: Optuna marks a NaN objective FAIL, and the
            # study keeps it out of every record, Pareto front and choice
            trial.set_user_attr("failed", f"{self.settings.metric} is {quality}")
            logger.warning("trial %d failed: %s is %s; it is never chosen", trial.number, self.settings.metric, quality)
            return math.nan, macs
        if math.isinf(quality):  # identical to full compute
            quality = QUALITY_CAP if self.metric.higher_is_better else 0.0
        return quality, macs
