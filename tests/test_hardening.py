"""Hostile inputs and hard stops: one test per probe of the hardening issue (numbered as there)."""

from __future__ import annotations

import errno
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml

import autodelta
from autodelta.errors import AutodeltaError
from autodelta.evaluation.calibration import CalibrationSet
from autodelta.evaluation.diffusion import DiffusionEvaluator, Evaluation
from autodelta.evaluation.synthetic import SyntheticEvaluator
from autodelta.files import atomic_write, read_yaml
from autodelta.plan.cost import CostModel
from autodelta.plan.schedule import DeltaDiTParams
from autodelta.search.records import records
from autodelta.search.run import run_search
from tests.conftest import make_schedule, paper_schedule
from tests.helpers import assert_one_line_error, run_cli
from tests.search_worker import settings as worker_settings

ROOT = Path(__file__).resolve().parent.parent
HEAD = "family: delta-dit\nparams:\n  N: {int: [1, 4]}\n  N_c: {int: [1, N_b]}\n  b: {int: [0, T]}\n"


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# 1. a space file cannot hang the search -----------------------------------------------------------
@pytest.mark.parametrize("high", ["9**9**9", "2**100000000", "max(1,2)*10**1000000"])
def test_1_unbounded_space_expressions_are_refused_at_once(capsys, tmp_path, high):
    space = _write(tmp_path, "s.yaml", HEAD + f"  s_early: {{int: [0, '{high}']}}\n  s_late: {{fixed: 0}}\n")
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--space", space, "--trials", "2",
                           "--calib", "1", "--out", str(tmp_path / "o"))
    assert time.perf_counter() - start < 10
    assert_one_line_error(code, err, "line 6", "beyond")


# 2. no password and no absolute local path in what people share ---------------------------------
def test_2_storage_password_is_masked_in_output_and_files(capsys, tmp_path):
    url = os.environ.get("AUTODELTA_TEST_POSTGRES")
    if not url:
        pytest.skip("AUTODELTA_TEST_POSTGRES is not set: .ci/run starts a PostgreSQL server and sets it")
    secret = "S3cr3tPassw0rd"
    with_password = url.replace("postgres@", f"postgres:{secret}@", 1)  # the CI server trusts any password
    assert secret in with_password
    out = tmp_path / "o"
    code, stdout, err = run_cli(capsys, "search", "--model", "dit-test", "--trials", "3", "--calib", "1",
                                "--storage", with_password, "--study", f"leak-{os.getpid()}", "--out", str(out))
    assert code == 0, err
    assert secret not in stdout + err
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path.name


@pytest.mark.slow
def test_2_default_study_path_is_not_written_into_the_schedule(capsys, tmp_path):
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--trials", "2", "--calib", "1", "--out", str(out))
    assert code == 0, err
    text = (out / "schedule.yaml").read_text()
    assert str(tmp_path) not in text and "sqlite:///study.db" in text
    for name in ("pareto.yaml", "report.md"):
        assert str(tmp_path) not in (out / name).read_text()


# 3 and 7. Ctrl-C and SIGKILL with two workers -----------------------------------------------------
def _start(storage: str, trials: int, sleep: float, jobs: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "tests.search_worker", storage, str(trials), str(sleep), str(jobs)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="worker-test", storage=storage).trials
    except Exception:  # not created yet
        return []


def _wait_for_completed(storage: str, count: int, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if sum(t.state == optuna.trial.TrialState.COMPLETE for t in _trials(storage)) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} trials completed in {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(5))
def test_3_ctrl_c_with_two_workers_stops_cleanly(tmp_path, attempt):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = _start(storage, 400, 0.02 * (attempt + 1), 2)
    _wait_for_completed(storage, 3 + attempt)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert b"Traceback" not in err
    states = [t.state for t in _trials(storage)]
    assert optuna.trial.TrialState.RUNNING not in states  # every trial in progress was finished
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 3 + attempt


