"""What a search is asked to do: budget(s), space, sampler, trials, bounds; and the defaults."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from autodelta.errors import AutodeltaError
from autodelta.plan.cost import Budget
from autodelta.search.spaces import SearchSpace


@dataclass
class SearchSettings:
    budget: Budget
    space: SearchSpace
    metric: str = "psnr"
    trials: int = 60
    storage: str | None = None
    study_name: str = "autodelta"
    sampler: str = "auto"
    seed: int = 0
    resume_any: bool = False
    model: str = "model"
    seed_known: bool = True
    screen_items: int | None = None  # the local sampler's screening subset (None: a quarter, at least 4)
    probe_items: int | None = None  # items the model's probes use (None: as the bound allows; 0: the prior)
    model_screen: int = 0  # the model sampler screens this many candidates per trial (0: none), on screen_items
    extra_attrs: dict[str, Any] = field(default_factory=dict)
    budgets: tuple[Budget, ...] = ()  # several budgets served by one study (``budget`` is then the loosest)
    max_generations: int | None = None  # bound on the study's item-generations, every phase included
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])  # this command's bookings in the ledger

    @property
    def all_budgets(self) -> tuple[Budget, ...]:
        return self.budgets or (self.budget,)


SAMPLERS = ("auto", "model", "local", "tpe", "nsga2", "random")


MODEL_TRIALS = 20
"""Default trials of the model sampler for one budget; each further budget adds :data:`MODEL_TRIALS_PER_BUDGET`."""


MODEL_TRIALS_PER_BUDGET = 10


OTHER_TRIALS = 60
"""Default trials of the other samplers (the pre-model default)."""


def check_sampler(name: str, space: SearchSpace | None = None) -> None:
    if name not in SAMPLERS:
        raise AutodeltaError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}")
    if space is not None and not space.family_impl.accepts(name):
        raise AutodeltaError(f"sampler {name!r} searches per-step spaces (explicit), not {space.name} ({space.family}); "
                             "use --sampler tpe there, or --space explicit")


def check_settings(settings: SearchSettings) -> None:
    """What no single option shows: several budgets need a sampler that serves them all from one study."""
    if settings.budgets and sampler_name(settings) != "model":
        raise AutodeltaError(f"--budgets serves several budgets from one study only with the model sampler, not "
                             f"{sampler_name(settings)} (its study aims at one budget); run one search per --budget, "
                             "or use --sampler model on the explicit space")


def default_trials(settings: SearchSettings) -> int:
    """``--trials`` when not given: the model sampler needs far fewer (each trial is a full evaluation)."""
    if sampler_name(settings) == "model":
        return MODEL_TRIALS + MODEL_TRIALS_PER_BUDGET * (len(settings.all_budgets) - 1)
    return OTHER_TRIALS


def minimum_generations(items: int) -> int:
    """The least item-generations a fresh study needs for a verified schedule: the reference and one trial.

    The model's probes are not needed: under a bound too small for them the model starts from
    its prior (:meth:`~autodelta.evaluation.error_model.Gains.prior`) and the trials calibrate it.
    """
    return 2 * items


TRIALS_AFTER_PROBES = 2
"""Under a bound, the model's probes leave room for at least this many trials (its DP plan and one more)."""


def probe_items_within(room: int | None, items: int, probes_per_item: int, asked: int | None = None) -> int:
    """How many items the model's probes use: ``asked``, else :func:`probe_items`; under a bound, fewer, so that
    they take at most half of ``room`` (what the bound leaves; the default search's own share: 370 of 770) and
    leave :data:`TRIALS_AFTER_PROBES` trials; 0 means no probes (the prior).

    Measured at a bound of 200 on the three proxies (held-out dB, 9 cells): probes on 2 items and 5 trials
    beat 3 items and 3 trials in 7 cells and 1 item and 7 trials in 7 (docs/design.md §6a).
    """
    wanted = probe_items(items) if asked is None else min(asked, items)
    if room is None or probes_per_item <= 0:
        return wanted
    fit = min((room // 2) // probes_per_item, (room - TRIALS_AFTER_PROBES * items) // probes_per_item)
    return max(0, min(wanted, fit))


SCREEN_CANDIDATES = 4
"""Under a bound too small for the default search, the model sampler screens this many of its candidates per trial
(on :func:`model_screen_items` items) and runs the best: at a bound of 200, 6 of 9 cells better, mean +0.45 dB."""


def model_screen_items(items: int) -> int:
    """Items a model-sampler screen uses: a fifth, at least 2."""
    return min(items, max(2, items // 5))


def screens_within(room: int | None, items: int, probes: int, trials: int, asked: int = 0) -> int:
    """Candidates the model sampler screens per trial: ``asked``, else :data:`SCREEN_CANDIDATES` when the bound's
    ``room`` cannot hold the default search (``probes`` item-generations of probes and ``trials`` trials), else 0."""
    if asked:
        return asked
    return SCREEN_CANDIDATES if room is not None and room < probes + trials * items else 0


def sampler_name(settings: SearchSettings) -> str:
    """``auto``: the model sampler on per-step spaces, TPE on parametric families."""
    if settings.sampler == "auto":
        return settings.space.family_impl.default_sampler()
    return settings.sampler


def screen_items(items: int, asked: int | None = None) -> int:
    """How many items the cheap fidelity (the local sampler's screening) uses: a quarter, at least 4."""
    return min(items, asked if asked is not None else max(4, items // 4))


def probe_items(items: int) -> int:
    """How many items the error model's probes use: half, at least 4. A gain is a ratio dominated by the
    few most sensitive items, so a quarter misjudged tiny-dit's step 1 fourfold (measured)."""
    return min(items, max(4, items // 2))
