"""The interface of a model family: what autodelta needs to know about a diffusers DiT-style pipeline.

Everything that differs between families (class-conditional DiT, text-conditioned
PixArt, …) lives behind this small interface, so the profiler, the evaluator, the
harness and the CLI never branch on a pipeline's name. A new family is one module
with one subclass, plus one line in :mod:`autodelta.models.adapters`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from autodelta.errors import ModelError

if TYPE_CHECKING:
    from autodelta.models.profile import Profile
    from autodelta.models.prompts import PromptEmbeddings
    from autodelta.models.sampling import StepSampler


class ModelAdapter(ABC):
    """One model family, bound to one profile."""

    name: ClassVar[str]
    """Short family name, as errors and docs say it."""
    pipelines: ClassVar[tuple[str, ...]]
    """The diffusers pipeline classes this family runs."""
    transformers: ClassVar[tuple[str, ...]]
    """The diffusers transformer classes those pipelines call (another one fails at its first step)."""
    text_conditioned: ClassVar[bool] = False
    """Conditions are prompt embeddings (indexed by the profile's condition ids), not class labels."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile

    @property
    def cfg_factor(self) -> int:
        """Transformer batch rows per item and step: 2 with classifier-free guidance (batched or as two calls)."""
        return 2 if self.profile.guidance_scale > 1.0 else 1

    def pipeline_components(self) -> dict[str, Any]:
        """Extra components to build the pipeline with offline (e.g. no text encoder)."""
        return {}

    def check_resolution(self, resolution: int | None) -> int:
        """The resolution to run at: the profile's unless the family allows others."""
        profile = self.profile
        if resolution is None or resolution == profile.resolution:
            return profile.resolution
        raise ModelError(f"{profile.name} runs at its trained resolution {profile.resolution} px only "
                         "(its position embedding is fixed); drop --resolution")

    def token_side(self, resolution: int | None = None) -> int:
        """Image tokens per side at ``resolution``: the latent side over the patch size."""
        profile = self.profile
        return profile.latent_size(self.check_resolution(resolution)) // int(profile.transformer_config.get(
            "patch_size", 1))

    def generation_bytes(self, resolution: int | None = None, element_bytes: int = 4) -> int:
        """Estimated peak activation bytes of generating one item (:func:`~autodelta.models.memory.generation_bytes`)."""
        from autodelta.models.memory import generation_bytes

        profile, config = self.profile, self.profile.transformer_config
        width = int(config.get("num_attention_heads", 1)) * int(config.get("attention_head_dim", 0)) or int(
            config.get("hidden_size", 0))
        channels = profile.vae.get("config", {}).get("block_out_channels") or [0]
        return generation_bytes(self.cfg_factor, self.token_side(resolution) ** 2, width, int(channels[0]),
                                self.check_resolution(resolution), element_bytes)

    def conditioning(self, override: str | os.PathLike[str] | None = None) -> Any:
        """What the condition ids of items refer to (``None``: they are class labels themselves)."""
        if override is not None:
            raise ModelError(f"--prompt-embeds is for text-conditioned models; {self.profile.name} is "
                             "class-conditional (use its class labels)")
        return None

    def num_conditions(self, conditioning: Any) -> int:
        """How many distinct conditions there are (class labels 0 … n-1)."""
        return int(self.profile.transformer_config.get("num_embeds_ada_norm", 1000))

    def check_conditions(self, conditions: list[int], conditioning: Any = None) -> list[int]:
        """``conditions`` if each names a condition that exists; a one-line error otherwise."""
        count = self.num_conditions(conditioning)
        what = "prompt-embedding indices" if self.text_conditioned else "class labels"
        if not conditions:
            raise ModelError(f"no {what} given; pass e.g. --class-labels 0,1")
        bad = [c for c in conditions if not 0 <= c < count]
        if bad:
            raise ModelError(f"{what} {bad} are out of range for {self.profile.name}: use 0..{count - 1}")
        return conditions

    def conditioning_id(self, conditioning: Any) -> str | None:
        """A content hash of ``conditioning`` for reference-cache keys (``None`` for class labels)."""
        return None

    @abstractmethod
    def example_inputs(self, batch: int, dtype: torch.dtype, seed: int, resolution: int | None) -> dict[str, Any]:
        """Transformer keyword inputs of one call, for profiling and tests."""

    @abstractmethod
    def call(self, pipe: Any, conditions: Sequence[int], seeds: Sequence[int], steps: int, guidance: float,
             resolution: int | None = None, conditioning: Any = None) -> Any:
        """One pipeline call, one image per (condition, seed) item, each with its own generator."""

    @abstractmethod
    def sampler(self, pipe: Any, conditions: Sequence[int], seeds: Sequence[int], resolution: int | None = None,
                conditioning: Any = None) -> StepSampler:
        """The pipeline's loop over these items, made step-addressable (see :mod:`autodelta.models.sampling`)."""


class PromptConditioned(ModelAdapter):
    """Families whose conditions are prompt embeddings: items name rows of an embeddings file (written
    where the text encoders exist) or of seeded stand-ins (:mod:`autodelta.models.prompts`)."""

    text_conditioned = True
    width_key: ClassVar[str] = "caption_channels"
    """The transformer config field that gives the prompt embeddings' width."""
    pooled_key: ClassVar[str | None] = None
    """The config field of the pooled embedding's width (FLUX), if the family takes one."""

    def conditioning(self, override: str | os.PathLike[str] | None = None) -> PromptEmbeddings:
        from autodelta.models.prompts import profile_prompt_embeddings

        profile = self.profile
        spec = dict(profile.prompt_spec)
        if spec.get("file"):
            spec["file"] = str(profile.local_file(spec["file"]))
        config = profile.transformer_config
        pooled = int(config[self.pooled_key]) if self.pooled_key else None
        return profile_prompt_embeddings(spec, int(config[self.width_key]), profile.name, override, pooled,
                                         self.width_key)

    def num_conditions(self, conditioning: Any) -> int:
        return len(conditioning if conditioning is not None else self.conditioning())

    def conditioning_id(self, conditioning: Any) -> str | None:
        return conditioning.identity() if conditioning is not None else None


class PackedLatents(PromptConditioned):
    """FLUX-style families (FLUX, Qwen-Image): 2x2 latent patches are packed into one image token."""

    def check_resolution(self, resolution: int | None) -> int:
        resolution = resolution or self.profile.resolution
        multiple = 2 * self.profile.vae_scale_factor
        if resolution % multiple:
            raise ModelError(f"resolution {resolution} is not a multiple of {multiple} for {self.profile.name}; "
                             "pick e.g. 512 or 1024")
        return int(resolution)

    def token_side(self, resolution: int | None = None) -> int:
        """Image tokens per side at ``resolution``."""
        return self.check_resolution(resolution) // (2 * self.profile.vae_scale_factor)