@pytest.mark.slow
def test_7_workers_die_with_a_killed_parent(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = _start(storage, 400, 0.05, 2)
    _wait_for_completed(storage, 4)
    proc.kill()  # SIGKILL of the main process only
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)  # anything left in its process group?
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("a worker outlived its killed parent")
    count = len(_trials(storage))
    time.sleep(1.0)
    assert len(_trials(storage)) == count  # nobody searches on


# 4. YAML bombs and tags ----------------------------------------------------------------------------
def test_4_yaml_alias_bomb_is_refused_in_a_second(capsys, tmp_path):
    doc = paper_schedule().to_dict()
    text = yaml.safe_dump(doc).replace("params:", "params:\n  a: &a [x, x, x, x, x, x, x, x, x]\n"
                                       "  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                                       "  c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n  rest:", 1)
    path = _write(tmp_path, "bomb.yaml", text)
    start = time.perf_counter()
    code, out, err = run_cli(capsys, "show", path)
    assert time.perf_counter() - start < 2 and len(out) < 1000
    assert_one_line_error(code, err, "anchors and aliases are not allowed")
    assert len(err) < 500


def test_4_a_huge_bad_plan_entry_gives_a_short_message(capsys, tmp_path):
    doc = paper_schedule().to_dict()
    doc["plan"][3] = {"delta": ["x" * 100_000]}
    code, _, err = run_cli(capsys, "show", _write(tmp_path, "big.yaml", yaml.safe_dump(doc)))
    assert_one_line_error(code, err, "plan[3]")
    assert len(err) < 500


# 5. NaN never wins -----------------------------------------------------------------------------------
def test_5_nan_reference_cache_is_regenerated(profile, pipe, tmp_path):
    calib = CalibrationSet.from_profile(profile, 2)
    first = DiffusionEvaluator(profile, pipe, calib, cache_dir=tmp_path)
    path = first.reference_path()
    doc = torch.load(path, weights_only=True)
    torch.save({"key": doc["key"], "images": torch.full_like(doc["images"], float("nan"))}, path)
    again = DiffusionEvaluator(profile, pipe, calib, cache_dir=tmp_path)
    assert torch.isfinite(again.reference).all() and torch.equal(again.reference, first.reference)
    torch.save({"key": doc["key"], "images": doc["images"][:, :, :3]}, path)  # right key, wrong shape
    assert torch.equal(DiffusionEvaluator(profile, pipe, calib, cache_dir=tmp_path).reference, first.reference)


class _NaNForSomePlans(SyntheticEvaluator):
    def evaluate(self, plan):
        result = super().evaluate(plan)
        if plan[1] is not None and plan[1].start % 4 == 1:  # about a quarter of the plans "break"
            return Evaluation({"psnr": math.nan}, result.macs, result.speedup)
        return result


def test_5_nan_quality_is_a_failed_trial_never_a_schedule(tmp_path):
    settings = worker_settings(f"sqlite:///{tmp_path / 's.db'}", 25)
    settings.seed = 0
    outcome = run_search(_NaNForSomePlans(CostModel.uniform(28), 20), settings, progress=False)
    failed = outcome.study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert failed and all(t.user_attrs.get("failed") for t in failed)
    assert all(math.isfinite(r.quality) for r in records(outcome.study, settings.budget, "psnr"))
    assert outcome.best is not None and math.isfinite(outcome.best.quality)


def test_5_a_model_that_only_makes_nan_stops_with_one_clear_error(tmp_path):
    class AlwaysNaN(SyntheticEvaluator):
        def evaluate(self, plan):
            result = super().evaluate(plan)
            return Evaluation({"psnr": math.nan}, result.macs, result.speedup)

    with pytest.raises(AutodeltaError, match="trials failed"):
        run_search(AlwaysNaN(CostModel.uniform(28), 20), worker_settings(f"sqlite:///{tmp_path / 's.db'}", 5),
                   progress=False)


# 6. a storage server that never answers ---------------------------------------------------------------
@pytest.mark.slow
def test_6_silent_storage_server_fails_fast_without_the_password(capsys, tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # accept and never answer
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = server.getsockname()[1]
        start = time.perf_counter()
        code, out, err = run_cli(capsys, "search", "--model", "dit-test", "--trials", "2", "--calib", "1",
                                 "--storage", f"postgresql+psycopg2://u:HUSH@127.0.0.1:{port}/db",
                                 "--out", str(tmp_path / "o"))
        assert time.perf_counter() - start < 40
        assert_one_line_error(code, err, "cannot be opened")
        assert "HUSH" not in out + err
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


# 8. user mistakes are one line, never a traceback ------------------------------------------------------
@pytest.mark.parametrize("expr", ["T / 0", "T % 0", "min()", "ceil(1, 2)", "10.0**400", "(-8)**0.5", ".inf", ".nan"])
def test_8_bad_space_expressions(capsys, tmp_path, expr):
    space = _write(tmp_path, "s.yaml", HEAD + f"  s_early: {{int: [0, '{expr}']}}\n  s_late: {{fixed: 0}}\n")
    code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--space", space, "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "search space")


@pytest.mark.parametrize("spec, needle", [("{fixed: 0}", "no valid plan"), ("{float: [0, 4], log: true}", "log scale")])
def test_8_bad_space_parameters(capsys, tmp_path, spec, needle):
    text = "family: free-steps\nparams:\n  full_steps: {int: [1, T]}\n  warp: " + (
        spec if "float" in spec else "{float: [0.5, 2]}") + "\n  b: {int: [0, T]}\n  n_early: {int: [1, N_b]}\n" \
        "  s_early: {int: [0, N_b - n_early]}\n  n_late: {int: [1, N_b]}\n  s_late: {int: [0, N_b - n_late]}\n"
    if "fixed" in spec:
        text = HEAD.replace("N: {int: [1, 4]}", "N: " + spec) + "  s_early: {fixed: 0}\n  s_late: {fixed: 0}\n"
    code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--space", _write(tmp_path, "s.yaml", text),
                           "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, needle)


def test_8_bad_schedules_and_labels(capsys, tmp_path):
    doc = paper_schedule().to_dict()
    cases = [
        (["show", _write(tmp_path, "a.yaml", yaml.safe_dump({**doc, "model": {**doc["model"], "num_blocks": 2**40}}))],
         "num_blocks"),
        (["apply", _write(tmp_path, "b.yaml", yaml.safe_dump({**doc, "sampler": {"scheduler": "DiTPipeline",
                                                                                  "steps": 20}})),
          "--out", str(tmp_path / "o")], "not a diffusers scheduler"),
    ]
    good = _write(tmp_path, "good.yaml", yaml.safe_dump(doc))
    for labels in ("5000", "-1", ","):
        cases.append((["apply", good, "--class-labels", labels, "--out", str(tmp_path / "o")], "class labels"))
    for argv, needle in cases:
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, needle)


