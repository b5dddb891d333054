"""``apply`` runs the model the schedule records and counts MACs at the resolution that runs: a folder in the
current directory that shares the model's name never wins over the recorded source, and a speed-up other than
the recorded one is said with both figures."""

from __future__ import annotations

import pytest

from autodelta.plan.schedule import load_schedule
from tests import factories


@pytest.mark.slow
def test_apply_loads_the_recorded_source_and_counts_macs_where_it_runs(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    factories.flux_folder(tmp_path / "pipes" / "fx", double=2, single=4)
    factories.flux_folder(tmp_path / "fx", double=1, single=1)  # same name, another model, in the current folder
    code, _, err = cli("rule", "--model", "pipes/fx", "--budget", "2x", "--steps", "4", "--out", "rule.yaml")
    assert code == 0, err
    schedule = load_schedule(tmp_path / "rule.yaml")
    assert schedule.source == "pipes/fx" and schedule.num_blocks == 6
    code, out, err = cli("apply", "rule.yaml", "--resolution", "32", "--out", "a", "--device", "cpu")
    assert code == 0, err  # the 2-block folder in the current directory would be refused: N_b 2, not 6
    total = float(out.split("MACs saved ")[1].split(" of ")[1].split(" G")[0])
    from autodelta.models.loading import load_profile

    profile = load_profile(tmp_path / "pipes" / "fx")
    at_1024 = profile.require_cost().full_macs(4) * 2 / 1e9  # 4 steps, 2 items, at the folder's 1024 px
    at_32 = profile.cost_at(32).full_macs(4) * 2 / 1e9
    assert total == pytest.approx(at_32, rel=0.01) and total < at_1024 / 10  # what ran, not the profile's size


def test_a_speedup_other_than_the_recorded_one_is_said_with_both(capsys):
    from autodelta.cli.apply import warn_cost_differs
    from autodelta.plan.schedule import CachedRange, Schedule

    schedule = Schedule(model="m", num_blocks=4, scheduler="DDIMScheduler", steps=2, plan=(None, CachedRange(0, 4)),
                        cost={"speedup": 7.338})
    warn_cost_differs(schedule, 5.982, "m", 512)
    assert "records a 7.338x MACs speed-up; on m at 512 px its plan gives 5.982x" in capsys.readouterr().out
    warn_cost_differs(schedule, 7.34, "m", 512)
    assert capsys.readouterr().out == ""
