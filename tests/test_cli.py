from __future__ import annotations

import pytest
import yaml

from autodelta.plan.cost import paper_rule, parse_budget
from autodelta.plan.schedule import CachedRange, load_schedule
from tests.conftest import make_schedule, paper_schedule
from tests.helpers import assert_one_line_error, run_cli


@pytest.fixture()
def paper_file(tmp_path, profile):
    """The paper's 1.6x schedule for dit-test, N and N_c by the paper's rule on its profiled cost."""
    cost = profile.cost_model()
    params = paper_rule(cost, 20, parse_budget("1.6x"))
    plan = params.plan(20, 28)
    path = tmp_path / "paper.yaml"
    make_schedule(list(plan), params=params.as_dict(), cost=cost.summary(plan)).save(path)
    return path


def test_apply_compare_end_to_end(capsys, tmp_path, paper_file):
    code, out, err = run_cli(capsys, "apply", str(paper_file), "--compare", "--out", str(tmp_path / "o"))
    assert code == 0, err
    speed = float(out.split("MACs speed-up:")[1].split("x")[0])
    assert speed >= 1.6
    assert "PSNR to full:" in out and "wall speed-up:" in out
    assert (tmp_path / "o" / "compare.png").stat().st_size > 1000


def test_show_prints_the_map_and_writes_png(capsys, tmp_path, paper_file):
    code, out, _ = run_cli(capsys, "show", str(paper_file), "--png", str(tmp_path / "p.png"))
    assert code == 0
    rows = [line for line in out.splitlines() if line[:4].strip().isdigit()]
    assert len(rows) == 20
    n_c = load_schedule(paper_file).params["N_c"]
    assert rows[1].split()[1] == "█" * (28 - n_c) + "·" * n_c  # outline stage: rear blocks cached
    assert rows[13].split()[1] == "·" * n_c + "█" * (28 - n_c)  # detail stage: front blocks cached
    assert (tmp_path / "p.png").exists()


def test_rule_writes_a_loadable_schedule_that_meets_the_budget(capsys, tmp_path):
    out = tmp_path / "rule.yaml"
    code, stdout, err = run_cli(capsys, "rule", "--model", "dit-test", "--budget", "62.5%", "--out", str(out))
    assert code == 0, err
    schedule = load_schedule(out)
    assert schedule.cost["speedup"] >= 1.6 and schedule.params["N"] == 2


def _bad(tmp_path, doc_or_text):
    path = tmp_path / f"bad{len(list(tmp_path.glob('bad*.yaml')))}.yaml"
    path.write_text(doc_or_text if isinstance(doc_or_text, str) else yaml.safe_dump(doc_or_text))
    return str(path)


def test_bad_inputs_give_one_line_and_exit_2(capsys, tmp_path, paper_file):
    doc = paper_schedule().to_dict()
    cases = [
        (["apply", str(tmp_path / "missing.yaml")], ["does not exist"]),
        (["apply", _bad(tmp_path, "a: [1,\n")], ["not valid YAML"]),
        (["show", _bad(tmp_path, {**doc, "format": "other@1"})], ["format is 'other@1'"]),
        (["show", _bad(tmp_path, {**doc, "plan": [{"delta": [0, 3]}] + doc["plan"][1:]})], ["step 0 must be full"]),
        (["show", _bad(tmp_path, {**doc, "plan": ["full", {"delta": [27, 3]}] + doc["plan"][2:]})], ["outside [0, 28)"]),
        (["show", _bad(tmp_path, {**doc, "plan": doc["plan"][:5]})], ["plan has 5 steps but sampler.steps is 20"]),
        (["rule", "--model", "nosuch"], ["unknown model 'nosuch'", "dit-test", "dit-xl"]),
        (["rule", "--model", "dit-test", "--budget", "abc"], ["'abc' is not understood"]),
        (["rule", "--model", "dit-test", "--budget", "0.9x"], ["slow-down"]),
        (["rule", "--model", "dit-test", "--budget", "150%"], ["not a share"]),
        (["apply", str(paper_file), "--out", str(paper_file / "sub")], ["not writable"]),
        (["apply", str(paper_file), "--dtype", "int8"], ["dtype 'int8'"]),
    ]
    for argv, needles in cases:
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, *needles)


def test_block_count_mismatch_and_missing_weights(capsys, tmp_path):
    small = tmp_path / "small.yaml"
    make_schedule([None, CachedRange(0, 4)], num_blocks=12).save(small)
    code, _, err = run_cli(capsys, "apply", str(small), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "N_b=28", "N_b=12")
    xl = tmp_path / "xl.yaml"
    make_schedule([None, CachedRange(0, 4)], model="dit-xl").save(xl)
    code, _, err = run_cli(capsys, "apply", str(xl), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "facebook/DiT-XL-2-256", "--random-weights")


def test_output_file_is_never_half_written(capsys, tmp_path):
    out = tmp_path / "rule.yaml"
    out.write_text("previous content")
    code, _, _ = run_cli(capsys, "rule", "--model", "dit-test", "--budget", "abc", "--out", str(out))
    assert code == 2 and out.read_text() == "previous content"