def test_8_disk_full_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "schedule.yaml"
    target.write_text("old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(AutodeltaError, match="No space left on device"):
        atomic_write(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["schedule.yaml"]


# 9. an aborted generation on a bare transformer does not leak into the next ------------------------------
def test_9_bare_transformer_recovers_from_an_aborted_run(profile):
    from diffusers import DPMSolverMultistepScheduler

    transformer = profile.build_transformer()
    schedule = make_schedule(list(DeltaDiTParams(2, 21, 12, 7, 0).plan(20, 28)))
    scheduler = DPMSolverMultistepScheduler.from_config(profile.scheduler_config)

    def run(steps: int) -> torch.Tensor:
        scheduler.set_timesteps(20)
        x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        for t in scheduler.timesteps[:steps]:
            out = transformer(x, timestep=t.expand(1), class_labels=torch.tensor([3])).sample[:, :3]
            x = scheduler.step(out, t, x).prev_sample
        return x

    with torch.no_grad():
        with autodelta.apply(transformer, schedule):
            clean = run(20)
        with autodelta.apply(transformer, schedule) as handle:
            run(7)  # aborted part-way
            after_abort = run(20)
    assert torch.equal(after_abort, clean)
    assert handle.stats.generations == 2


# 10. nonsense is refused ---------------------------------------------------------------------------------
@pytest.mark.parametrize("guidance", [float("nan"), float("inf"), -1.0])
def test_10_nonsense_guidance_is_refused(guidance):
    with pytest.raises(AutodeltaError, match="guidance_scale"):
        autodelta.Schedule(model="m", num_blocks=28, scheduler="DDIMScheduler", steps=2, plan=(None, None),
                           guidance_scale=guidance)


@pytest.mark.parametrize("rng", ["[-5, 4]", "[1, 1000000000000]"])
def test_10_absurd_parameter_ranges_are_refused(capsys, tmp_path, rng):
    space = _write(tmp_path, "s.yaml", HEAD.replace("N: {int: [1, 4]}", f"N: {{int: {rng}}}") +
                   "  s_early: {fixed: 0}\n  s_late: {fixed: 0}\n")
    code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--space", space, "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "line 3")


def test_10_a_giant_block_count_is_refused_at_once(capsys, tmp_path):
    doc = paper_schedule().to_dict()
    doc["model"]["num_blocks"] = 30_000_000
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "show", _write(tmp_path, "g.yaml", yaml.safe_dump(doc)))
    assert time.perf_counter() - start < 2
    assert_one_line_error(code, err, "num_blocks")


