"""How run-time methods are installed on a pipeline and removed again, through the libraries' public API.

diffusers' ``apply_*`` functions with ``CacheMixin.cache_context`` opened by hand (DiT and
PixArt do not inherit ``CacheMixin``), and ``cache_dit.enable_cache``. Installers remove
exactly the hooks they added, found by comparing the hook registries before and after.
Every installer has one shape: pipeline in, :class:`Installed` (``reset`` before each
generation, ``remove`` at the end) out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

from autodelta.errors import ModelError
from autodelta.logs import quieted


class Installed:
    """What an installer returns: ``reset()`` before each generation, ``remove()`` at the end."""

    def __init__(self, reset: Callable[[], None], remove: Callable[[], None]) -> None:
        self.reset, self.remove = reset, remove


Installer = Callable[[Any], Installed]


def hook_names(modules: Sequence[Any]) -> set[tuple[int, str]]:
    from diffusers.hooks import HookRegistry

    return {(index, name) for index, module in enumerate(modules)
            for name in HookRegistry.check_if_exists_or_initialize(module).hooks}


def call_timestep(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
    """The timestep a transformer call was given (a tensor or a number; its first item for a batch)."""
    t = kwargs.get("timestep", args[1] if len(args) > 1 else 0)
    return float(t.reshape(-1)[0]) if hasattr(t, "reshape") else float(t)


def noise_share(pipe: Any, t: float) -> float:
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
        before = hook_names(modules)
        apply(transformer, make_config(pipe))
        added = hook_names(modules) - before
        registry = hooks.HookRegistry.check_if_exists_or_initialize(transformer)
        context = ExitStack()
        context.enter_context(CacheMixin.cache_context(transformer, "autodelta"))
        calls = [0]
        handle = None
        if step_context:
            def enter_step(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                context.close()
                context.enter_context(CacheMixin.cache_context(
                    transformer, "autodelta", step_index=calls[0], sigma=noise_share(pipe, call_timestep(args, kwargs)),
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


DBCACHE_FRONT = 8
"""cache-dit's default Fn: the blocks always computed before its residual test (F8B0)."""


def dbcache_front(pipe: Any) -> int:
    """Fn for this model: cache-dit's 8, or half the first block list where that holds fewer than 16 blocks
    (cache-dit refuses an Fn above the list's length, with an assertion)."""
    from autodelta.models.blocks import block_stack

    transformer = pipe.transformer
    first = len(getattr(transformer, block_stack(type(transformer).__name__).segments[0]))
    return min(DBCACHE_FRONT, max(1, first // 2))


def cache_dit_installer(threshold: float, taylorseer: bool = False) -> Installer:
    """cache-dit's DBCache (its defaults: F8B0, 8 warm-up steps; :func:`dbcache_front` on small models),
    optionally with its TaylorSeer calibrator."""

    def install(pipe: Any) -> Installed:
        try:
            import cache_dit
        except ImportError:
            raise ModelError("this baseline needs the cache-dit package; pip install cache-dit") from None
        quiet = ExitStack()
        quiet.enter_context(quieted("CACHE_DIT", "cache_dit", level=logging.ERROR))  # per-call INFO lines
        calibrator = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=1) if taylorseer else None
        config = cache_dit.DBCacheConfig(residual_diff_threshold=threshold, Fn_compute_blocks=dbcache_front(pipe))
        cache_dit.enable_cache(pipe, cache_config=config, calibrator_config=calibrator)

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
            self.value = int(call_timestep(args, kwargs))

        return transformer.register_forward_pre_hook(grab, with_kwargs=True)

    def __call__(self) -> int:
        return self.value
