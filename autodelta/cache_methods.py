"""Run-time caching methods of diffusers and cache-dit, installed on a pipeline and set to a budget by their own knob.

Each :class:`CacheMethod` says how to install the method with one knob value and what the
knob is: a continuous threshold (bisected in log space) or an ordered list of discrete
settings (interval, warm-up, skip range). MagCache first calibrates its magnitude ratios
on the calibration items, as its docs ask. :func:`tune` sets the knob on the calibration
items only; the harness then runs the tuned method on the held-out items and counts what
really ran there (docs/design.md §2).

Everything is installed through the libraries' public API: diffusers' ``apply_*``
functions with ``CacheMixin.cache_context`` opened by hand (DiT and PixArt do not inherit
``CacheMixin``), and ``cache_dit.enable_cache``. Installers remove exactly the hooks they
added, found by comparing the hook registries before and after.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from autodelta.cost import Budget
from autodelta.errors import BudgetError, ModelError
from autodelta.logs import quieted

# A measured speed-up this far below the budget still meets it (budget − 0.5%).
SLACK = 0.005


def meets(budget: Budget, speedup: float) -> bool:
    return speedup >= budget.speedup * (1 - SLACK)


class Installed:
    """What an installer returns: ``reset()`` before each generation, ``remove()`` at the end."""

    def __init__(self, reset: Callable[[], None], remove: Callable[[], None]) -> None:
        self.reset, self.remove = reset, remove


Installer = Callable[[Any], Installed]


def _hook_names(modules: Sequence[Any]) -> set[tuple[int, str]]:
    from diffusers.hooks import HookRegistry

    return {(index, name) for index, module in enumerate(modules)
            for name in HookRegistry.check_if_exists_or_initialize(module).hooks}


def _call_timestep(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
    """The timestep a transformer call was given (a tensor or a number; its first item for a batch)."""
    t = kwargs.get("timestep", args[1] if len(args) > 1 else 0)
    return float(t.reshape(-1)[0]) if hasattr(t, "reshape") else float(t)


def _noise_share(pipe: Any, t: float) -> float:
    """The sampler's position as a flow-matching sigma in [0, 1] (noise share s/(a+s) of x_t = a·x0 + s·ε),
    which SeaCache's spectral filter expects; DDPM-family schedulers give it through ``alphas_cumprod``."""
    alphas = getattr(pipe.scheduler, "alphas_cumprod", None)
    if alphas is None:
        return min(max(t / 1000.0, 0.0), 1.0)
    abar = float(alphas[min(max(int(round(t)), 0), len(alphas) - 1)])
    a, s = abar ** 0.5, (1 - abar) ** 0.5
    return s / (a + s)


