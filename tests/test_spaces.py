from __future__ import annotations

import time

import pytest

from autodelta.plan.schedule import CachedRange
from autodelta.search.expressions import ExpressionError, evaluate_expression
from autodelta.search.families import FAMILIES, SearchFamily
from autodelta.search.families.free_steps import full_step_positions
from autodelta.search.spaces import SpaceError, load_space


def test_expressions_evaluate_as_written():
    names = {"T": 20, "N_b": 28, "N_c": 21}
    assert evaluate_expression("N_b - N_c", names) == 7
    assert evaluate_expression("max(1, T // 3) + ceil(0.5 * N_c)", names) == 6 + 11
    assert evaluate_expression("-(N_b % 5) ** 2", names) == -9
    assert evaluate_expression(4, names) == 4


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "N_b.bit_length()", "(lambda: 1)()",
                                  "[1, 2]", "open('x')", "N_b if T else 0", "'a'"])
def test_expressions_reject_code(text):
    with pytest.raises(ExpressionError):
        evaluate_expression(text, {"T": 20, "N_b": 28})


@pytest.mark.parametrize("text", ["9**9**9", "2**100000000", "max(1,2)*10**1000000", "10.0**400", "T / 0",
                                  "T % 0", "T // 0", "min()", "max(3)", "ceil(1, 2)", "(-8)**0.5", "abs(-3)",
                                  "N_b * 10**9", "0**-1", "x" * 300])
def test_expressions_are_bounded_and_answer_at_once(text):
    start = time.perf_counter()
    with pytest.raises(ExpressionError):
        evaluate_expression(text, {"T": 20, "N_b": 28})
    assert time.perf_counter() - start < 1.0  # refused before computing, never hangs


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e12, True])
def test_non_finite_or_huge_constants_are_refused(value):
    with pytest.raises(ExpressionError):
        evaluate_expression(value, {"T": 20})


def test_a_new_search_family_is_one_class_and_one_registry_entry(tmp_path, monkeypatch):
    class EveryOther(SearchFamily):
        name = "every-other"
        params = ("n",)

        def plan(self, values, steps, num_blocks):
            return tuple(None if i % 2 == 0 else CachedRange(0, int(values["n"])) for i in range(steps))

    monkeypatch.setitem(FAMILIES, EveryOther.name, EveryOther())
    space = load_space(_space(tmp_path, "family: every-other\nparams:\n  n: {int: [1, N_b]}\n"), 4, 28)
    assert space.plan({"n": 5}, 4, 28) == (None, CachedRange(0, 5), None, CachedRange(0, 5))


def test_shipped_spaces_load_and_make_valid_plans():
    for name in ("paper", "delta-dit", "stagewise", "free-steps", "anchored", "explicit"):
        space = load_space(name)
        values = space.sample(lambda p, lo, hi: hi if p.kind == "int" else lo, 20, 28)
        plan = space.plan(values, 20, 28)
        assert len(plan) == 20 and plan[0] is None


def test_free_steps_placement_packs_where_the_warp_says():
    assert full_step_positions(20, 7, 1.0) == {0, 3, 6, 10, 13, 16, 19}  # both ends included
    early = full_step_positions(20, 12, 4.0)
    assert len(early) == 12 and max(early) < 20 and sum(early) < sum(full_step_positions(20, 12, 1.0))
    assert sum(full_step_positions(20, 6, 0.3)) > sum(full_step_positions(20, 6, 1.0))


def _space(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_bad_space_files_name_the_line(tmp_path):
    head = "family: delta-dit\nparams:\n  N: {int: [1, 4]}\n  N_c: {int: [1, N_b]}\n  b: {int: [0, T]}\n"
    with pytest.raises(SpaceError, match=r"line 6: unknown parameter 'speed'"):
        load_space(_space(tmp_path, head + "  speed: {int: [0, 1]}\n"))
    with pytest.raises(SpaceError, match=r"line 6: range of s_early is empty"):
        load_space(_space(tmp_path, head + "  s_early: {int: [N_b, 0]}\n  s_late: {fixed: 0}\n"))
    with pytest.raises(SpaceError, match=r"line 6: .*not allowed"):
        load_space(_space(tmp_path, head + "  s_early: {int: [0, __import__('os')]}\n  s_late: {fixed: 0}\n"))
    with pytest.raises(SpaceError, match="parameters s_early, s_late are missing"):
        load_space(_space(tmp_path, head))
    with pytest.raises(SpaceError, match="unknown search space 'nope'; known spaces: anchored, delta-dit, explicit, free-steps"):
        load_space("nope")


def test_anchored_with_one_head_step_and_no_tail_is_the_delta_dit_family():
    from autodelta.plan.schedule import DeltaDiTParams

    anchored = load_space("anchored")
    values = {"N": 3, "head": 1, "tail": 0, "b": 9, "n_early": 20, "s_early": 8, "n_late": 20, "s_late": 0}
    assert anchored.plan(values, 20, 28) == DeltaDiTParams(3, 20, 9, 8, 0).plan(20, 28)
    values = dict(values, n_late=20, head=3, tail=2, N=2)
    kinds = ["F" if s is None else "d" for s in anchored.plan(values, 20, 28)]
    assert "".join(kinds) == "FFF" + "dF" * 7 + "d" + "FF"  # head 3, every 2nd step, tail 2
