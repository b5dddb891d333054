"""Extra search workers (``--jobs K``): processes on the same study that stop cleanly and die with their parent.

Each worker opens the same Optuna storage and optimizes until the study holds the asked
number of completed trials. Ctrl-C reaches the whole process group; workers ignore it
and instead finish their trial in progress when the main process asks them to stop,
so no trial is left half-written. A worker whose parent dies (SIGKILL) exits at once
instead of searching on alone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from autodelta.evaluation.evaluator import EvaluatorBuilder
from autodelta.evaluation.work import WorkExhausted, WorkMeter
from autodelta.search.ledger import bind_meter
from autodelta.search.objective import Objective
from autodelta.search.run import optimize_until
from autodelta.search.settings import SearchSettings
from autodelta.search.study import attach_sampler, open_study

logger = logging.getLogger(__name__)


def _exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """Exit this process as soon as ``parent`` is no longer its parent (it died; we were re-parented)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(interval)

    threading.Thread(target=watch, name="autodelta-parent-watch", daemon=True).start()


def worker_main(factory: EvaluatorBuilder, settings: SearchSettings, stop: Any, parent: int) -> None:
    """Body of one worker process: same study, same ledger and bound, stops after its trial when asked.

    It books everything it generates (its reference, when the cache misses, and its trials) in
    the study's ledger, and stops at ``--trials``, at the bound, or when the main process asks.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides; we finish the trial in progress
    _exit_with_parent(parent)
    study = open_study(settings)
    meter = bind_meter(WorkMeter(), study, settings.run, settings.max_generations)
    try:
        evaluator = factory(meter)
        attach_sampler(study, settings, evaluator, probing=False)  # the main process probed, or chose not to
    except WorkExhausted as exc:
        logger.info("worker: %s; nothing left to do", exc)
        return
    objective = Objective(evaluator, settings, study)
    if meter.allows(evaluator.items):
        optimize_until(study, objective, settings.trials, [], lambda: stop.is_set() or objective.exhausted)


class WorkerPool:
    """One worker process per evaluator factory (spawned, so CUDA and threads start clean in each).

    Each factory says where its worker runs (``EvaluatorFactory.device``), so ``--jobs K``
    puts worker i on its own GPU.
    """

    def __init__(self, factories: Sequence[EvaluatorBuilder], settings: SearchSettings) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._stop = ctx.Event()
        self.processes = [ctx.Process(target=worker_main, args=(factory, settings, self._stop, os.getpid()),
                                      name=f"autodelta-worker-{i + 1}") for i, factory in enumerate(factories)]

    def start(self) -> None:
        # Children inherit an *ignored* SIGINT through exec, and Python then installs no
        # KeyboardInterrupt handler: a Ctrl-C during their start-up cannot kill them half-way.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for process in self.processes:
                process.start()
        finally:
            signal.signal(signal.SIGINT, previous)

    def stop(self) -> None:
        """Ask every worker to stop after its trial in progress."""
        self._stop.set()

    def join(self) -> None:
        for process in self.processes:
            process.join()
