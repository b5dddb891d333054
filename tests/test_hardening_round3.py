"""The third hardening round: one test per probe of the issue, each one line with exit 2 (130 for Ctrl-C), in seconds."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from autodelta.files import folder_lock
from autodelta.models.loading import load_profile
from tests.conftest import make_schedule, paper_schedule
from tests.factories import save_tiny_dit
from tests.helpers import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny DiT pipeline folder saved with save_pretrained, to break one config field at a time."""
    return save_tiny_dit(tmp_path_factory.mktemp("pipes") / "dit", num_layers=4, classes=1000)


def _broken(folder: Path, tmp_path: Path, file: str, key: str, value: str) -> Path:
    """A copy of ``folder`` whose ``file`` has ``key`` set to the raw JSON text ``value``."""
    copy = tmp_path / "broken"
    shutil.copytree(folder, copy)
    doc = json.loads((copy / file).read_text())
    doc[key] = "@@"
    (copy / file).write_text(json.dumps(doc).replace('"@@"', value))
    return copy


# 1. a discovered model is validated before it is built ---------------------------------------------
@pytest.mark.parametrize("file, key, value, needle", [
    ("transformer/config.json", "sample_size", "NaN", "sample_size is nan"),
    ("transformer/config.json", "sample_size", "1e400", "sample_size is inf"),
    ("transformer/config.json", "sample_size", '"abc"', "sample_size is 'abc'"),
    ("transformer/config.json", "num_embeds_ada_norm", "1000000000", "num_embeds_ada_norm"),
    ("transformer/config.json", "num_embeds_ada_norm", str(2**70), "num_embeds_ada_norm"),
    ("model_index.json", "transformer", '"DiTTransformer2DModel"', "component 'transformer'"),
    ("model_index.json", "vae", '["diffusers", 7]', "component 'vae'"),
    ("model_index.json", "_class_name", "3", "_class_name is 3"),
    ("vae/config.json", "block_out_channels", "64", "block_out_channels is 64"),
])
def test_1_a_broken_pipeline_folder_is_one_line(capsys, tmp_path, folder, file, key, value, needle):
    broken = _broken(folder, tmp_path, file, key, value)
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "search", "--model", str(broken), "--trials", "1", "--calib", "1",
                           "--out", str(tmp_path / "o"))
    assert time.perf_counter() - start < 30
    assert_one_line_error(code, err, needle, Path(file).name)


def test_1_a_transformer_too_big_for_memory_is_refused_before_allocating(capsys, tmp_path, folder, monkeypatch):
    import autodelta.models.pipelines

    monkeypatch.setattr(autodelta.models.pipelines, "available_memory", lambda: 2**10)  # 1 KiB free
    code, _, err = run_cli(capsys, "profile", "--model", str(folder))
    assert_one_line_error(code, err, "parameters", "more than the 0.0 GiB free here")


# 2. and 4. numbers from the command line are bounded where they are parsed ---------------------------
@pytest.mark.parametrize("argv, needle", [
    (["search", "--seed", "-1"], "'--seed'"),
    (["search", "--seed", str(2**70)], "'--seed'"),
    (["apply", "x.yaml", "--seed", "-5"], "'--seed'"),
    (["rule", "--steps", "0"], "'--steps'"),
    (["rule", "--steps", "100000000000000000000"], "'--steps'"),
    (["search", "--trials", "0"], "'--trials'"),
    (["search", "--jobs", "0"], "'--jobs'"),
    (["search", "--calib", "0"], "'--calib'"),
    (["search", "--max-generations", "0"], "'--max-generations'"),
    (["evaluate", "--baseline", "fora", "--resolution", "0"], "'--resolution'"),
])
def test_2_4_out_of_range_numbers_are_refused_where_parsed(capsys, argv, needle):
    start = time.perf_counter()
    code, _, err = run_cli(capsys, *argv)
    assert time.perf_counter() - start < 5
    assert_one_line_error(code, err, needle)


