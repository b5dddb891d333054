from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from autodelta.cli.outputs import write_outputs
from autodelta.errors import AutodeltaError, BudgetError
from autodelta.evaluation.synthetic import SyntheticEvaluator
from autodelta.plan.cost import CostModel, parse_budget
from autodelta.plan.schedule import load_schedule
from autodelta.search.results import summarize
from autodelta.search.run import run_search
from autodelta.search.settings import SearchSettings
from autodelta.search.spaces import load_space

ROOT = Path(__file__).resolve().parent.parent


class _Profile:
    name, pretrained, num_blocks, scheduler, steps, guidance_scale = "synthetic", None, 28, "DDIMScheduler", 20, 1.0
    pretrained_id, schedule_source = None, None


def _settings(tmp_path, space="delta-dit", budget="1.6x", trials=30, **kw):
    return SearchSettings(budget=parse_budget(budget), space=load_space(space, kw.pop("steps", 20), kw.pop("blocks", 28)),
                          trials=trials, storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="t",
                          model="synthetic", **kw)


def test_search_finds_the_known_optimum_of_a_synthetic_landscape(tmp_path):
    steps, blocks = 8, 6
    evaluator = SyntheticEvaluator(CostModel.uniform(blocks), steps)
    space = load_space("paper", steps, blocks)
    budget = parse_budget("1.5x")
    best = -1e9
    for n, n_c, b in itertools.product(range(1, 5), range(1, blocks + 1), range(0, steps + 1)):
        values = {"N": n, "N_c": n_c, "b": b, "s_early": blocks - n_c, "s_late": 0}
        plan = space.plan(values, steps, blocks)
        ev = evaluator.evaluate(plan)
        if budget.allows(ev.speedup):
            best = max(best, ev.metrics["psnr"])
    settings = SearchSettings(budget=budget, space=space, trials=80, storage=None, study_name="opt", model="s",
                              seed_known=False, seed=1)
    outcome = run_search(SyntheticEvaluator(CostModel.uniform(blocks), steps), settings, progress=False)
    assert outcome.best.quality == pytest.approx(best)
    assert all(r.label is None for r in outcome.records)  # found by itself, nothing enqueued


@pytest.mark.parametrize("budget", ["1.3x", "1.6x", "50%"])
def test_outputs_meet_the_budget_and_pareto_is_exactly_the_non_dominated_set(tmp_path, budget):
    evaluator = SyntheticEvaluator(CostModel.seeded(seed=2), 20)
    settings = _settings(tmp_path, space="free-steps", budget=budget, trials=25)
    outcome = run_search(evaluator, settings, progress=False)
    results = summarize(outcome, settings, evaluator, None)
    write_outputs(outcome, results, settings, evaluator, _Profile(), tmp_path)
    schedule = load_schedule(tmp_path / "schedule.yaml")
    assert evaluator.cost.speedup(schedule.plan) >= parse_budget(budget).speedup
    assert schedule.cost["speedup"] >= round(parse_budget(budget).speedup, 4) - 1e-4
    paper = results.budgets[0].paper  # measured after the search: the better of the two is written
    feasible = [r for r in outcome.records if r.feasible] + ([paper] if paper is not None and paper.feasible else [])
    assert schedule.quality["value"] == max(r.quality for r in feasible)
    pareto = yaml.safe_load((tmp_path / "pareto.yaml").read_text())["schedules"]
    study = optuna.load_study(study_name="t", storage=settings.storage)
    pts = {}
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            pts.setdefault(str(t.user_attrs["plan"]), (t.values[0], t.values[1]))
    expected = {k for k, (q, m) in pts.items()
                if not any(q2 >= q and m2 <= m and (q2 > q or m2 < m) for q2, m2 in pts.values())}
    assert {str(s["plan"]) for s in pareto} == expected
    for name in ("pareto.png", "report.md"):
        assert (tmp_path / name).stat().st_size > 100


def test_known_schedules_are_enqueued_first_so_the_search_never_loses_to_them(tmp_path):
    evaluator = SyntheticEvaluator(CostModel.uniform(28), 20)
    outcome = run_search(evaluator, _settings(tmp_path, trials=12), progress=False)
    labels = [r.label for r in sorted(outcome.records, key=lambda r: r.number)[:3]]
    assert labels == ["paper rule", "whole-stack reuse", "middle-block cache"]
    seeded_best = max(r.quality for r in outcome.records if r.label and r.feasible)
    assert outcome.best.quality >= seeded_best