def diffusers_installer(apply_name: str, make_config: Callable[[Any], Any], step_context: bool = False) -> Installer:
    """Installs ``diffusers.hooks.<apply_name>(transformer, make_config(pipe))`` with a cache context opened.

    ``step_context``: the method reads the step index, sigma and step count from the cache
    context of each call (SeaCache), which diffusers' own loops attach; DiT and PixArt
    pipelines do not, so a pre-hook on the transformer re-enters the context per call.
    """

    def install(pipe: Any) -> Installed:
        import diffusers.hooks as hooks

        try:
            from diffusers.models.cache_utils import CacheMixin
            apply = getattr(hooks, apply_name)
        except (ImportError, AttributeError):
            raise ModelError(f"{apply_name} is not in this diffusers; pip install -U 'diffusers>=0.42'") from None
        transformer = pipe.transformer
        modules = [transformer, *transformer.modules()]
        before = _hook_names(modules)
        apply(transformer, make_config(pipe))
        added = _hook_names(modules) - before
        registry = hooks.HookRegistry.check_if_exists_or_initialize(transformer)
        context = ExitStack()
        context.enter_context(CacheMixin.cache_context(transformer, "autodelta"))
        calls = [0]
        handle = None
        if step_context:
            def enter_step(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                context.close()
                context.enter_context(CacheMixin.cache_context(
                    transformer, "autodelta", step_index=calls[0], sigma=_noise_share(pipe, _call_timestep(args, kwargs)),
                    num_inference_steps=int(pipe.scheduler.num_inference_steps or 0)))
                calls[0] += 1

            handle = transformer.register_forward_pre_hook(enter_step, with_kwargs=True)

        def reset() -> None:  # each generation starts from empty caches (the reset also drops the context)
            context.close()
            registry.reset_stateful_hooks(recurse=True)
            calls[0] = 0
            context.enter_context(CacheMixin.cache_context(transformer, "autodelta"))

        def remove() -> None:
            context.close()
            if handle is not None:
                handle.remove()
            for index, name in added:
                hooks.HookRegistry.check_if_exists_or_initialize(modules[index]).remove_hook(name, recurse=False)

        return Installed(reset, remove)

    return install


def cache_dit_installer(threshold: float, taylorseer: bool = False) -> Installer:
    """cache-dit's DBCache (its defaults: F8B0, 8 warm-up steps), optionally with its TaylorSeer calibrator."""

    def install(pipe: Any) -> Installed:
        try:
            import cache_dit
        except ImportError:
            raise ModelError("this baseline needs the cache-dit package; pip install cache-dit") from None
        quiet = ExitStack()
        quiet.enter_context(quieted("CACHE_DIT", "cache_dit", level=logging.ERROR))  # per-call INFO lines
        calibrator = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=1) if taylorseer else None
        cache_dit.enable_cache(pipe, cache_config=cache_dit.DBCacheConfig(residual_diff_threshold=threshold),
                               calibrator_config=calibrator)

        def remove() -> None:
            cache_dit.disable_cache(pipe)
            quiet.close()

        return Installed(lambda: None, remove)  # cache-dit opens a fresh context on every pipeline call

    return install


class TimestepTracker:
    """The timestep of the transformer call in progress, for PAB's ``current_timestep_callback``.

    DiTPipeline and the PixArt pipelines do not publish ``_current_timestep``; a forward
    pre-hook on the transformer reads it from the call instead.
    """

    def __init__(self) -> None:
        self.value = 1000

    def attach(self, transformer: Any) -> Any:
        def grab(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            self.value = int(_call_timestep(args, kwargs))

        return transformer.register_forward_pre_hook(grab, with_kwargs=True)

    def __call__(self) -> int:
        return self.value


def pab_installer(setting: tuple[int, tuple[int, int]]) -> Installer:
    """Pyramid Attention Broadcast: self- (and cross-) attention recomputed every N steps inside a timestep window."""
    skip, window = setting

    def install(pipe: Any) -> Installed:
        from diffusers.hooks import PyramidAttentionBroadcastConfig

        tracker = TimestepTracker()
        handle = tracker.attach(pipe.transformer)
        inner = diffusers_installer("apply_pyramid_attention_broadcast", lambda _pipe: PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=skip, spatial_attention_timestep_skip_range=window,
            cross_attention_block_skip_range=skip, cross_attention_timestep_skip_range=window,
            current_timestep_callback=tracker))(pipe)

        def remove() -> None:
            inner.remove()
            handle.remove()

        return Installed(inner.reset, remove)

    return install


@dataclass(frozen=True)
class CacheMethod:
    """One run-time method: its installer for a knob value and the knob's range or settings."""

    name: str
    knob: str  # what the tuned value is called in reports
    install: Callable[[Any, Any], Installer]  # (knob value, calibration extras) -> installer
    low: float = 1e-3  # continuous knob: bisection range (log space); more skipping as it grows
    high: float = 10.0
    settings: Callable[[int], list[Any]] | None = None  # discrete knob: candidates for T steps
    extreme: Callable[[int], Any] | None = None  # discrete knob: the setting that skips most (tried first)
    calibrate: Callable[[Any, Any], Any] | None = None  # (runner, steps) -> extras (MagCache's ratios)


def _taylorseer_settings(steps: int) -> list[tuple[int, int]]:
    return [(interval, warmup) for interval in range(2, 9) for warmup in range(1, steps)]