# 3. writes never replace what is not a regular file ---------------------------------------------------
def test_3_an_output_that_is_a_device_or_fifo_is_refused(capsys, tmp_path):
    code, _, err = run_cli(capsys, "rule", "--model", "dit-test", "--out", "/dev/null")
    assert_one_line_error(code, err, "/dev/null", "character device", "regular file")
    assert Path("/dev/null").is_char_device()
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    code, _, err = run_cli(capsys, "rule", "--model", "dit-test", "--out", str(fifo))
    assert_one_line_error(code, err, "a FIFO")
    assert fifo.is_fifo()


def test_3_a_symlink_to_a_regular_file_is_written_through(capsys, tmp_path):
    real = tmp_path / "runs" / "rule.yaml"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "rule.yaml"
    link.symlink_to(real)
    code, _, err = run_cli(capsys, "rule", "--model", "dit-test", "--out", str(link))
    assert code == 0, err
    assert link.is_symlink() and "plan:" in real.read_text()


# 5. a run-time baseline whose budget it cannot reach is refused fast ---------------------------------
def test_5_an_unreachable_baseline_budget_is_refused_after_one_generation(capsys, tmp_path):
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "evaluate", "--baseline", "pab", "--budget", "5x", "--calib", "2",
                           "--out", str(tmp_path / "e"))
    assert time.perf_counter() - start < 60
    assert_one_line_error(code, err, "baseline pab cannot reach budget 5x", "its maximum here is")


# 6. Ctrl-C in every command exits 130 with one line -------------------------------------------------
@pytest.mark.parametrize("how", ["interrupt", "exit"])
def test_6_ctrl_c_outside_the_search_exits_130(capsys, monkeypatch, how):
    import typer

    import autodelta.cli.rule

    def interrupted(*_args, **_kwargs):
        if how == "interrupt":
            raise KeyboardInterrupt
        raise typer.Exit(130)

    monkeypatch.setattr(autodelta.cli.rule, "run_rule", interrupted)
    code, _, err = run_cli(capsys, "rule", "--model", "dit-test")
    assert code == 130 and err.strip() == "autodelta: interrupted"


# 7. schedule files: duplicate keys, non-regular files, depth, size -----------------------------------
def test_7_a_duplicate_key_is_refused_naming_it(capsys, tmp_path):
    path = tmp_path / "s.yaml"
    paper_schedule().save(path)
    path.write_text(path.read_text() + "plan: [full]\n")
    code, _, err = run_cli(capsys, "show", str(path))
    assert_one_line_error(code, err, "key 'plan' appears twice", "keep one")


@pytest.mark.parametrize("command", ["show", "space"])
def test_7_devices_and_fifos_are_refused_without_reading(capsys, tmp_path, command):
    fifo = tmp_path / "f.yaml"
    os.mkfifo(fifo)
    for source, needle in (("/dev/zero", "character device"), (str(fifo), "a FIFO")):
        argv = ["show", source] if command == "show" else ["search", "--space", source, "--out", str(tmp_path / "o")]
        start = time.perf_counter()
        code, _, err = run_cli(capsys, *argv)
        assert time.perf_counter() - start < 5
        assert_one_line_error(code, err, needle, "not a regular file")


def test_7_space_field_types_nesting_and_a_huge_plan(capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("family: [delta-dit]\nparams: {}\n")
    code, _, err = run_cli(capsys, "search", "--space", str(space), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "family is ['delta-dit']", "one name")

    deep = tmp_path / "deep.yaml"
    for depth, needle in ((100, "nesting deeper than 32 levels"), (5000, "exceeded maximum nesting depth")):
        deep.write_text("a: " + "[" * depth + "]" * depth + "\n")
        code, _, err = run_cli(capsys, "show", str(deep))
        assert_one_line_error(code, err, str(deep), needle)

    huge = tmp_path / "huge.yaml"
    doc = make_schedule([None] * 20).to_dict()
    text = yaml.safe_dump(doc).replace("plan:\n", "plan:\n" + "- full\n" * 1_000_000, 1)
    huge.write_text(text)
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "show", str(huge))
    assert time.perf_counter() - start < 10
    assert_one_line_error(code, err, "more than 100000 entries")


