"""A model profile: how to build and load one model, its calibration items and measured cost.

A profile is data read from YAML (or discovered from a pipeline folder); building the
pipeline and counting its cost live in :mod:`autodelta.models.pipelines` and
:mod:`autodelta.models.profiler`, which the profile's convenience methods call."""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autodelta.errors import ModelError
from autodelta.files import Fields, atomic_write, dump_yaml
from autodelta.models.devices import DTYPES
from autodelta.plan.cost import CostModel

if TYPE_CHECKING:
    import torch

    from autodelta.models.adapters.base import ModelAdapter
    from autodelta.models.blocks import BlockStack


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
    blocks_attr: str | None = None  # the block list, for a transformer class autodelta does not know
    conditions: tuple[int, ...] = ()
    calibration: Calibration = field(default_factory=Calibration)
    prompt_spec: dict[str, Any] = field(default_factory=dict)
    quality_gate: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    document: dict[str, Any] = field(default_factory=dict, repr=False)  # the file as read, for write_cost
    source: str | None = None  # a pipeline folder or hub id the profile was discovered from (autodelta.models.discover)
    origin: str = ""  # what load_profile was given (name, YAML path, folder, hub id): how to load it again
    gpu_dtype: str = "fp16"  # the model's own precision on a GPU (what --dtype auto picks there)

    @property
    def pretrained_id(self) -> str | None:
        """The hub id of the weights, or ``None`` for a local folder (never an absolute local path)."""
        if self.pretrained is None or self.source is None:
            return self.pretrained
        return self.source if not Path(self.source).exists() else None

    @property
    def schedule_source(self) -> str | None:
        """What a schedule records as its model's origin: nothing for a profile found by name, else the
        path, folder or hub id as given if relative, only its last part if absolute (no local paths)."""
        if self.origin in ("", self.name):
            return None
        return Path(self.origin).name if Path(self.origin).is_absolute() else self.origin

    @functools.cached_property
    def adapter(self) -> ModelAdapter:
        """The model family's adapter (class-conditional DiT, PixArt, …) for this profile, made once (it reads
        the profile's fields live, so a changed guidance scale still counts)."""
        from autodelta.models.adapters import adapter_for

        return adapter_for(self)

    @property
    def stack(self) -> BlockStack:
        """The transformer's blocks as one stack (FLUX: double-stream, then single-stream blocks)."""
        from autodelta.models.blocks import block_stack

        return block_stack(self.transformer_class, self.blocks_attr)

    @property
    def num_blocks(self) -> int:
        return self.stack.count(self.transformer_config)

    @property
    def cfg_factor(self) -> int:
        """Transformer batch rows per item and step (2 with classifier-free guidance)."""
        return self.adapter.cfg_factor

    @property
    def text_conditioned(self) -> bool:
        """Conditions are prompt embeddings (PixArt), not class labels (DiT)."""
        return self.adapter.text_conditioned

    @property
    def vae_scale_factor(self) -> int:
        kind = self.vae.get("kind", "identity")
        if kind == "identity":
            return 1
        if kind == "space_to_depth":
            return int(self.vae.get("factor", 2))
        if kind == "autoencoder_kl_qwenimage":
            return int(2 ** len(self.vae["config"].get("temperal_downsample") or []))
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
        try:
            return CostModel(blocks=tuple(float(m) for m in macs["blocks"]), pre=float(macs["pre"]),
                             post=float(macs["post"]), cfg_factor=self.cfg_factor)
        except ModelError as exc:
            where = self.origin or self.name
            raise ModelError(f"{where}: {str(exc).split('; ')[0]}; count them again with autodelta profile --model "
                             f"{where} --write") from None

    # --- building (torch and diffusers are imported only here, so `rule` and `show` start fast) ---
    def build_transformer(self, seed: int = 0) -> torch.nn.Module:
        """The transformer architecture from the stored config, random weights seeded by ``seed``."""
        from autodelta.models.pipelines import build_transformer

        return build_transformer(self, seed)

    def build_scheduler(self, name: str | None = None) -> Any:
        """The profile's scheduler (or the diffusers scheduler class ``name``) from its stored config."""
        from autodelta.models.pipelines import build_scheduler

        return build_scheduler(self, name)

    def load_pipeline(self, random_weights: bool = False, dtype: torch.dtype | None = None,
                      scheduler: str | None = None, seed: int = 0, device: str | torch.device | None = None) -> Any:
        """A ready pipeline on ``device``: shipped weights, cached pretrained weights, or (asked for) random ones."""
        from autodelta.models.pipelines import load_pipeline

        return load_pipeline(self, random_weights=random_weights, dtype=dtype, scheduler=scheduler, seed=seed,
                             device=device)

    def require_cost(self) -> CostModel:
        """The profiled cost model; a discovered model is counted now (fvcore), a YAML profile must say it."""
        cost = self.cost_model()
        if cost is None and self.source is not None:
            from autodelta.models.profiler import profile_macs

            measured = profile_macs(self.build_transformer(), self.example_inputs(batch=1), self.blocks_attr,
                                    progress=True)
            self.cost = {"resolution": self.resolution, **measured.as_dict()}
            cost = self.cost_model()
        if cost is None:
            raise ModelError(f"profile {self.name} has no cost yet; run `autodelta profile --model "
                             f"{self.origin or self.name} --write`")
        return cost

    def cost_at(self, resolution: int | None) -> CostModel:
        """The cost model at ``resolution`` (px): the profiled one where it was counted there, else counted now
        (fvcore on the architecture built from config): attention's share, so a speed-up, changes with size."""
        counted = int((self.cost or {}).get("resolution") or self.resolution)
        if resolution is None or resolution == counted:
            return self.require_cost()
        from autodelta.models.profiler import profile_macs

        measured = profile_macs(self.build_transformer(), self.example_inputs(batch=1, resolution=resolution),
                                self.blocks_attr, progress=True).as_dict()["macs"]
        return CostModel(blocks=tuple(measured["blocks"]), pre=measured["pre"], post=measured["post"],
                         cfg_factor=self.cfg_factor)

    def example_inputs(self, batch: int = 1, dtype: torch.dtype | None = None, seed: int = 0,
                       resolution: int | None = None) -> dict[str, Any]:
        """Transformer keyword inputs at ``resolution`` (default: the profile's), for profiling and tests."""
        import torch

        return self.adapter.example_inputs(batch, dtype or torch.float32, seed, resolution)

    def write_cost(self, cost: dict[str, Any], out: str | os.PathLike[str] | None = None) -> Path:
        """The profile with ``cost`` as its cost section, written atomically to ``out`` (default: its own file)."""
        doc = dict(self.document)
        doc["cost"] = cost
        target = Path(out) if out is not None else self.path
        atomic_write(target, dump_yaml(doc))
        self.cost = cost
        self.document = doc
        return target


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
        blocks_attr=f.get("blocks_attr", str, optional=True),
        conditions=f.ints("conditions", optional=True),
        calibration=Calibration(
            seeds=calibration.ints("seeds", optional=True) or default.seeds,
            heldout_seeds=calibration.ints("heldout_seeds", optional=True) or default.heldout_seeds,
        ),
        prompt_spec=dict(f.get("prompt_embeddings", dict, optional=True, default={})),
        quality_gate=f.get("quality_gate", dict, optional=True),
        cost=f.get("cost", dict, optional=True),
        document=dict(doc),
        gpu_dtype=f.get("gpu_dtype", str, optional=True, default="fp16"),
    )
    if profile.gpu_dtype not in DTYPES:
        raise ModelError(f"{path}: field 'gpu_dtype' must be fp16, bf16 or fp32")
    if not isinstance(profile.transformer_config.get("num_layers"), int):
        raise ModelError(f"{path}: field 'transformer.config.num_layers' must be the block count (an integer)")
    checks = [("steps", 1 <= profile.steps <= 10_000, "in [1, 10000]"),
              ("guidance_scale", math.isfinite(profile.guidance_scale) and profile.guidance_scale >= 0,
               "a finite number >= 0"),
              ("resolution", 1 <= profile.resolution <= 16_384, "in [1, 16384] pixels"),
              ("transformer.config.num_layers", 1 <= profile.num_blocks <= 4096, "in [1, 4096]")]
    for name, ok, rule in checks:
        if not ok:
            raise ModelError(f"{path}: field '{name}' must be {rule}")
    return profile
