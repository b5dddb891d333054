"""What the commands share: model options, the checks every command makes before torch loads, small
parsers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from autodelta.errors import AutodeltaError, ScheduleError
from autodelta.files import ensure_writable_dir

if TYPE_CHECKING:
    from autodelta.models.devices import Placement
    from autodelta.models.profile import Profile
    from autodelta.plan.schedule import Schedule


@dataclass(frozen=True)
class ModelOptions:
    """The options every model-running command shares."""

    model: Optional[str] = None  # profile name, profile YAML, pipeline folder or cached hub id
    random_weights: bool = False
    device: str = "auto"
    dtype: str = "auto"
    resolution: Optional[int] = None
    prompt_embeds: Optional[Path] = None
    batch_size: Optional[int] = None

    def check(self) -> None:
        from autodelta.models.devices import check_names

        check_names(self.device, self.dtype)
        if self.batch_size is not None and self.batch_size < 1:
            raise AutodeltaError(f"--batch-size {self.batch_size} must be at least 1")

    def placement(self, profile: Profile) -> Placement:
        from autodelta.models.devices import resolve

        return resolve(self.device, self.dtype, profile.gpu_dtype)


def load_for_schedule(schedule: Schedule, override: Optional[str]) -> Profile:
    """The model a schedule was made for: ``--model`` if given, else the source it records (the folder or YAML it
    was searched on) where that exists, else its profile name. A folder in the current directory that happens to
    share the profile's name never wins over the recorded source."""
    from autodelta.errors import ModelError
    from autodelta.models.loading import load_profile

    if override is not None:
        return load_profile(override)
    if schedule.source and Path(schedule.source).exists():
        return load_profile(schedule.source)
    try:
        return load_profile(schedule.model)
    except ModelError:
        where = f" (made from {schedule.source})" if schedule.source else ""
        raise ModelError(f"unknown model {schedule.model!r}{where}; pass --model with its profile YAML, pipeline "
                         "folder or hub id") from None


# --- evaluate and search ---------------------------------------------------------------------
def check_weights_fit(profile: Profile, options: ModelOptions) -> None:
    """A pretrained model's weights match its config, checked before the cost is counted or anything loads
    (``--random-weights`` runs the config as written)."""
    if options.random_weights or not profile.pretrained or profile.weights is not None:
        return
    from autodelta.models.pipelines import check_pretrained

    check_pretrained(profile)


def parse_labels(text: Optional[str], default: list[int]) -> list[int]:
    if text is None:
        return default
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise AutodeltaError(f"--class-labels {text!r} is not a comma-separated list of integers, e.g. 207,360") from None


def warn_random(profile: Profile, random_weights: bool, conditioning: Any) -> None:
    if random_weights and profile.pretrained:
        print(f"warning: {profile.name} runs with random weights: its quality numbers are meaningless "
              "(costs and timings are real); use tiny-dit for quality")
    if conditioning is not None:
        print(f"conditions: prompt embeddings from {conditioning.source}")


def prepare_inputs(profile: Profile, options: ModelOptions) -> tuple[int, Any]:
    """The resolution and conditioning to run with; a bad one, or one at which a single item cannot fit in the
    device's memory, is refused before any model is built."""
    from autodelta.models.memory import check_generation_fits

    resolution = profile.check_resolution(options.resolution)
    placement = options.placement(profile)
    need = profile.adapter.generation_bytes(resolution, placement.torch_dtype().itemsize)
    check_generation_fits(profile.name, resolution, need, placement.device, profile.resolution)
    return resolution, profile.adapter.conditioning(options.prompt_embeds)


def evaluator_factory(profile: Profile, options: ModelOptions, placement: Placement, calib: Optional[int], heldout: bool,
             metrics: Optional[tuple[str, ...]] = None) -> Any:
    from autodelta.evaluation.diffusion import EvaluatorFactory

    factory = EvaluatorFactory(profile.origin or profile.name, options.random_weights, calib, heldout, metrics,
                               resolution=options.resolution, prompt_embeds=optional_path(options.prompt_embeds),
                               device=placement.device, dtype=placement.dtype, batch_size=options.batch_size)
    check_cache(factory.cache_dir)
    return factory


def check_cache(folder: Optional[str]) -> None:
    """The reference cache must be writable before a reference is computed, not after."""
    if folder is None:
        return
    try:
        ensure_writable_dir(folder)
    except AutodeltaError:
        raise AutodeltaError(f"the reference cache folder {folder!r} is not writable; set XDG_CACHE_HOME to a folder "
                             "you can write to") from None


def check_same_model(schedule: Schedule, profile: Profile) -> None:
    """A schedule made for another model gets a warning naming both; for another kind of sampler, a refusal."""
    from autodelta.plan.schedule import sampler_family

    ours, theirs = sampler_family(profile.scheduler), sampler_family(schedule.scheduler)
    if ours != theirs:
        raise ScheduleError(f"the schedule was made for {schedule.model} with {schedule.scheduler} ({theirs}), but "
                            f"{profile.name} samples with {profile.scheduler} ({ours}); use a schedule made for "
                            f"{profile.name}")
    if schedule.model != profile.name or schedule.scheduler != profile.scheduler:
        print(f"warning: the schedule was made for {schedule.model} ({schedule.scheduler}, T={schedule.steps}); "
              f"running it on {profile.name} ({profile.scheduler})")


def check_schedule_fits(schedule: Schedule, profile: Profile, check_steps: bool = True) -> None:
    if profile.num_blocks != schedule.num_blocks:
        raise ScheduleError(f"model {profile.name} has N_b={profile.num_blocks} blocks but the schedule "
                            f"has N_b={schedule.num_blocks}; use a schedule made for {profile.name}")
    if check_steps and profile.steps != schedule.steps:
        raise ScheduleError(f"profile {profile.name} samples {profile.steps} steps but the schedule has "
                            f"{schedule.steps}; use a schedule made for {profile.steps} steps")


def resolve_devices(devices: Optional[str], options: ModelOptions, jobs: int) -> list[str]:
    """One device per worker: ``--devices a,b`` in turn, else ``cuda:i`` for worker i on a CUDA machine."""
    from autodelta.models.devices import check_names

    if devices:
        names = [d.strip() for d in devices.split(",") if d.strip()]
        for name in names:
            check_names(name, options.dtype)
        if not names:
            raise AutodeltaError("--devices is empty; give e.g. cuda:0,cuda:1")
        return names
    if jobs > 1 and options.device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 1:
            return [f"cuda:{i % torch.cuda.device_count()}" for i in range(jobs)]
    return [options.device]


def parse_metric_names(text: Optional[str]) -> Optional[tuple[str, ...]]:
    """``--metrics a,b`` as names, each checked to be a known metric (``None``: the profile's own)."""
    from autodelta.evaluation.metrics import get_metric

    names = tuple(m.strip() for m in text.split(",")) if text else None
    for name in names or ():
        get_metric(name)
    return names


def optional_path(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None
