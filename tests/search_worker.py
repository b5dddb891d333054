"""A search on the synthetic evaluator, as a separate process (resume, multi-worker and signal tests).

    python -m tests.search_worker STORAGE_URL TRIALS [SLEEP_SECONDS [JOBS [SPACE [MAX_GENERATIONS]]]]

With JOBS > 1 it runs like ``autodelta search --jobs JOBS``: this process plus JOBS - 1
spawned workers on one study. Exit code 130 when interrupted (Ctrl-C), as the CLI.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from autodelta.evaluation.synthetic import SyntheticEvaluator
from autodelta.plan.cost import CostModel, parse_budget
from autodelta.search.run import run_search
from autodelta.search.settings import SearchSettings
from autodelta.search.spaces import load_space
from autodelta.search.workers import WorkerPool


class SlowSynthetic(SyntheticEvaluator):
    def __init__(self, sleep: float, meter=None) -> None:
        super().__init__(CostModel.uniform(28), 20, meter=meter)
        self.sleep = sleep

    def evaluate(self, plan):
        time.sleep(self.sleep)
        return super().evaluate(plan)


@dataclass(frozen=True)
class SlowFactory:
    """Picklable evaluator factory for spawned workers."""

    sleep: float

    def __call__(self, meter=None) -> SlowSynthetic:
        return SlowSynthetic(self.sleep, meter)


def settings(storage: str, trials: int, space: str = "delta-dit", bound: int | None = None) -> SearchSettings:
    return SearchSettings(budget=parse_budget("1.6x"), space=load_space(space), trials=trials,
                          storage=storage, study_name="worker-test", model="synthetic", seed=None,
                          max_generations=bound)


if __name__ == "__main__":
    storage, trials = sys.argv[1], int(sys.argv[2])
    sleep = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    jobs = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    config = settings(storage, trials, sys.argv[5] if len(sys.argv) > 5 else "delta-dit",
                      int(sys.argv[6]) if len(sys.argv) > 6 else None)
    pool = WorkerPool([SlowFactory(sleep)] * (jobs - 1), config) if jobs > 1 else None
    outcome = run_search(SlowSynthetic(sleep), config, progress=False, workers=pool)
    sys.exit(130 if outcome.interrupted else 0)