# 8. concurrent outputs: a second run into the same folder is refused, naming the holder ----------------
def test_8_a_second_run_into_a_held_output_folder_is_refused(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with folder_lock(out, "search"):
        code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--trials", "1", "--calib", "1",
                               "--out", str(out))
    assert_one_line_error(code, err, "is in use by another autodelta run", f"pid {os.getpid()}", "autodelta search")
    assert not (out / "schedule.yaml").exists()
    released = threading.Event()
    with folder_lock(out, "search"):
        released.set()
    code, _, err = run_cli(capsys, "rule", "--model", "dit-test", "--out", str(out / "r.yaml"))
    assert code == 0, err  # released: the folder is free again


# 9. a schedule applied to another model -------------------------------------------------------------
def test_9_a_schedule_for_another_kind_of_sampler_is_refused_and_another_model_warned(capsys, tmp_path):
    lcm = tmp_path / "lcm.yaml"
    make_schedule([None, None, None, None], model="pixart-lcm", scheduler="LCMScheduler").save(lcm)
    code, _, err = run_cli(capsys, "apply", str(lcm), "--model", "tiny-dit", "--out", str(tmp_path / "a"))
    assert_one_line_error(code, err, "pixart-lcm", "LCMScheduler", "tiny-dit", "DPMSolverMultistepScheduler")
    other = tmp_path / "other.yaml"
    make_schedule([None] * 20, model="dit-test").save(other)
    code, out, err = run_cli(capsys, "apply", str(other), "--model", "tiny-dit", "--out", str(tmp_path / "a"))
    assert code == 0, err
    assert "warning: the schedule was made for dit-test" in out and "tiny-dit" in out


# 10. an unwritable cache is refused before the reference is computed --------------------------------
def test_10_an_unwritable_reference_cache_is_refused_at_once(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    start = time.perf_counter()
    code, _, err = run_cli(capsys, "search", "--model", "dit-test", "--trials", "1", "--calib", "1",
                           "--out", str(tmp_path / "o"))
    assert time.perf_counter() - start < 20
    assert_one_line_error(code, err, "reference cache folder", "XDG_CACHE_HOME")


# 11. plain `autodelta`, and hints that work as printed ----------------------------------------------
def test_11_plain_autodelta_prints_its_help_and_exits_0(capsys):
    code, out, err = run_cli(capsys)
    assert code == 0 and "Usage" in out and "search" in out and not err


def test_11_a_profile_without_cost_gets_a_hint_that_works_as_printed(capsys, tmp_path):
    doc = yaml.safe_load((ROOT / "profiles" / "dit-test.yaml").read_text())
    doc.pop("cost")
    doc["name"] = "my"
    mine = tmp_path / "my.yaml"
    mine.write_text(yaml.safe_dump(doc))
    code, _, err = run_cli(capsys, "rule", "--model", str(mine), "--out", str(tmp_path / "r.yaml"))
    assert_one_line_error(code, err, f"autodelta profile --model {mine} --write")
    hint = err.split("`")[1].split()
    code, _, err = run_cli(capsys, *hint[1:], "--repeats", "1")
    assert code == 0, err
    code, _, err = run_cli(capsys, "rule", "--model", str(mine), "--out", str(tmp_path / "r.yaml"))
    assert code == 0, err


def test_a_dit_folder_with_fewer_than_1000_classes_runs_unguided(tmp_path, caplog):
    """DiTPipeline's null label is class 1000: a 10-class model cannot be guided by it (it used to be an IndexError)."""
    profile = load_profile(save_tiny_dit(tmp_path / "ten", num_layers=2, classes=10))
    assert profile.guidance_scale == 1.0 and "null label" in caplog.text
    pipe = profile.load_pipeline()
    images = profile.adapter.call(pipe, [0, 9], [0, 1], 2, profile.guidance_scale).images
    assert images.shape[0] == 2
