"""Model profiles (``profiles/<name>.yaml``) → diffusers pipelines.

A profile says how to load a model (pretrained repo id, pipeline, scheduler, steps,
guidance), holds its transformer config so the architecture can be built offline
from config, and carries its measured cost profile (per-block MACs and latency).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin

from autodelta.cost import CostModel
from autodelta.errors import ModelError
from autodelta.files import atomic_write, dump_yaml, read_yaml

PROFILE_DIR = Path(os.environ.get("AUTODELTA_PROFILES", Path(__file__).resolve().parent.parent / "profiles"))

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ModelError(f"dtype {name!r} is not supported; use one of fp32, bf16, fp16") from None


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


class PixelDecoder(ModelMixin, ConfigMixin):
    """Identity "VAE" for pixel-space models: ``DiTPipeline`` decodes through it unchanged."""

    @register_to_config
    def __init__(self, scaling_factor: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("_anchor", torch.zeros(1), persistent=False)  # gives the module a device/dtype

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        return DecoderOutput(sample=z) if return_dict else (z,)


@dataclass
class Profile:
    """One model: load spec, transformer config, calibration defaults and measured cost."""

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
    vae: dict[str, Any] = field(default_factory=dict)
    blocks_attr: str = "transformer_blocks"
    conditions: list[Any] = field(default_factory=list)
    cost: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def num_blocks(self) -> int:
        return int(self.transformer_config["num_layers"])

    @property
    def quality_gate(self) -> dict[str, Any] | None:
        """What the training script measured on full-compute samples (tiny-dit), if anything."""
        return self.raw.get("quality_gate")

    @property
    def cfg_factor(self) -> int:
        return 2 if self.guidance_scale > 1.0 else 1

    @property
    def text_conditioned(self) -> bool:
        """Conditions are prompt embeddings (PixArt), not class labels (DiT)."""
        return self.pipeline == "PixArtAlphaPipeline"

    @property
    def vae_scale_factor(self) -> int:
        if self.vae.get("kind", "identity") == "identity":
            return 1
        return 2 ** (len(self.vae["config"]["block_out_channels"]) - 1)

    def check_resolution(self, resolution: int | None) -> int:
        """The resolution to run at: the profile's, or ``resolution`` where the architecture allows it."""
        if resolution is None or resolution == self.resolution:
            return self.resolution
        if not self.text_conditioned:
            raise ModelError(f"{self.name} runs at its trained resolution {self.resolution} px only "
                             "(DiT's position embedding is fixed); drop --resolution")
        self.latent_size(resolution)
        return int(resolution)

    def latent_size(self, resolution: int | None = None) -> int:
        """Latent side length at ``resolution`` pixels (default: the profile's)."""
        resolution = resolution or self.resolution
        if resolution % (self.vae_scale_factor * int(self.transformer_config.get("patch_size", 1))):
            raise ModelError(f"resolution {resolution} is not a multiple of "
                             f"{self.vae_scale_factor * int(self.transformer_config.get('patch_size', 1))} "
                             f"for {self.name}; pick e.g. 256 or 512")
        return resolution // self.vae_scale_factor

    def prompt_embeddings(self, override: str | os.PathLike[str] | None = None) -> Any:
        """Calibration prompt embeddings of a text-conditioned profile (see :mod:`autodelta.prompts`)."""
        from autodelta.prompts import profile_prompt_embeddings

        spec = dict(self.raw.get("prompt_embeddings") or {})
        if spec.get("file"):
            spec["file"] = str((self.path.parent / spec["file"]).resolve())
        return profile_prompt_embeddings(spec, int(self.transformer_config["caption_channels"]), self.name, override)

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
        # text-conditioned pipelines run without their text encoder when given prompt embeddings
        no_text = {"tokenizer": None, "text_encoder": None} if self.text_conditioned else {}
        if self.weights is not None:
            transformer = self.build_transformer(seed)
            transformer.load_state_dict(self._load_shipped_weights(), strict=True)
            pipe = pipeline_cls(transformer=transformer, vae=self._build_vae(seed), scheduler=self.build_scheduler(scheduler),
                                **no_text)
        elif random_weights or self.pretrained is None:
            pipe = pipeline_cls(
                transformer=self.build_transformer(seed),
                vae=self._build_vae(seed),
                scheduler=self.build_scheduler(scheduler),
                **no_text,
            )
        else:
            try:
                previous = diffusers.utils.logging.get_verbosity()
                diffusers.utils.logging.set_verbosity_error()
                try:
                    pipe = pipeline_cls.from_pretrained(self.pretrained, local_files_only=True)
                finally:
                    diffusers.utils.logging.set_verbosity(previous)
            except (OSError, ValueError) as exc:
                raise ModelError(
                    f"weights of {self.pretrained} are not in the local Hugging Face cache ({type(exc).__name__}); "
                    f"download them with `huggingface-cli download {self.pretrained}` or pass --random-weights "
                    "to run the same architecture with random weights"
                ) from None
            pipe.scheduler = self.build_scheduler(scheduler)
        if dtype != torch.float32:
            previous = diffusers.utils.logging.get_verbosity()
            diffusers.utils.logging.set_verbosity_error()  # "modules to keep in fp32: []" is noise here
            try:
                pipe = pipe.to(dtype=dtype)
            finally:
                diffusers.utils.logging.set_verbosity(previous)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _load_shipped_weights(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        path = (self.path.parent / self.weights).resolve()
        if not path.exists():
            raise ModelError(
                f"weights file {path} of profile {self.name} is missing; restore it from git or retrain with "
                "`python scripts/train_tiny_dit.py`"
            )
        return load_file(str(path))

    def example_inputs(self, batch: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0,
                       resolution: int | None = None) -> dict[str, Any]:
        """Transformer keyword inputs at ``resolution`` (default: the profile's), for profiling and tests."""
        cfg = self.transformer_config
        size = int(cfg["sample_size"]) if self.pipeline == "DiTPipeline" else self.latent_size(resolution)
        gen = torch.Generator().manual_seed(seed)
        inputs: dict[str, Any] = {
            "hidden_states": torch.randn(batch, int(cfg["in_channels"]), size, size, generator=gen).to(dtype),
            "timestep": torch.full((batch,), 500, dtype=torch.long),
        }
        if self.pipeline == "DiTPipeline":
            inputs["class_labels"] = torch.arange(batch, dtype=torch.long) % int(cfg.get("num_embeds_ada_norm", 1000))
        elif self.text_conditioned:
            embeddings = self.prompt_embeddings().pipeline_kwargs(range(batch), dtype)
            inputs["encoder_hidden_states"] = embeddings["prompt_embeds"]
            inputs["encoder_attention_mask"] = embeddings["prompt_attention_mask"]
            inputs["added_cond_kwargs"] = pixart_micro_conditions(self, size * self.vae_scale_factor, batch, dtype)
        else:
            raise ModelError(f"profile {self.name}: example inputs for {self.pipeline} are not supported; "
                             "use a DiTPipeline or PixArtAlphaPipeline profile")
        return inputs

    def write_cost(self, cost: dict[str, Any]) -> None:
        """Replace the ``cost`` section of the profile file, atomically."""
        doc = dict(self.raw)
        doc["cost"] = cost
        atomic_write(self.path, dump_yaml(doc))
        self.cost = cost
        self.raw = doc


def pixart_micro_conditions(profile: Profile, resolution: int, batch: int, dtype: torch.dtype,
                            device: Any = "cpu") -> dict[str, torch.Tensor | None]:
    """PixArt's resolution/aspect-ratio conditions, exactly as ``PixArtAlphaPipeline`` builds them."""
    if int(profile.transformer_config["sample_size"]) != 128:
        return {"resolution": None, "aspect_ratio": None}
    size = torch.tensor([resolution, resolution]).repeat(batch, 1).to(dtype=dtype, device=device)
    ratio = torch.tensor([1.0]).repeat(batch, 1).to(dtype=dtype, device=device)
    return {"resolution": size, "aspect_ratio": ratio}


def _diffusers_class(name: str, what: str) -> Any:
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise ModelError(f"{what} class {name!r} is not in diffusers {diffusers.__version__}; check the profile")
    return cls


def known_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | os.PathLike[str]) -> Profile:
    """A profile by name (``dit-xl``) or by path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} and candidate.exists():
        path = candidate
    else:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ModelError(
                f"unknown model {str(name_or_path)!r}; known models: {', '.join(known_profiles())} "
                "(or give the path to a profile YAML)"
            )
    doc = read_yaml(path, "profile")
    try:
        return Profile(
            name=doc["name"],
            path=path,
            pipeline=doc["pipeline"],
            transformer_class=doc["transformer"]["class"],
            transformer_config=dict(doc["transformer"]["config"]),
            scheduler=doc["scheduler"]["class"],
            scheduler_config=dict(doc["scheduler"].get("config") or {}),
            steps=int(doc["steps"]),
            guidance_scale=float(doc["guidance_scale"]),
            resolution=int(doc["resolution"]),
            pretrained=doc.get("pretrained"),
            weights=doc.get("weights"),
            vae=dict(doc.get("vae") or {}),
            blocks_attr=doc.get("blocks_attr", "transformer_blocks"),
            conditions=list(doc.get("conditions") or []),
            cost=doc.get("cost"),
            raw=doc,
        )
    except (KeyError, TypeError) as exc:
        raise ModelError(f"profile {path} lacks field {exc}; compare it with profiles/dit-xl.yaml") from None
