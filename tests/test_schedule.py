from __future__ import annotations

import pytest
import yaml

from autodelta.errors import ScheduleError
from autodelta.plan.schedule import CachedRange, DeltaDiTParams, Schedule, load_schedule, paper_boundary, paper_params
from tests.conftest import make_schedule, paper_schedule


def test_delta_dit_plan_follows_the_family_definition():
    plan = DeltaDiTParams(interval=3, cached_blocks=4, boundary=5, start_early=20, start_late=2).plan(9, 28)
    assert plan[0] is None and plan[3] is None and plan[6] is None
    assert plan[1] == plan[2] == plan[4] == CachedRange(20, 4)  # i < b: outline stage
    assert plan[5] == plan[7] == plan[8] == CachedRange(2, 4)  # i >= b: detail stage


def test_paper_preset_positions_and_boundary():
    params = paper_params(20, 28, 2, 21)
    assert (params.start_early, params.start_late, params.boundary) == (7, 0, 12)
    assert paper_boundary(4)[0] == 2 and paper_boundary(50)[0] == 30


def test_yaml_round_trip_is_lossless(tmp_path):
    schedule = paper_schedule().with_updates(
        pretrained="x/y", cost={"speedup": 1.6}, quality={"metrics": {"psnr": 25.5}},
        provenance={"study": "s", "trial": 3, "date": "2026-01-01T00:00:00Z"},
    )
    path = tmp_path / "s.yaml"
    schedule.save(path)
    again = load_schedule(path)
    assert again.plan == schedule.plan
    assert again.to_dict() == schedule.to_dict()
    again.save(tmp_path / "t.yaml")
    assert (tmp_path / "t.yaml").read_text() == path.read_text()


def _write(tmp_path, doc) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return str(path)


def _doc():
    return paper_schedule().to_dict()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="autodelta/schedule@9"), "format is 'autodelta/schedule@9'"),
        (lambda d: d["plan"].__setitem__(0, {"delta": [0, 4]}), "step 0 must be full"),
        (lambda d: d["plan"].__setitem__(1, {"delta": [20, 9]}), "outside [0, 28)"),
        (lambda d: d["plan"].__setitem__(1, {"delta": [-1, 2]}), "outside [0, 28)"),
        (lambda d: d["plan"].pop(), "plan has 19 steps but sampler.steps is 20"),
        (lambda d: d["plan"].__setitem__(1, "skip"), "plan[1] is 'skip'"),
        (lambda d: d["model"].pop("num_blocks"), "'model.num_blocks' is missing"),
        (lambda d: d["sampler"].__setitem__("steps", "20"), "'sampler.steps' is '20'"),
    ],
)
def test_bad_schedule_files_name_the_field(tmp_path, mutate, message):
    doc = _doc()
    mutate(doc)
    with pytest.raises(ScheduleError) as err:
        load_schedule(_write(tmp_path, doc))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_not_yaml_files(tmp_path):
    with pytest.raises(ScheduleError, match="does not exist"):
        load_schedule(tmp_path / "nope.yaml")
    with pytest.raises(ScheduleError, match="not valid YAML at line"):
        load_schedule(_write(tmp_path, "plan: [full\n  - :"))
    with pytest.raises(ScheduleError, match="must be a mapping"):
        load_schedule(_write(tmp_path, "- 1\n- 2\n"))


def test_save_is_atomic_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "s.yaml"
    paper_schedule().save(path)
    before = path.read_text()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("autodelta.plan.schedule.dump_yaml", boom)
    with pytest.raises(RuntimeError):
        make_schedule([None] * 20).save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.yaml"]


def test_invalid_schedule_object_is_refused():
    with pytest.raises(ScheduleError, match="step 0 must be full"):
        Schedule(model="m", num_blocks=28, scheduler="X", steps=2, plan=(CachedRange(0, 1), None))
