from __future__ import annotations

import pytest

from autodelta.errors import BudgetError
from autodelta.plan.cost import CostModel, paper_rule, parse_budget
from autodelta.plan.schedule import CachedRange


def test_paper_worked_example_equal_blocks():
    params = paper_rule(CostModel.uniform(28), 20, parse_budget("1.6x"))
    assert (params.interval, params.cached_blocks) == (2, 21)
    assert (params.start_early, params.start_late, params.boundary) == (7, 0, 12)


def test_lcm_four_steps_at_1_12x():
    params = paper_rule(CostModel.uniform(28), 4, parse_budget("1.12x"))
    assert (params.interval, params.cached_blocks, params.boundary) == (2, 6, 2)


def test_budget_forms_agree():
    assert parse_budget("62.5%").speedup == pytest.approx(parse_budget("1.6x").speedup)
    assert parse_budget("2X").speedup == 2.0


@pytest.mark.parametrize("text, message", [("abc", "not understood"), ("0.9x", "slow-down"),
                                           ("150%", "not a share"), ("0%", "not a share")])
def test_bad_budgets(text, message):
    with pytest.raises(BudgetError, match=message):
        parse_budget(text)


def test_rule_with_unequal_blocks_and_t_not_multiple_of_n():
    cost = CostModel.ramp(28, 1.0, 3.0)  # rear blocks cost three times the front ones
    budget = parse_budget("1.6x")
    params = paper_rule(cost, 25, budget)
    plan = params.plan(25, 28)
    assert cost.speedup(plan) >= 1.6
    # smallest N_c: one fewer cached block no longer fits the budget
    smaller = type(params)(params.interval, params.cached_blocks - 1, params.boundary,
                           28 - params.cached_blocks + 1, 0)
    assert cost.speedup(smaller.plan(25, 28)) < 1.6


def test_rule_grows_n_when_overhead_needs_it_and_refuses_the_unreachable():
    cost = CostModel.uniform(28, pre=2.0, post=2.0)
    params = paper_rule(cost, 20, parse_budget("1.9x"))
    assert cost.speedup(params.plan(20, 28)) >= 1.9
    with pytest.raises(BudgetError, match="best reachable speed-up is"):
        paper_rule(cost, 20, parse_budget("9x"))


def test_plan_macs_is_the_sum_of_profiled_block_macs(profile):
    cost = profile.cost_model()
    blocks = profile.cost["macs"]["blocks"]
    plan = [None, CachedRange(3, 10), None, CachedRange(0, 28)]
    per_call = sum(profile.cost["macs"][k] for k in ("pre", "post"))
    expected = 0.0
    for step in plan:
        run = range(28) if step is None else [k for k in range(28) if not step.start <= k < step.stop]
        expected += per_call + sum(blocks[k] for k in run)
    assert cost.plan_macs(plan) == pytest.approx(2 * expected)  # CFG doubles the batch
    assert cost.speedup(plan) == pytest.approx(2 * 4 * cost.call_full / (2 * expected))


def test_synthetic_cost_models_are_deterministic():
    assert CostModel.seeded(seed=3) == CostModel.seeded(seed=3)
    assert CostModel.seeded(seed=3) != CostModel.seeded(seed=4)


@pytest.mark.parametrize("parts, named", [({"post": -0.0012}, "post is -0.0012"), ({"pre": float("nan")}, "pre is nan"),
                                          ({"blocks": (1.0, -2.0)}, "block 1 is -2.0"), ({"blocks": (0.0, 0.0)}, "cost 0")])
def test_a_cost_that_is_negative_or_not_finite_is_refused_naming_it(parts, named):
    from autodelta.errors import ModelError

    with pytest.raises(ModelError, match=named):
        CostModel(**{"blocks": (1.0, 1.0), **parts})


def test_a_profiled_folder_never_promises_more_than_its_full_steps_allow(tmp_path, capsys):
    """A FLUX folder with 2 double- and no single-stream blocks: fvcore's per-block counts once exceeded the whole
    call's, a negative head gave 7.786x at T=6 with one full step. Now nothing is negative and 6.5x is refused."""
    from autodelta.cli.app import main
    from autodelta.models.loading import load_profile
    from tests import factories

    folder = factories.flux_folder(tmp_path / "fx", 2, 0)
    cost = load_profile(folder).require_cost()
    assert cost.pre >= 0 and cost.post >= 0 and min(cost.blocks) > 0
    assert cost.speedup([None] + [CachedRange(0, 2)] * 5) < 6.0  # one full step in six: below 6x, always
    with pytest.raises(SystemExit) as exit_info:
        main(["rule", "--model", str(folder), "--budget", "6.5x", "--steps", "6", "--out", str(tmp_path / "r.yaml")])
    assert exit_info.value.code == 2 and "out of reach" in capsys.readouterr().err


def test_budgets_of_one_value_in_other_spellings_are_one_budget_under_the_first_spelling():
    from autodelta.plan.cost import parse_budgets, repeated_budgets

    text = "2x,1.6x,2.0x,50%"
    assert [b.text for b in parse_budgets(text)] == ["1.6x", "2x"]
    assert repeated_budgets(text) == [("2.0x", "2x"), ("50%", "2x")]