# 11. messages say what is really wrong ------------------------------------------------------------------
def test_11_messages_name_the_real_problem(capsys, tmp_path):
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--sampler", "bogus", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "unknown sampler 'bogus'")
    assert time.perf_counter() - start < 5
    tagged = _write(tmp_path, "t.yaml", "format: !!python/object/apply:os.system ['true']\n")
    code, _, err = run_cli(capsys, "show", tagged)
    assert_one_line_error(code, err, "tags are not allowed")
    code, _, err = run_cli(capsys, "show", _write(tmp_path, "p.yaml", yaml.safe_dump(paper_schedule().to_dict())),
                           "--png", "/proc/x.png")
    assert_one_line_error(code, err, "not writable")
    assert "--out" not in err
    code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--calib", "999", "--out", str(tmp_path / "c"))
    assert_one_line_error(code, err, "calibration size 999")
    assert not (tmp_path / "c" / "study.db").exists()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")  # study.ask() plays the killed worker
def test_11_stale_running_trials_are_failed_on_resume(tmp_path, monkeypatch):
    import autodelta.search.storage as storage_module

    monkeypatch.setattr(storage_module, "HEARTBEAT_S", 1)
    monkeypatch.setattr(storage_module, "GRACE_S", 2)
    url = f"sqlite:///{tmp_path / 's.db'}"
    settings = worker_settings(url, 3)
    run_search(SyntheticEvaluator(CostModel.uniform(28), 20), settings, progress=False)
    storage = storage_module.make_storage(url)
    study = optuna.load_study(study_name="worker-test", storage=storage)
    orphan = study.ask()  # a trial whose worker was killed: RUNNING, heartbeat long gone
    storage.record_heartbeat(orphan._trial_id)
    time.sleep(3)
    settings.trials = 5
    run_search(SyntheticEvaluator(CostModel.uniform(28), 20), settings, progress=False)
    state = optuna.load_study(study_name="worker-test", storage=url).trials[orphan.number].state
    assert state == optuna.trial.TrialState.FAIL


@pytest.mark.slow
def test_12_the_cli_and_the_schedule_readers_do_not_import_torch():
    code = ("import sys, autodelta.cli.app, autodelta.cli.options, autodelta.cli.rule, autodelta.cli.show, "
            "autodelta.plan.schedule, autodelta.plan.cost, autodelta.models.loading, autodelta.models.profile, "
            "autodelta.search.settings, autodelta.search.spaces, autodelta.cli.report; "
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, "
            "[m for m in sys.modules if m in ('torch', 'diffusers')]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_yaml_reader_refuses_oversized_files(tmp_path, monkeypatch):
    import autodelta.files as files

    monkeypatch.setattr(files, "MAX_YAML_BYTES", 100)
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * 200)
    with pytest.raises(AutodeltaError, match="reads YAML files of at most"):
        read_yaml(path, "schedule")