def test_duplicate_plans_are_answered_from_the_study(tmp_path):
    evaluator = SyntheticEvaluator(CostModel.uniform(28), 20)
    outcome = run_search(evaluator, _settings(tmp_path, space="paper", trials=40), progress=False)
    distinct = len({r.plan for r in outcome.records})
    assert evaluator.evaluations == distinct < len(outcome.records)
    assert outcome.duplicates == len(outcome.records) - distinct


def test_rerun_resumes_and_a_study_for_other_settings_is_refused(tmp_path):
    run_search(SyntheticEvaluator(CostModel.uniform(28), 20), _settings(tmp_path, trials=6), progress=False)
    evaluator = SyntheticEvaluator(CostModel.uniform(28), 20)
    outcome = run_search(evaluator, _settings(tmp_path, trials=10), progress=False)
    assert len(outcome.records) == 10 and evaluator.evaluations <= 4
    with pytest.raises(AutodeltaError, match="exists with other settings: budget=1.6 .asked 2.0."):
        run_search(evaluator, _settings(tmp_path, budget="2x", trials=10), progress=False)
    run_search(evaluator, _settings(tmp_path, budget="2x", trials=11, resume_any=True), progress=False)


def test_unreachable_budget_names_the_best_reachable_speedup(tmp_path):
    with pytest.raises(BudgetError, match=r"out of reach in space paper: the best reachable speed-up is \d+\.\d+x"):
        run_search(SyntheticEvaluator(CostModel.uniform(28), 20), _settings(tmp_path, space="paper", budget="30x"),
                   progress=False)


def test_bad_storage_url_is_one_clear_error(tmp_path):
    settings = _settings(tmp_path)
    settings.storage = "postgresql://nobody@127.0.0.1:1/none"
    with pytest.raises(AutodeltaError, match="storage 'postgresql://nobody@127.0.0.1:1/none' cannot be opened"):
        run_search(SyntheticEvaluator(CostModel.uniform(28), 20), settings, progress=False)


def _worker(storage: str, trials: int, sleep: float, space: str = "delta-dit") -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "tests.search_worker", storage, str(trials), str(sleep), "1", space],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _completed(storage: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="worker-test", storage=storage)
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


@pytest.mark.slow
@pytest.mark.parametrize("space", ["delta-dit", "explicit"])
def test_sigkill_mid_run_then_resume_keeps_every_completed_trial(tmp_path, space):
    storage = f"sqlite:///{tmp_path / 'kill.db'}"
    proc = _worker(storage, 200, 0.2, space)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.5)
        if (tmp_path / "kill.db").exists():
            try:
                if len(_completed(storage)) >= 4:
                    break
            except Exception:  # the study may not exist yet
                pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t.values for t in _completed(storage)}
    assert len(before) >= 4
    resumed = _worker(storage, len(before) + 5, 0.0, space)
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read().decode()[-2000:]
    after = {t.number: t.values for t in _completed(storage)}
    assert len(after) == len(before) + 5
    assert all(after[n] == v for n, v in before.items())


def _check_two_workers(storage: str, space: str = "delta-dit") -> None:
    procs = [_worker(storage, 16, 0.05, space) for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=180) == 0, proc.stderr.read().decode()[-2000:]
    study = optuna.load_study(study_name="worker-test", storage=storage)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(len(numbers)))  # nothing lost, nothing numbered twice
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert 16 <= len(done) <= 17  # each worker stops at 16 completed; a race can add one
    assert all("plan" in t.user_attrs and t.values is not None for t in done)


def test_two_worker_processes_share_one_sqlite_study(tmp_path):
    _check_two_workers(f"sqlite:///{tmp_path / 'two.db'}")


def test_two_workers_of_the_structure_aware_sampler_lose_no_trial(tmp_path):
    _check_two_workers(f"sqlite:///{tmp_path / 'two-explicit.db'}", "explicit")


def test_two_worker_processes_share_one_postgresql_study():
    url = os.environ.get("AUTODELTA_TEST_POSTGRES")
    if not url:
        pytest.skip("AUTODELTA_TEST_POSTGRES is not set: .ci/run starts a PostgreSQL server and sets it")
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("DROP TABLE IF EXISTS alembic_version CASCADE"))
            for table in sqlalchemy.inspect(engine).get_table_names():
                conn.execute(sqlalchemy.text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))
            conn.commit()
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL at {url} cannot be used: {exc}")
    _check_two_workers(url)
