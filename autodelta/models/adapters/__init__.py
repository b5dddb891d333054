"""Model families: one adapter module each, listed once here.

Adding a family (another diffusers DiT-style pipeline) is one new module with a
:class:`~autodelta.models.adapters.base.ModelAdapter` subclass and one line in ``ADAPTERS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autodelta.errors import ModelError
from autodelta.models.adapters.base import ModelAdapter
from autodelta.models.adapters.dit import ClassConditionalDiT
from autodelta.models.adapters.flux import Flux
from autodelta.models.adapters.pixart import PixArt
from autodelta.models.adapters.qwenimage import QwenImage
from autodelta.models.adapters.sd3 import StableDiffusion3

if TYPE_CHECKING:
    from autodelta.models.profile import Profile

ADAPTERS: tuple[type[ModelAdapter], ...] = (
    ClassConditionalDiT,
    PixArt,
    Flux,
    StableDiffusion3,
    QwenImage,
)


def supported_pipelines() -> tuple[str, ...]:
    """Every diffusers pipeline class some adapter runs."""
    return tuple(p for cls in ADAPTERS for p in cls.pipelines)


def transformer_classes(pipeline: str) -> tuple[str, ...]:
    """The transformer classes the family running ``pipeline`` calls (none for a pipeline no adapter runs)."""
    return next((cls.transformers for cls in ADAPTERS if pipeline in cls.pipelines), ())


def adapter_for(profile: Profile) -> ModelAdapter:
    """The adapter of the family whose pipelines include ``profile.pipeline``."""
    for cls in ADAPTERS:
        if profile.pipeline in cls.pipelines:
            if profile.transformer_class not in cls.transformers:
                raise ModelError(f"profile {profile.name}: a {profile.pipeline} calls a {' or '.join(cls.transformers)}, "
                                 f"not a {profile.transformer_class}; fix the transformer class or the pipeline")
            return cls(profile)
    known = ", ".join(supported_pipelines())
    raise ModelError(f"profile {profile.name}: pipeline {profile.pipeline!r} is not supported; use one of {known}")


__all__ = ["ADAPTERS", "ModelAdapter", "adapter_for", "supported_pipelines", "transformer_classes"]
