"""Building a profile's pipeline: transformer from config, scheduler, decoder, weights, dtype.

Kept apart from :mod:`autodelta.models` (what a model *is*) because it needs torch and
diffusers, which take seconds to import; commands that only read profiles and
schedules (``rule``, ``show``, every input error) never import them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import diffusers
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin

from autodelta.errors import ModelError
from autodelta.logs import quieted
from autodelta.models.checkpoint import check_weights
from autodelta.models.hub import pipeline_folder
from autodelta.models.memory import available_memory

if TYPE_CHECKING:
    from autodelta.models.profile import Profile


class PixelDecoder(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """Identity "VAE" for pixel-space models: ``DiTPipeline`` decodes through it unchanged."""

    @register_to_config
    def __init__(self, scaling_factor: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("_anchor", torch.zeros(1), persistent=False)  # gives the module a device/dtype

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        return DecoderOutput(sample=z) if return_dict else (z,)


class SpaceToDepthDecoder(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """Lossless "VAE" of tiny-flux: latents are pixels folded ``factor x factor`` into channels.

    ``FluxPipeline`` reads its scale factor from ``block_out_channels`` (one level per halving)
    and un-scales with ``scaling_factor`` and ``shift_factor``; this gives it all three.
    """

    @register_to_config
    def __init__(self, factor: int = 2, block_out_channels: tuple[int, ...] = (1, 1), latent_channels: int = 4,
                 scaling_factor: float = 1.0, shift_factor: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("_anchor", torch.zeros(1), persistent=False)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        pixels = torch.nn.functional.pixel_shuffle(z, int(self.config["factor"]))
        return DecoderOutput(sample=pixels) if return_dict else (pixels,)


def _diffusers_class(name: str, what: str) -> Any:
    """A diffusers class by name that really is a ``what`` (scheduler or pipeline)."""
    cls = getattr(diffusers, name, None) if name.isidentifier() else None
    base = {"scheduler": diffusers.SchedulerMixin, "pipeline": diffusers.DiffusionPipeline}[what]
    if cls is None or not isinstance(cls, type) or not issubclass(cls, base):
        raise ModelError(f"{what} class {name!r} is not a diffusers {what} in diffusers {diffusers.__version__}; "
                         f"use e.g. {'DPMSolverMultistepScheduler' if what == 'scheduler' else 'DiTPipeline'}")
    return cls



def _built(cls: Any, config: dict[str, Any], what: str, profile: Profile) -> Any:
    """``cls.from_config(config)``; a config it cannot build is one line naming the profile."""
    try:
        with quieted("diffusers", level=logging.ERROR):
            return cls.from_config(config)
    except Exception as exc:  # a broken config can fail anywhere in the constructor: say so in one line
        reason = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise ModelError(f"profile {profile.name}: its {what} config does not build a {cls.__name__} "
                         f"({type(exc).__name__}: {reason}); fix the config or re-save the pipeline") from None


def check_fits(profile: Profile, cls: Any) -> Any:
    """Build the transformer on the meta device (nothing allocated) and refuse it when its parameters
    would not fit in the memory this machine has left; the meta model, for further checks."""
    with torch.device("meta"):
        model = _built(cls, profile.transformer_config, "transformer", profile)
    count = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    need, free = 4 * count, available_memory()
    if free is not None and need > free:
        raise ModelError(f"profile {profile.name}: its transformer has {count / 1e9:.2f} G parameters, "
                         f"{need / 2**30:.1f} GiB in fp32, more than the {free / 2**30:.1f} GiB free here; check its "
                         "config (num_layers, num_embeds_ada_norm, widths)")
    return model


def _transformer_class(profile: Profile) -> Any:
    cls: Any = getattr(diffusers, profile.transformer_class, None) if profile.transformer_class.isidentifier() else None
    if not isinstance(cls, type) or not issubclass(cls, ModelMixin):
        raise ModelError(f"profile {profile.name}: transformer class {profile.transformer_class!r} is not a diffusers "
                         "model; use e.g. DiTTransformer2DModel or PixArtTransformer2DModel")
    return cls


def build_transformer(profile: Profile, seed: int = 0) -> torch.nn.Module:
    """The transformer architecture from the stored config, random weights seeded by ``seed``.

    Built first on the meta device (:func:`check_fits`), so a config that cannot build or would
    not fit is refused before any memory is allocated.
    """
    cls = _transformer_class(profile)
    check_fits(profile, cls)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: torch.nn.Module = _built(cls, profile.transformer_config, "transformer", profile)
        return model.eval()


def build_scheduler(profile: Profile, name: str | None = None) -> Any:
    """The profile's scheduler, or the diffusers scheduler class ``name``, from the stored config."""
    cls = _diffusers_class(name or profile.scheduler, "scheduler")
    return cls.from_config(profile.scheduler_config)