def _pab_settings(steps: int) -> list[tuple[int, tuple[int, int]]]:
    return [(skip, window) for skip in range(2, 7) for window in ((100, 800), (50, 900), (0, 1000))]


def _fbcache(threshold: float, _extras: Any) -> Installer:
    from diffusers.hooks import FirstBlockCacheConfig

    return diffusers_installer("apply_first_block_cache", lambda _pipe: FirstBlockCacheConfig(threshold=threshold))


def _seacache(threshold: float, _extras: Any) -> Installer:
    from diffusers.hooks import SeaCacheConfig

    return diffusers_installer("apply_sea_cache", lambda _pipe: SeaCacheConfig(
        threshold=threshold, raw_vision_callback=_image_latents), step_context=True)


def _image_latents(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any] | None:
    """SeaCache's raw vision input for image models: each item's latent as one frame, ``[C, 1, H, W]``."""
    latents = kwargs.get("hidden_states", args[0] if args else None)
    if latents is None or latents.ndim != 4:
        return None
    return [latent.unsqueeze(1) for latent in latents]


def _taylorseer(setting: tuple[int, int], _extras: Any) -> Installer:
    import torch
    from diffusers.hooks import TaylorSeerCacheConfig

    interval, warmup = setting
    # TaylorSeer forecasts the attention and feed-forward outputs of every block (its paper's DiT setting);
    # diffusers' default pattern ("…attn" matched whole) finds no module named attn1 in DiT or PixArt
    return diffusers_installer("apply_taylorseer_cache", lambda _pipe: TaylorSeerCacheConfig(
        cache_interval=interval, disable_cache_before_step=warmup, max_order=1, taylor_factors_dtype=torch.float32,
        cache_identifiers=[r"^(transformer_blocks|blocks)\.\d+\.(attn\d*|ff)$"]))


def _magcache(threshold: float, ratios: Any) -> Installer:
    from diffusers.hooks import MagCacheConfig

    steps, values = ratios
    return diffusers_installer("apply_mag_cache", lambda _pipe: MagCacheConfig(
        threshold=threshold, num_inference_steps=steps, mag_ratios=values))


