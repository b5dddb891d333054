from __future__ import annotations

import gc

import pytest
import torch

import autodelta
from autodelta.errors import ScheduleError
from autodelta.models.loading import load_profile
from autodelta.plan.schedule import CachedRange
from tests.conftest import full_schedule, make_schedule, paper_schedule
from tests.helpers import Recorder, delta_step_by_hand


def _run(pipe, steps=20, labels=(3, 7), seed=0):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # LCM's step draws noise from the global generator
    with torch.no_grad():
        return pipe(class_labels=list(labels), generator=generator, num_inference_steps=steps,
                    output_type="np", guidance_scale=4.0).images


def test_all_full_plan_is_bit_identical_and_removal_restores(pipe):
    baseline = _run(pipe)
    handle = autodelta.apply(pipe, full_schedule())
    assert (_run(pipe) == baseline).all()
    handle.remove()
    assert (_run(pipe) == baseline).all()
    with autodelta.apply(pipe, paper_schedule()):
        cached = _run(pipe)
    assert not (cached == baseline).all()  # the schedule really changed the computation
    assert (_run(pipe) == baseline).all()  # ... and leaving the context restored the model
    assert pipe.transformer.forward.__func__ is type(pipe.transformer).forward


@pytest.mark.parametrize("name", ["dit-test", "pixart-test"])
def test_delta_step_equals_hand_computation(name):
    profile = load_profile(name)
    transformer = profile.build_transformer()
    blocks = transformer.transformer_blocks
    x0 = profile.example_inputs(batch=2, seed=1)
    x1 = dict(profile.example_inputs(batch=2, seed=2), timestep=torch.full((2,), 300))
    s, n = 5, 10
    rec = Recorder(blocks)
    with torch.no_grad():
        transformer(**x0)
        transformer(**x1)
    rec.close()
    delta = rec.outputs[s + n - 1] - rec.inputs[s]  # h_{s+n} - h_s at the full step
    h = delta_step_by_hand(blocks, rec.inputs[28], rec.kwargs[28], s, n, delta)  # from h_0 at the second step
    schedule = make_schedule([None, CachedRange(s, n)], model=name)
    with autodelta.apply(transformer, schedule):
        rec2 = Recorder([blocks[27]])
        with torch.no_grad():
            transformer(**x0)
            out = transformer(**x1, return_dict=False)[0]
        rec2.close()
    assert torch.equal(rec2.outputs[1], h)
    channels = int(profile.transformer_config["out_channels"])
    assert out.shape[:2] == (2, channels)


def _count_computed_blocks(transformer):
    """Counts real block computations: a block's attention only runs when the block runs."""
    counts: list[int] = []
    handles = [blk.attn1.register_forward_pre_hook(lambda m, a: counts.append(1))
               for blk in transformer.transformer_blocks]
    return counts, handles


@pytest.mark.parametrize("scheduler", ["DDIMScheduler", "DPMSolverMultistepScheduler",
                                       "EulerDiscreteScheduler", "LCMScheduler"])
def test_schedulers_step_tracking_and_block_counts(profile, scheduler):
    pipe = profile.load_pipeline(scheduler=scheduler)
    steps = 8
    plan = [None, CachedRange(20, 8), CachedRange(20, 8), None, CachedRange(0, 8), None,
            CachedRange(0, 28), CachedRange(3, 4)]
    schedule = make_schedule(plan, scheduler=scheduler)
    baseline = _run(pipe, steps)
    with autodelta.apply(pipe, full_schedule(steps, scheduler)):
        assert (_run(pipe, steps) == baseline).all()
    counts, handles = _count_computed_blocks(pipe.transformer)
    with autodelta.apply(pipe, schedule) as handle:
        first = _run(pipe, steps)
        per_generation = len(counts)
        second = _run(pipe, steps)  # consecutive generation on the same handle
    for h in handles:
        h.remove()
    expected = sum(28 if s is None else 28 - s.length for s in plan)
    assert per_generation == expected
    assert len(counts) == 2 * expected
    assert (first == second).all()
    assert handle.stats.generations == 2 and handle.stats.steps == 2 * steps
    assert handle.stats.blocks_skipped == 2 * sum(0 if s is None else s.length for s in plan)
    assert handle.stats.macs_saved > 0
    assert handle.state.deltas == {} and handle.state.inputs == {}  # freed after each generation


def test_delta_tensors_live_only_during_generation(pipe):
    seen = []
    with autodelta.apply(pipe, paper_schedule()) as handle:
        spy = pipe.transformer.transformer_blocks[27].register_forward_pre_hook(
            lambda m, a: seen.append(len(handle.state.deltas)))
        _run(pipe)
        spy.remove()
        assert max(seen) == 1 and handle.state.deltas == {}
    gc.collect()


def test_step_count_mismatch_is_refused_naming_both(pipe):
    with autodelta.apply(pipe, paper_schedule()):
        with pytest.raises(ScheduleError, match="pipeline runs 10 steps but the schedule has 20"):
            _run(pipe, steps=10)


def test_block_count_mismatch_and_double_apply(pipe):
    with pytest.raises(ScheduleError, match="N_b=28 blocks but the schedule was made for N_b=12"):
        autodelta.apply(pipe, make_schedule([None, CachedRange(0, 2)], num_blocks=12))
    with autodelta.apply(pipe, paper_schedule()):
        with pytest.raises(ScheduleError, match="already applied"):
            autodelta.apply(pipe, paper_schedule())


def test_bare_transformer_wraps_to_a_new_generation(profile):
    transformer = profile.build_transformer()
    x = [dict(profile.example_inputs(batch=2, seed=i), timestep=torch.full((2,), t))
         for i, t in enumerate([900, 500, 100])]
    schedule = make_schedule([None, CachedRange(0, 28), CachedRange(0, 28)])
    with autodelta.apply(transformer, schedule) as handle, torch.no_grad():
        a = [transformer(**xi).sample for xi in x]
        b = [transformer(**xi).sample for xi in x]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert handle.stats.generations == 2
    # whole-stack replay: output of step 2 = head(h_0 + Δ) where Δ came from step 0
    assert not torch.equal(a[1], a[2])


def test_cfg_as_separate_calls_keeps_one_delta_per_call(profile):
    """Pipelines that run cond and uncond as two calls per timestep still make one step."""
    transformer = profile.build_transformer()
    cond = [dict(profile.example_inputs(batch=1, seed=i), timestep=torch.full((1,), t)) for i, t in enumerate([900, 500])]
    uncond = [dict(c, class_labels=torch.tensor([1000])) for c in cond]
    schedule = make_schedule([None, CachedRange(4, 20)])
    interleaved = []
    with autodelta.apply(transformer, schedule) as handle, torch.no_grad():
        for c, u in zip(cond, uncond):
            interleaved.append(transformer(**c).sample)
            transformer(**u)
    assert handle.stats.steps == 2 and handle.stats.calls == 4
    assert handle.stats.blocks_skipped == 2 * 20
    with autodelta.apply(transformer, schedule), torch.no_grad():  # the cond calls alone: same Δ, same output
        alone = [transformer(**c).sample for c in cond]
    assert torch.equal(interleaved[1], alone[1])