def test_search_then_apply_end_to_end_and_resume(capsys, tmp_path):
    out = tmp_path / "s"
    argv = ["search", "--model", "dit-test", "--trials", "6", "--calib", "2", "--out", str(out), "--space", "paper"]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    for name in ("schedule.yaml", "pareto.yaml", "pareto.png", "report.md", "study.db"):
        assert (out / name).exists(), name
    schedule = load_schedule(out / "schedule.yaml")
    assert schedule.cost["speedup"] >= 1.6 and schedule.quality["heldout"] is not None
    code, stdout, err = run_cli(capsys, *argv[:4], "8", *argv[5:])  # same command, more trials: resumes
    assert code == 0, err
    assert "8 completed trials" in (out / "report.md").read_text()
    code, stdout, err = run_cli(capsys, "apply", str(out / "schedule.yaml"), "--out", str(tmp_path / "a"))
    assert code == 0, err


@pytest.mark.slow
def test_one_search_writes_a_schedule_per_budget_and_reports_its_generations(capsys, tmp_path):
    out = tmp_path / "s"
    code, stdout, err = run_cli(capsys, "search", "--model", "dit-test", "--budgets", "2x,1.3x", "--trials", "4",
                                "--calib", "2", "--out", str(out))
    assert code == 0, err
    for budget in ("1.3x", "2x"):
        schedule = load_schedule(out / f"schedule-{budget}.yaml")
        assert schedule.cost["speedup"] >= parse_budget(budget).speedup - 1e-4
    assert not (out / "schedule.yaml").exists()
    report = (out / "report.md").read_text()
    assert "## 1.3x" in report and "## 2x" in report and "| model | 74 |" in report  # 37 probes × 2 items
    assert "item-generations this run: " in stdout and "sampler model" in stdout


def test_search_bad_inputs_leave_outputs_untouched(capsys, tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "schedule.yaml").write_text("kept")
    space = tmp_path / "space.yaml"
    space.write_text("family: delta-dit\nparams:\n  N: {int: [1, 4]}\n  N_c: {int: [1, N_b]}\n  b: {int: [0, T]}\n"
                     "  s_early: {int: [0, N_b - N_c]}\n  s_late: {int: [0, N_b - N_c]}\n  warp: {float: [1, 2]}\n")
    base = ["search", "--model", "dit-test", "--trials", "2", "--out", str(out)]
    cases = [
        (["--budget", "40x", "--space", "paper"], ["out of reach", "best reachable speed-up is"]),
        (["--space", str(space)], ["line 8", "unknown parameter 'warp'"]),
        (["--storage", "postgresql://x@127.0.0.1:1/none"], ["cannot be opened"]),
        (["--metric", "lpips"], ["unknown metric 'lpips'"]),
        (["--model", "nosuch"], ["unknown model 'nosuch'"]),
        (["--budgets", "1.6x,abc"], ["budget 'abc' is not understood"]),
        (["--max-generations", "10"], ["--max-generations 10 is below", "item-generations"]),
        (["--sampler", "model", "--space", "paper"], ["sampler 'model' searches per-step spaces"]),
    ]
    for extra, needles in cases:
        code, _, err = run_cli(capsys, *base, *extra)
        assert_one_line_error(code, err, *needles)
    code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--out", str(out / "schedule.yaml" / "x"))
    assert_one_line_error(code, err, "not writable")
    # a study name that exists for another budget is refused unless --resume-any
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--out", str(tmp_path / "ok"), "--study", "mine",
                           "--storage", storage, "--calib", "1", "--space", "paper", "--trials", "3")
    assert code == 0, err
    code, _, err = run_cli(capsys, *base, "--study", "mine", "--storage", storage, "--budget", "2x")
    assert_one_line_error(code, err, "exists with other settings", "--resume-any")
    assert (out / "schedule.yaml").read_text() == "kept"


def test_evaluate_prints_the_table_and_writes_the_grid(capsys, tmp_path, paper_file):
    code, out, err = run_cli(capsys, "evaluate", str(paper_file), "--calib", "3", "--out", str(tmp_path / "e"))
    assert code == 0, err
    assert "psnr" in out and "full compute" in out
    assert (tmp_path / "e" / "evaluate.png").exists()
    code, _, err = run_cli(capsys, "evaluate", str(paper_file), "--calib", "0")
    assert_one_line_error(code, err, "'--calib'", "greater than or equal to 1", "`autodelta evaluate --help`")
    code, _, err = run_cli(capsys, "evaluate", str(paper_file), "--metrics", "psnr,nope")
    assert_one_line_error(code, err, "unknown metric 'nope'")


@pytest.mark.parametrize("argv, needles", [
    (["apply", "schedule.yaml", "--bogus"], ["No such option: --bogus", "--help"]),  # unknown option
    (["search", "--trials", "abc"], ["Invalid value for '--trials'", "--help"]),  # bad value
    (["apply"], ["Missing argument 'SCHEDULE.yaml'"]),  # missing argument
    (["search", "--budget"], ["requires an argument"]),  # option without its value
    (["frobnicate"], ["No such command 'frobnicate'"]),  # unknown command
])
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, needles):
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, *needles)


@pytest.mark.slow
def test_usage_errors_from_the_installed_script_have_no_traceback(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "autodelta.cli.app", "apply", "x.yaml", "--bogus"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "No such option" in proc.stderr
