"""Model profiles (shipped in ``autodelta/profiles/``, or any YAML path) → diffusers pipelines.

A profile says how to load a model (pretrained repo id, pipeline, scheduler, steps,
guidance), holds its transformer config so the architecture can be built offline
from config, and carries its measured cost profile (per-block MACs and latency).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import diffusers
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin

from autodelta.cost import CostModel
from autodelta.errors import ModelError
from autodelta.files import Fields, atomic_write, dump_yaml, read_yaml, shipped_dir
from autodelta.logs import quieted

if TYPE_CHECKING:
    from autodelta.adapters.base import ModelAdapter

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ModelError(f"dtype {name!r} is not supported; use one of fp32, bf16, fp16") from None


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


class PixelDecoder(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """Identity "VAE" for pixel-space models: ``DiTPipeline`` decodes through it unchanged."""

    @register_to_config
    def __init__(self, scaling_factor: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("_anchor", torch.zeros(1), persistent=False)  # gives the module a device/dtype

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        return DecoderOutput(sample=z) if return_dict else (z,)


@dataclass(frozen=True)
class Calibration:
    """Seeds of the calibration items (the search scores on these) and of the held-out items."""

    seeds: tuple[int, ...] = (0,)
    heldout_seeds: tuple[int, ...] = (1000, 1001)


@dataclass
class Profile:
    """One model: load spec, transformer config, calibration defaults and measured cost.

    Read from YAML by :func:`load_profile`, which checks every field's type; the model
    family's :attr:`adapter` owns everything that differs between DiT and PixArt.
    """

    name: str
    path: Path
    pipeline: str
    transformer_class: str
    transformer_config: dict[str, Any]
    scheduler: str
    scheduler_config: dict[str, Any]
    steps: int
    guidance_scale: float
    resolution: int
    pretrained: str | None = None
    weights: str | None = None
    classifier: str | None = None
    description: str = ""
    vae: dict[str, Any] = field(default_factory=dict)
    blocks_attr: str = "transformer_blocks"
    conditions: tuple[int, ...] = ()
    calibration: Calibration = field(default_factory=Calibration)
    prompt_spec: dict[str, Any] = field(default_factory=dict)
    quality_gate: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    document: dict[str, Any] = field(default_factory=dict, repr=False)  # the file as read, for write_cost

    @property
    def adapter(self) -> ModelAdapter:
        """The model family's adapter (class-conditional DiT, PixArt, …) for this profile."""
        from autodelta.adapters import adapter_for

        return adapter_for(self)

    @property
    def num_blocks(self) -> int:
        return int(self.transformer_config["num_layers"])

    @property
    def cfg_factor(self) -> int:
        return 2 if self.guidance_scale > 1.0 else 1

    @property
    def text_conditioned(self) -> bool:
        """Conditions are prompt embeddings (PixArt), not class labels (DiT)."""
        return self.adapter.text_conditioned

    @property
    def vae_scale_factor(self) -> int:
        if self.vae.get("kind", "identity") == "identity":
            return 1
        return int(2 ** (len(self.vae["config"]["block_out_channels"]) - 1))

    def local_file(self, relative: str) -> Path:
        """A file the profile names (weights, classifier, embeddings), relative to the profile."""
        return (self.path.parent / relative).resolve()

    def check_resolution(self, resolution: int | None) -> int:
        """The resolution to run at: the profile's, or ``resolution`` where the architecture allows it."""
        return self.adapter.check_resolution(resolution)

    def latent_size(self, resolution: int | None = None) -> int:
        """Latent side length at ``resolution`` pixels (default: the profile's)."""
        resolution = resolution or self.resolution
        multiple = self.vae_scale_factor * int(self.transformer_config.get("patch_size", 1))
        if resolution % multiple:
            raise ModelError(f"resolution {resolution} is not a multiple of {multiple} for {self.name}; "
                             "pick e.g. 256 or 512")
        return resolution // self.vae_scale_factor

    def cost_model(self) -> CostModel | None:
        """The profiled per-sample MACs as a :class:`CostModel`, or ``None`` if not profiled yet."""
        if not self.cost or "macs" not in self.cost:
            return None
        macs = self.cost["macs"]
        return CostModel(
            blocks=tuple(float(m) for m in macs["blocks"]),
            pre=float(macs["pre"]),
            post=float(macs["post"]),
            cfg_factor=self.cfg_factor,
        )

    # --- building ----------------------------------------------------------------
    def build_transformer(self, seed: int = 0) -> torch.nn.Module:
        """The transformer architecture from the stored config, random weights seeded by ``seed``."""
        cls = getattr(diffusers, self.transformer_class)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls.from_config(self.transformer_config).eval()

    def build_scheduler(self, name: str | None = None) -> Any:
        cls = _diffusers_class(name or self.scheduler, "scheduler")
        return cls.from_config(self.scheduler_config)

    def _build_vae(self, seed: int) -> torch.nn.Module:
        kind = self.vae.get("kind", "identity")
        if kind == "identity":
            return PixelDecoder(scaling_factor=float(self.vae.get("scaling_factor", 1.0)))
        if kind == "autoencoder_kl":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1)
                return diffusers.AutoencoderKL.from_config(self.vae["config"]).eval()
        raise ModelError(f"profile {self.name}: vae.kind {kind!r} is unknown; use 'identity' or 'autoencoder_kl'")

    def load_pipeline(self, random_weights: bool = False, dtype: torch.dtype = torch.float32,
                      scheduler: str | None = None, seed: int = 0) -> Any:
        """A ready pipeline: shipped weights, cached pretrained weights, or (asked for) random ones."""
        pipeline_cls = _diffusers_class(self.pipeline, "pipeline")
        extra = self.adapter.pipeline_components()  # e.g. PixArt runs without its text encoder
        if self.weights is not None:
            transformer = self.build_transformer(seed)
            transformer.load_state_dict(self._load_shipped_weights(), strict=True)
            pipe = pipeline_cls(transformer=transformer, vae=self._build_vae(seed), scheduler=self.build_scheduler(scheduler),
                                **extra)
        elif random_weights or self.pretrained is None:
            pipe = pipeline_cls(
                transformer=self.build_transformer(seed),
                vae=self._build_vae(seed),
                scheduler=self.build_scheduler(scheduler),
                **extra,
            )
        else:
            try:
                with quieted("diffusers", level=logging.ERROR):
                    pipe = pipeline_cls.from_pretrained(self.pretrained, local_files_only=True)
            except (OSError, ValueError) as exc:
                raise ModelError(
                    f"weights of {self.pretrained} are not in the local Hugging Face cache ({type(exc).__name__}); "
                    f"download them with `huggingface-cli download {self.pretrained}` or pass --random-weights "
                    "to run the same architecture with random weights"
                ) from None
            pipe.scheduler = self.build_scheduler(scheduler)
        if dtype != torch.float32:
            with quieted("diffusers", level=logging.ERROR):  # "modules to keep in fp32: []" is noise here
                pipe = pipe.to(dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _load_shipped_weights(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        assert self.weights is not None
        path = self.local_file(self.weights)
        if not path.exists():
            raise ModelError(
                f"weights file {path} of profile {self.name} is missing; restore it from git or retrain with "
                "`python scripts/train_tiny_dit.py`"
            )
        return load_file(str(path))

    def example_inputs(self, batch: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0,
                       resolution: int | None = None) -> dict[str, Any]:
        """Transformer keyword inputs at ``resolution`` (default: the profile's), for profiling and tests."""
        return self.adapter.example_inputs(batch, dtype, seed, resolution)

    def write_cost(self, cost: dict[str, Any]) -> None:
        """Replace the ``cost`` section of the profile file, atomically."""
        doc = dict(self.document)
        doc["cost"] = cost
        atomic_write(self.path, dump_yaml(doc))
        self.cost = cost
        self.document = doc


def _diffusers_class(name: str, what: str) -> Any:
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise ModelError(f"{what} class {name!r} is not in diffusers {diffusers.__version__}; check the profile")
    return cls


def profile_dirs() -> list[Path]:
    """Where profiles are found by name: ``$AUTODELTA_PROFILES`` (if set), then the shipped ones."""
    dirs = [Path(p) for p in os.environ.get("AUTODELTA_PROFILES", "").split(os.pathsep) if p]
    return [*dirs, shipped_dir("profiles")]


def known_profiles() -> list[str]:
    return sorted({p.stem for folder in profile_dirs() if folder.is_dir() for p in folder.glob("*.yaml")})


def load_profile(name_or_path: str | os.PathLike[str]) -> Profile:
    """A profile by name (``dit-xl``) or by path to a YAML file; every field's type is checked."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} and candidate.exists():
        path = candidate
    else:
        found = [folder / f"{name_or_path}.yaml" for folder in profile_dirs()]
        existing = [p for p in found if p.exists()]
        if not existing:
            raise ModelError(
                f"unknown model {str(name_or_path)!r}; known models: {', '.join(known_profiles())} "
                "(or give the path to a profile YAML)"
            )
        path = existing[0]
    return parse_profile(read_yaml(path, "profile"), path)


def parse_profile(doc: Any, path: Path) -> Profile:
    """A :class:`Profile` from a profile document; a missing or mistyped field is one line naming it."""
    f = Fields(doc, str(path), ModelError, hint=" (compare with the shipped profile dit-xl.yaml)")
    transformer, scheduler = f.section("transformer"), f.section("scheduler")
    calibration = f.section("calibration", optional=True)
    default = Calibration()
    profile = Profile(
        name=f.get("name", str),
        path=path,
        pipeline=f.get("pipeline", str),
        transformer_class=transformer.get("class", str),
        transformer_config=dict(transformer.get("config", dict)),
        scheduler=scheduler.get("class", str),
        scheduler_config=dict(scheduler.get("config", dict, optional=True, default={})),
        steps=f.get("steps", int),
        guidance_scale=f.get("guidance_scale", float),
        resolution=f.get("resolution", int),
        pretrained=f.get("pretrained", str, optional=True),
        weights=f.get("weights", str, optional=True),
        classifier=f.get("classifier", str, optional=True),
        description=f.get("description", str, optional=True, default=""),
        vae=dict(f.get("vae", dict, optional=True, default={})),
        blocks_attr=f.get("blocks_attr", str, optional=True, default="transformer_blocks"),
        conditions=f.ints("conditions", optional=True),
        calibration=Calibration(
            seeds=calibration.ints("seeds", optional=True) or default.seeds,
            heldout_seeds=calibration.ints("heldout_seeds", optional=True) or default.heldout_seeds,
        ),
        prompt_spec=dict(f.get("prompt_embeddings", dict, optional=True, default={})),
        quality_gate=f.get("quality_gate", dict, optional=True),
        cost=f.get("cost", dict, optional=True),
        document=dict(doc),
    )
    if "num_layers" not in profile.transformer_config:
        raise ModelError(f"{path}: field 'transformer.config.num_layers' is missing; add the block count")
    profile.adapter  # noqa: B018 - an unknown pipeline class is refused when the profile is read
    return profile
