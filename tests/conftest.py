"""Shared fixtures: the few-MB ``dit-test`` profile (28 blocks, DiTPipeline, random weights)."""

from __future__ import annotations

import pytest
import torch

from autodelta.models.loading import load_profile
from autodelta.models.profile import Profile
from autodelta.plan.schedule import CachedRange, DeltaDiTParams, Schedule, Step
from tests.helpers import run_cli

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def profile() -> Profile:
    return load_profile("dit-test")


@pytest.fixture()
def pipe(profile: Profile):
    return profile.load_pipeline()


@pytest.fixture()
def cli(capsys):
    """``cli(*argv)``: :func:`run_cli` with this test's captured output."""
    return lambda *argv: run_cli(capsys, *argv)


def make_schedule(plan: list[Step], model: str = "dit-test", num_blocks: int = 28,
                  scheduler: str = "DPMSolverMultistepScheduler", **extra) -> Schedule:
    return Schedule(model=model, num_blocks=num_blocks, scheduler=scheduler, steps=len(plan),
                    plan=tuple(plan), guidance_scale=4.0, **extra)


def paper_schedule(steps: int = 20, scheduler: str = "DPMSolverMultistepScheduler") -> Schedule:
    params = DeltaDiTParams(interval=2, cached_blocks=21, boundary=12, start_early=7, start_late=0)
    return make_schedule(list(params.plan(steps, 28)), scheduler=scheduler, params=params.as_dict())


def full_schedule(steps: int = 20, scheduler: str = "DPMSolverMultistepScheduler") -> Schedule:
    return make_schedule([None] * steps, scheduler=scheduler)


__all__ = ["CachedRange", "make_schedule", "paper_schedule", "full_schedule"]