def _magcache_ratios(runner: Any, steps: int) -> tuple[int, list[float]]:
    """MagCache's calibration run on the calibration items; the ratios are averaged over items."""
    from diffusers.hooks import MagCacheConfig

    found: list[list[float]] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if "Calibration Results:" in text:
                found.append([float(v) for v in ast.literal_eval(text.split("Results:", 1)[1].strip())])

    logger = logging.getLogger("diffusers.hooks.mag_cache")
    handler, level, propagate = Grab(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # diffusers' own handler would print every INFO line
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it also prints the ratios
            runner.run(diffusers_installer("apply_mag_cache", lambda _pipe: MagCacheConfig(
                calibrate=True, num_inference_steps=steps)), desc="magcache calibration")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    if not found:
        raise ModelError("MagCache's calibration run reported no magnitude ratios on this model")
    return steps, [sum(column) / len(found) for column in zip(*found)]


METHODS: dict[str, CacheMethod] = {m.name: m for m in [
    CacheMethod("fbcache", "threshold", _fbcache),
    CacheMethod("taylorseer", "interval, warm-up", _taylorseer, settings=_taylorseer_settings,
                extreme=lambda steps: (8, 1)),
    CacheMethod("magcache", "threshold", _magcache, low=1e-3, high=100.0, calibrate=_magcache_ratios),
    CacheMethod("seacache", "threshold", _seacache),
    CacheMethod("pab", "skip range, timestep window", lambda s, _e: pab_installer(s), settings=_pab_settings,
                extreme=lambda steps: (6, (0, 1000))),
    CacheMethod("dbcache", "threshold", lambda x, _e: cache_dit_installer(x)),
    CacheMethod("dbcache-taylorseer", "threshold", lambda x, _e: cache_dit_installer(x, taylorseer=True)),
]}


@dataclass
class Tuned:
    """A method's knob value, its calibration extras and the speed-up it measured on the calibration items."""

    method: CacheMethod
    value: Any
    extras: Any
    speedup: float
    notes: list[str] = field(default_factory=list)

    def installer(self) -> Installer:
        return self.method.install(self.value, self.extras)

    def describe(self) -> str:
        value = f"{self.value:.4g}" if isinstance(self.value, float) else str(self.value)
        return f"{self.method.knob} {value}" + "".join(f"; {n}" for n in self.notes)


def tune(method: CacheMethod, runner: Any, budget: Budget, steps: int, iterations: int = 9) -> Tuned:
    """The least-skipping knob value whose speed-up, measured on ``runner``'s (calibration) items, meets ``budget``."""
    extras = method.calibrate(runner, steps) if method.calibrate else None
    if method.settings is not None:
        return _tune_discrete(method, runner, budget, steps, extras)
    top = runner.run(method.install(method.high, extras), desc=f"{method.name} tuning")
    if not meets(budget, top.speedup):
        raise _unreachable(method.name, budget, top.speedup, f"{method.knob} {method.high:g}")
    best = Tuned(method, method.high, extras, top.speedup)
    lo, hi = math.log(method.low), math.log(method.high)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        run = runner.run(method.install(math.exp(mid), extras), desc=f"{method.name} tuning")
        if meets(budget, run.speedup):
            hi, best = mid, Tuned(method, math.exp(mid), extras, run.speedup)
            if run.speedup <= budget.speedup * 1.03:
                break  # within 3% above the budget: close enough
        else:
            lo = mid
    return best


def _tune_discrete(method: CacheMethod, runner: Any, budget: Budget, steps: int, extras: Any) -> Tuned:
    """Static settings: their MACs do not depend on the item, so each is measured on one item, the
    least-skipping one that meets the budget is confirmed on all items. The most-skipping setting goes
    first: a budget it cannot meet is refused after one generation, not after every setting's."""
    assert method.settings is not None
    one = runner.subset(1)
    if method.extreme is not None:
        extreme = method.extreme(steps)
        top = one.run(method.install(extreme, extras), desc=f"{method.name} settings").speedup
        if not meets(budget, top):
            raise _unreachable(method.name, budget, top, f"{method.knob} {extreme}")
    measured = [(one.run(method.install(s, extras), desc=f"{method.name} settings").speedup, i, s)
                for i, s in enumerate(method.settings(steps))]
    fitting = sorted((m, i, s) for m, i, s in measured if meets(budget, m))
    if not fitting:
        best, _, setting = max(measured)
        raise _unreachable(method.name, budget, best, f"{method.knob} {setting}")
    for _, _, setting in fitting:
        run = runner.run(method.install(setting, extras), desc=f"{method.name} tuning")
        if meets(budget, run.speedup):
            return Tuned(method, setting, extras, run.speedup)
    raise _unreachable(method.name, budget, fitting[-1][0], f"{method.knob} {fitting[-1][2]}")


def raise_until_met(tuned: Tuned, run_items: Callable[[Installer], Any], budget: Budget, tries: int = 12) -> Any:
    """Run the tuned method on the scored items; a threshold method whose measured speed-up falls short
    there is made more aggressive (×1.2 per try) until it meets the budget: speed only, never quality."""
    run = run_items(tuned.installer())
    if meets(budget, run.speedup) or tuned.method.settings is not None:
        return run
    start = tuned.value
    for _ in range(tries):
        tuned.value = min(tuned.value * 1.2, tuned.method.high)
        run = run_items(tuned.installer())
        if meets(budget, run.speedup) or tuned.value >= tuned.method.high:
            break
    tuned.notes.append(f"raised from {start:.4g} on the scored items to meet the budget")
    return run


def _unreachable(name: str, budget: Budget, best: float, how: str) -> BudgetError:
    return BudgetError(f"baseline {name} cannot reach budget {budget}: its maximum here is {best:.3f}x ({how}); "
                       "choose a smaller budget")