def _build_vae(profile: Profile, seed: int) -> torch.nn.Module:
    kind = profile.vae.get("kind", "identity")
    if kind == "identity":
        return PixelDecoder(scaling_factor=float(profile.vae.get("scaling_factor", 1.0)))
    if kind == "autoencoder_kl":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            vae: torch.nn.Module = _built(diffusers.AutoencoderKL, profile.vae["config"], "vae", profile)
            return vae.eval()
    if kind == "autoencoder_kl_qwenimage":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            qwen: torch.nn.Module = _built(diffusers.AutoencoderKLQwenImage, profile.vae["config"], "vae", profile)
            return qwen.eval()
    if kind == "space_to_depth":
        factor = profile.vae_scale_factor
        return SpaceToDepthDecoder(factor=factor, block_out_channels=(1,) * (factor.bit_length()),
                                   latent_channels=factor * factor)
    raise ModelError(f"profile {profile.name}: vae.kind {kind!r} is unknown; use 'identity', 'space_to_depth', "
                     "'autoencoder_kl' or 'autoencoder_kl_qwenimage'")

def check_pretrained(profile: Profile) -> None:
    """Before a pretrained transformer loads: it fits in memory, and the weights in its folder (or the hub id's
    cached snapshot) are the ones its config builds (:func:`~autodelta.models.checkpoint.check_weights`)."""
    meta = check_fits(profile, _transformer_class(profile))
    folder = pipeline_folder(profile.pretrained or "")
    if folder is not None:
        check_weights(meta, folder / "transformer")


def load_pipeline(profile: Profile, random_weights: bool = False, dtype: torch.dtype | None = None,
                  scheduler: str | None = None, seed: int = 0, device: str | torch.device | None = None) -> Any:
    """A ready pipeline: shipped weights, cached pretrained weights, or (asked for) random ones."""
    pipeline_cls = _diffusers_class(profile.pipeline, "pipeline")
    extra = profile.adapter.pipeline_components()  # e.g. PixArt runs without its text encoder
    if profile.weights is not None:
        transformer = build_transformer(profile, seed)
        transformer.load_state_dict(_load_shipped_weights(profile, transformer.state_dict()), strict=True)
        pipe = pipeline_cls(transformer=transformer, vae=_build_vae(profile, seed), scheduler=build_scheduler(profile, scheduler),
                            **extra)
    elif random_weights or profile.pretrained is None:
        pipe = pipeline_cls(
            transformer=build_transformer(profile, seed),
            vae=_build_vae(profile, seed),
            scheduler=build_scheduler(profile, scheduler),
            **extra,
        )
    else:
        check_pretrained(profile)
        try:
            with quieted("diffusers", level=logging.ERROR):
                pipe = pipeline_cls.from_pretrained(profile.pretrained, local_files_only=True, **extra)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"weights of {profile.pretrained} are not in the local Hugging Face cache ({type(exc).__name__}); "
                f"download them with `huggingface-cli download {profile.pretrained}` or pass --random-weights "
                "to run the same architecture with random weights"
            ) from None
        except Exception as exc:  # a folder whose files disagree with each other: one line, not diffusers' traceback
            reason = str(exc).splitlines()[0][:160] if str(exc) else ""
            raise ModelError(f"{profile.pretrained} does not load as a {profile.pipeline} ({type(exc).__name__}: "
                             f"{reason}); check its model_index.json and configs, or re-save the pipeline") from None
        pipe.scheduler = build_scheduler(profile, scheduler)
    if (dtype is not None and dtype != torch.float32) or (device is not None and torch.device(device).type != "cpu"):
        with quieted("diffusers", level=logging.ERROR):  # "modules to keep in fp32: []" is noise here
            pipe = pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe

LABEL_ROWS = "label_rows"  # safetensors metadata: the label-table rows a compact weights file keeps


def compact_label_tables(tensors: dict[str, torch.Tensor], rows: Sequence[int]) -> tuple[dict[str, torch.Tensor],
                                                                                         dict[str, str]]:
    """Keep only ``rows`` of every adaLN-Zero label table (DiT keeps a 1001-row table in each block; a digit
    model uses 11 rows), with the metadata :func:`_load_shipped_weights` needs to put them back."""
    index = torch.tensor(list(rows))
    compact = {k: v[index].contiguous() if k.endswith("class_embedder.embedding_table.weight") else v
               for k, v in tensors.items()}
    return compact, {LABEL_ROWS: ",".join(str(r) for r in rows)}


def _load_shipped_weights(profile: Profile, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    assert profile.weights is not None
    path = profile.local_file(profile.weights)
    if not path.exists():
        raise ModelError(
            f"weights file {path} of profile {profile.name} is missing; restore it from git or retrain with "
            "`python scripts/train_tiny_dit.py`"
        )
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as handle:
        rows = (handle.metadata() or {}).get(LABEL_ROWS)
    if rows:  # a compact file: label rows the model never asks for are zero
        index = torch.tensor([int(r) for r in rows.split(",")])
        for key, value in tensors.items():
            if key.endswith("class_embedder.embedding_table.weight") and key in expected:
                table = torch.zeros(expected[key].shape, dtype=value.dtype)
                table[index] = value
                tensors[key] = table
    return tensors
