"""--max-generations: every phase spends from one ledger in the study, a reached bound still yields the best
verified schedule, workers stop at it, and every generation is booked where it happens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from autodelta.errors import AutodeltaError
from autodelta.evaluation.calibration import CalibrationSet
from autodelta.evaluation.diffusion import DiffusionEvaluator
from autodelta.evaluation.synthetic import SyntheticEvaluator
from autodelta.evaluation.work import WorkExhausted, WorkMeter
from autodelta.plan.cost import CostModel, parse_budget
from autodelta.plan.schedule import load_schedule
from autodelta.search.ledger import PREFIX, cached_items, generations_by_phase
from autodelta.search.results import summarize
from autodelta.search.run import run_search
from autodelta.search.settings import SearchSettings
from autodelta.search.spaces import load_space

ROOT = Path(__file__).resolve().parent.parent


def _study(out: Path, name: str = "dit-test-explicit-1.6x") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


@pytest.mark.slow
def test_a_reached_bound_writes_the_best_verified_schedule_and_a_larger_one_resumes(cli, tmp_path, monkeypatch):
    """dit-test, 2 items, 20 steps, real generations: reference 2, probes on 1 item (37: at most half the room),
    then trials of 2 until the bound of 100 (40 asked, so the bound stops them)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "s"
    args = ["search", "--model", "dit-test", "--budget", "1.6x", "--calib", "2", "--trials", "40", "--out", str(out)]
    code, stdout, err = cli(*args, "--max-generations", "100")
    assert code == 0, err
    ledger = generations_by_phase(_study(out))
    assert sum(ledger.values()) <= 100 and ledger["reference"] == 2 and ledger["model"] == 37
    assert ledger["trials"] == 100 - 2 - 37 - 1  # as many trials of 2 as fit
    assert f"item-generations this run: {sum(ledger.values())} " in stdout
    assert "paper rule not measured within --max-generations 100" in stdout
    report = (out / "report.md").read_text()
    assert "stopped at --max-generations 100" in report and "resuming this study" in report
    schedule = load_schedule(out / "schedule.yaml")
    assert schedule.cost["speedup"] >= 1.6
    trials = len(_study(out).trials)

    code, stdout, err = cli(*args, "--max-generations", "100")  # the same bound: nothing more to spend
    assert code == 0, err
    assert "item-generations this run: 0 " in stdout and len(_study(out).trials) == trials

    code, stdout, err = cli(*args, "--max-generations", "110")
    assert code == 0, err
    after = generations_by_phase(_study(out))
    assert sum(after.values()) <= 110 and after["model"] == 37 and after["reference"] == 2  # probes kept, cache read
    assert after["trials"] > ledger["trials"] and "--max-generations 110" in stdout


