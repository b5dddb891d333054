"""A search on the synthetic evaluator, as a separate process (resume and multi-worker tests).

    python -m tests.search_worker STORAGE_URL TRIALS [SLEEP_SECONDS]
"""

from __future__ import annotations

import sys
import time

from autodelta.cost import CostModel, parse_budget
from autodelta.search import SearchSettings, run_search
from autodelta.spaces import load_space
from autodelta.synthetic import SyntheticEvaluator


class SlowSynthetic(SyntheticEvaluator):
    def __init__(self, sleep: float) -> None:
        super().__init__(CostModel.uniform(28), 20)
        self.sleep = sleep

    def evaluate(self, plan):
        time.sleep(self.sleep)
        return super().evaluate(plan)


def settings(storage: str, trials: int) -> SearchSettings:
    return SearchSettings(budget=parse_budget("1.6x"), space=load_space("delta-dit"), trials=trials,
                          storage=storage, study_name="worker-test", model="synthetic", seed=None)


if __name__ == "__main__":
    storage, trials = sys.argv[1], int(sys.argv[2])
    sleep = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    run_search(SlowSynthetic(sleep), settings(storage, trials), progress=False)