def test_a_bound_too_small_for_the_reference_is_one_line_naming_the_users_number(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, _, err = cli("search", "--model", "dit-test", "--calib", "2", "--max-generations", "3",
                        "--out", str(tmp_path / "s"))
    assert code == 2 and err.count("\n") == 1 and "--max-generations 3 is below" in err and "4 item-generations" in err


def test_no_verified_plan_yet_is_one_error_and_the_study_keeps_its_trials(tmp_path):
    evaluator = SyntheticEvaluator(CostModel.uniform(28), 20)
    settings = SearchSettings(budget=parse_budget("3x"), space=load_space("free-steps", 20, 28), trials=1, sampler="random",
                              storage=f"sqlite:///{tmp_path / 's.db'}", model="synthetic", seed_known=False, seed=3)
    outcome = run_search(evaluator, settings, progress=False)
    assert outcome.records and not any(r.feasible for r in outcome.records)
    with pytest.raises(AutodeltaError, match="no verified plan meets budget 3x yet.*run the same command again"):
        summarize(outcome, settings, evaluator, None)
    assert len(optuna.load_study(study_name=settings.study_name, storage=settings.storage).trials) == 1


def test_the_paper_rule_is_written_when_it_beats_every_trial(tmp_path):
    """One random trial against the paper rule, measured for the report: the better of the two is the answer."""
    from autodelta.cli.outputs import write_outputs

    class _Profile:
        name, pretrained_id, num_blocks, scheduler, steps, guidance_scale, schedule_source = \
            "synthetic", None, 28, "DPMSolverMultistepScheduler", 20, 4.0, None

    from autodelta.search.study import open_study

    evaluator = SyntheticEvaluator(CostModel.uniform(28), 20)
    settings = SearchSettings(budget=parse_budget("1.6x"), space=load_space("free-steps", 20, 28), trials=1,
                              sampler="random", storage=f"sqlite:///{tmp_path / 's.db'}", model="synthetic",
                              seed_known=False)
    # one trial: 12 full steps packed at the start, then whole-stack replays (1.67x, and a poor plan)
    open_study(settings).enqueue_trial({"full_steps": 12, "warp": 4.0, "b": 10, "n_early": 28, "s_early": 0,
                                        "n_late": 28, "s_late": 0})
    outcome = run_search(evaluator, settings, progress=False)
    results = summarize(outcome, settings, evaluator, None)
    result = results.budgets[0]
    assert result.paper is not None and outcome.best is not None and result.paper.quality > outcome.best.quality
    assert result.paper_chosen and result.best is result.paper
    write_outputs(outcome, results, settings, evaluator, _Profile(), tmp_path)
    schedule = load_schedule(tmp_path / "schedule.yaml")
    assert schedule.plan == result.paper.plan and schedule.params["rule"] == "paper"
    assert "paper rule's plan scored higher than every trial" in (tmp_path / "report.md").read_text()


def test_budgets_with_a_sampler_that_serves_one_budget_are_refused(cli, tmp_path):
    code, _, err = cli("search", "--model", "dit-test", "--budgets", "1.3x,2x", "--sampler", "tpe",
                        "--space", "delta-dit", "--out", str(tmp_path / "s"))
    assert code == 2 and err.count("\n") == 1 and "--budgets serves several budgets" in err and "tpe" in err


@pytest.mark.slow
def test_two_workers_under_a_bound_stop_at_it_and_each_books_its_own_work(tmp_path):
    """Synthetic evaluator (1 item per trial), the model sampler, a main process and a worker: the run ends,
    the study's total is at most the bound, and both processes' trials are in the ledger."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "tests.search_worker", storage, "400", "0.05", "2", "explicit", "30"],
                          cwd=ROOT, env=env, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    study = optuna.load_study(study_name="worker-test", storage=storage)
    total = sum(generations_by_phase(study).values())
    assert 28 <= total <= 30
    entries = [v for k, v in study.user_attrs.items() if k.startswith(PREFIX)]
    assert len(entries) == 2 and all(e.get("trials", 0) > 0 for e in entries)
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)


def test_a_work_meter_books_before_work_and_steps_back_past_the_bound():
    meter = WorkMeter(bound=10)
    meter.charge(6)
    with meter.during("model"):
        meter.charge(4)
    assert meter.spent == {"trials": 6, "model": 4} and not meter.allows(1) and meter.room() == 0
    with pytest.raises(WorkExhausted, match=r"--max-generations 10 \(10 spent\)"):
        meter.charge(1)
    assert meter.total == 10 and meter.ledger.spent() == 10
    meter.cached(3)
    assert meter.total == 10 and meter.ledger.spent() == 10  # cached items cost nothing


def test_an_out_of_memory_retry_is_charged_and_the_reference_key_stays_stable(profile, tmp_path, monkeypatch):
    """4 items in batches of 2; the second batch of the reference runs out of memory once: the first batch is
    generated again (charged), batches halve, and the cache is found again under the asked batch size."""
    calibration = CalibrationSet.from_profile(profile, 4)
    real = DiffusionEvaluator._generate_batch
    calls = {"n": 0}

    def flaky(self, index, sampler, plan, stats, observer=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("simulated")
        return real(self, index, sampler, plan, stats, observer)

    monkeypatch.setattr(DiffusionEvaluator, "_generate_batch", flaky)
    first = DiffusionEvaluator(profile, profile.load_pipeline(), calibration, batch_size=2, cache_dir=tmp_path)
    assert first.batch_size == 1 and first.meter.spent == {"reference": 4 + 2}
    monkeypatch.setattr(DiffusionEvaluator, "_generate_batch", real)
    again = DiffusionEvaluator(profile, profile.load_pipeline(), calibration, batch_size=2, cache_dir=tmp_path)
    assert again.meter.total == 0 and again.meter.spent == {"cached": 4}
    assert torch.equal(again.reference, first.reference)


@pytest.mark.slow
def test_a_cached_reference_is_booked_as_cached_and_costs_nothing(profile, tmp_path):
    space = load_space("explicit", profile.steps, profile.num_blocks)
    from autodelta.evaluation.diffusion import EvaluatorFactory

    factory = EvaluatorFactory("dit-test", calib=2, cache_dir=str(tmp_path / "cache"), record=space.range_set(28))
    factory()  # fills the cache
    settings = SearchSettings(budget=parse_budget("1.6x"), space=space, trials=1, storage=f"sqlite:///{tmp_path / 's.db'}",
                              model="dit-test")
    outcome = run_search(factory(), settings, progress=False)
    assert outcome.generations["reference"] == 0 and cached_items(outcome.study) == 2 and outcome.cached == 2


def test_a_bound_too_small_for_the_default_search_screens_candidates_and_runs_the_best(tmp_path):
    """ModelWorld (4 items, no probes): the default would need 20 trials of 4; a bound of 60 cannot hold them, so
    each trial is the best of 4 screened candidates, and screens and trials together stay within the bound."""
    from tests.factories import ModelWorld

    world = ModelWorld(seed=1)
    settings = SearchSettings(budget=parse_budget("2x"), space=world.space, trials=20, model="world",
                              storage=f"sqlite:///{tmp_path / 's.db'}", max_generations=60)
    outcome = run_search(world.evaluator(), settings, progress=False)
    ledger = generations_by_phase(outcome.study)
    assert ledger["screening"] > 0 and sum(ledger.values()) <= 60 and outcome.records
    screened = [r for r in outcome.records if r.screen is not None]  # the last ones find no room left to screen
    assert len(screened) >= 2 and ledger["screening"] >= 4 * len(screened)
