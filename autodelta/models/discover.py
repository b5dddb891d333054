"""A profile from a diffusers pipeline folder (or a hub id in the local cache): no YAML to write.

Everything a profile needs is in the folder's JSON files (``model_index.json``, the
transformer, scheduler and VAE configs) and in the pipeline class itself (its default
steps and guidance). The cost is counted on first use (fvcore on the architecture built
from config); ``autodelta profile --model DIR --write my.yaml`` saves the whole profile.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from autodelta.errors import AutodeltaError, ModelError
from autodelta.files import read_bounded
from autodelta.models.profile import Profile, parse_profile

logger = logging.getLogger(__name__)

MAX_JSON_BYTES = 4 * 2**20
"""Largest config file read from a pipeline folder (diffusers' are a few KB)."""
LIMITS: dict[str, tuple[int, int]] = {
    "sample_size": (1, 16384), "patch_size": (1, 64), "num_layers": (1, 4096), "num_single_layers": (0, 4096),
    "num_attention_heads": (1, 1024), "attention_head_dim": (1, 16384), "in_channels": (1, 4096),
    "out_channels": (1, 4096), "num_embeds_ada_norm": (1, 1_000_000), "caption_channels": (1, 65536),
    "cross_attention_dim": (1, 65536), "joint_attention_dim": (1, 65536), "pooled_projection_dim": (1, 65536),
    "latent_channels": (1, 4096), "num_train_timesteps": (1, 1_000_000), "layers_per_block": (1, 64),
    "norm_num_groups": (1, 4096), "pos_embed_max_size": (1, 65536),
}
"""Sane ranges of the integer fields a pipeline folder's configs give (anything beyond is a broken file)."""

NULL_CLASS = 1000
"""DiTPipeline's unconditional label: a model with fewer classes cannot be guided by it."""
CLASS_SPREAD = 10
"""Class-conditional models are calibrated on this many class labels spread over all classes."""
PROMPT_TOKENS = {"PixArtAlphaPipeline": 120, "PixArtSigmaPipeline": 300, "FluxPipeline": 512,
                 "StableDiffusion3Pipeline": 333, "QwenImagePipeline": 512}
"""Stand-in prompt length per pipeline (its own ``max_sequence_length``) when no embeddings are given."""
DEFAULT_SAMPLE_SIZE = {"FluxPipeline": 128, "QwenImagePipeline": 128}
"""Latent side of a pipeline's default resolution where its transformer config does not say it (FLUX: 1024 px)."""
TEXT_WIDTH_KEYS = ("caption_channels", "joint_attention_dim")
"""Transformer config fields that mark a text-conditioned model (PixArt, FLUX)."""


def folder_transformer(folder: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
    """A pipeline folder's transformer class and config, from ``transformer/config.json`` alone (no diffusers
    import: ``show`` reads a stack's layout in a fraction of a second)."""
    doc = _json(Path(folder) / "transformer" / "config.json")
    name = doc.get("_class_name")
    if not isinstance(name, str):
        raise ModelError(f"{Path(folder) / 'transformer' / 'config.json'}: no _class_name; re-save the pipeline")
    return name, _config(doc)


def _json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(read_bounded(path, "config", MAX_JSON_BYTES, kind="JSON"))
    except AutodeltaError as exc:
        raise ModelError(str(exc)) from None
    except FileNotFoundError:
        raise ModelError(f"{path} is missing; a diffusers pipeline folder has one per component") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} cannot be read as JSON ({type(exc).__name__}); re-save the pipeline") from None
    if not isinstance(doc, dict):
        raise ModelError(f"{path} is not a JSON object; re-save the pipeline")
    return doc


def _config(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def _pipeline_defaults(pipeline: str, guidance_embeds: bool = False) -> tuple[int, float]:
    """The pipeline's own default ``num_inference_steps`` and guidance: its ``true_cfg_scale`` where it has one
    and the transformer takes no guidance input (FLUX without ``guidance_embeds``, Qwen-Image), else its
    ``guidance_scale`` (``None`` there: no guidance)."""
    import inspect

    import diffusers

    cls = getattr(diffusers, pipeline, None)
    if cls is None:
        raise ModelError(f"pipeline class {pipeline!r} is not in diffusers {diffusers.__version__}")
    params = inspect.signature(cls.__call__).parameters
    steps = params["num_inference_steps"].default if "num_inference_steps" in params else 20
    key = "true_cfg_scale" if "true_cfg_scale" in params and not guidance_embeds else "guidance_scale"
    guidance = params[key].default if key in params else 1.0
    return int(steps), float(1.0 if guidance is None else guidance)


def check_numbers(doc: dict[str, Any], path: Path, finite: bool = True) -> None:
    """Every number finite (when ``finite``: schedulers legitimately hold ``-inf`` bounds), every known
    integer field an integer in its sane range (:data:`LIMITS`)."""
    for key, value in doc.items():
        fix = f"fix {path} or re-save the pipeline"
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, float) and (math.isnan(item) or (finite and math.isinf(item))):
                raise ModelError(f"{path}: {key} is {item}; numbers must be finite: {fix}")
        if key in LIMITS and value is not None:
            low, high = LIMITS[key]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ModelError(f"{path}: {key} is {repr(value)[:40]}; it must be an integer in [{low}, {high}]: {fix}")


def check_index(index: dict[str, Any], path: Path) -> str:
    """``model_index.json``: a pipeline class name, and ``[library, class]`` pairs of strings per component.

    As diffusers reads it, an entry that is not a list is a pipeline config value (Wan's
    ``boundary_ratio``, ``expand_timesteps``), not a component.
    """
    pipeline = index.get("_class_name")
    if not isinstance(pipeline, str) or not pipeline.isidentifier():
        raise ModelError(f"{path}: _class_name is {pipeline!r}; it must name a diffusers pipeline class, "
                         "e.g. DiTPipeline")
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, list):
            continue
        pair_ok = len(value) == 2 and all(v is None or isinstance(v, str) for v in value)
        if not pair_ok or (value[0] is None) != (value[1] is None) or (value[1] is not None and
                                                                       not value[1].isidentifier()):
            raise ModelError(f"{path}: component {key!r} is {str(value)[:60]}; write it as [library, ClassName], "
                             'e.g. ["diffusers", "AutoencoderKL"], or [null, null]')
    return pipeline


def check_supported(pipeline: str, root: Path) -> None:
    """A pipeline no adapter runs is one line naming the ones that run, before any of its configs is read."""
    from autodelta.models.adapters import supported_pipelines

    if pipeline not in supported_pipelines():
        raise ModelError(f"{root.name}: {pipeline} is not supported; autodelta runs "
                         f"{', '.join(supported_pipelines())} folders")


def check_components(index: dict[str, Any], root: Path) -> None:
    """Every component ``model_index.json`` lists has its folder, and a transformer is among them: a missing
    one is named, with its folder, instead of failing later as weights missing from the hub cache."""
    transformer = index.get("transformer")
    if transformer is not None and not isinstance(transformer, list):
        raise ModelError(f"{root / 'model_index.json'}: component 'transformer' is {str(transformer)[:60]}; write it "
                         'as [library, ClassName], e.g. ["diffusers", "FluxTransformer2DModel"]')
    if transformer is None or transformer[1] is None:
        raise ModelError(f"{root / 'model_index.json'} lists no transformer component; re-save the pipeline "
                         "with its transformer")
    for key, value in index.items():
        if not key.startswith("_") and isinstance(value, list) and value[1] is not None and not (root / key).is_dir():
            raise ModelError(f"{root.name}: component {key!r} ({value[1]}) is listed in model_index.json but its "
                             f"folder {root / key} is missing; restore it, or re-save the pipeline")


def check_transformer_class(pipeline: str, index: dict[str, Any], transformer: dict[str, Any], root: Path) -> None:
    """The transformer class, as ``model_index.json`` and ``transformer/config.json`` name it, is one the pipeline
    calls: another one builds, profiles and then fails at its first step with a keyword it does not take."""
    from autodelta.models.adapters import transformer_classes

    expected = transformer_classes(pipeline)
    for name, path in ((index["transformer"][1], root / "model_index.json"),
                       (transformer.get("_class_name"), root / "transformer" / "config.json")):
        if name not in expected:
            raise ModelError(f"{path}: the transformer is a {name}, but a {pipeline} calls a {' or '.join(expected)}; "
                             "re-save the pipeline with its own transformer")


def _block_list(vae: dict[str, Any], path: Path) -> list[int]:
    channels = vae.get("block_out_channels", [0])
    if not isinstance(channels, list) or not channels or not all(isinstance(c, int) and 0 <= c <= 65536
                                                                 for c in channels):
        raise ModelError(f"{path}: block_out_channels is {repr(channels)[:40]}; it must be a list of channel "
                         "counts, e.g. [128, 256]")
    return channels


def profile_from_folder(folder: str | os.PathLike[str], source: str | None = None) -> Profile:
    """A :class:`Profile` describing the pipeline saved in ``folder`` (``save_pretrained`` layout).

    Every config is checked before anything is built (:func:`check_index`,
    :func:`check_numbers`): a broken folder is one line naming its file and field.
    """
    root = Path(folder)
    index = _json(root / "model_index.json")
    pipeline = check_index(index, root / "model_index.json")
    check_supported(pipeline, root)
    check_components(index, root)
    transformer = _json(root / "transformer" / "config.json")
    scheduler = _json(root / "scheduler" / "scheduler_config.json")
    vae = _json(root / "vae" / "config.json") if (root / "vae" / "config.json").is_file() else {}
    for part, path in ((transformer, root / "transformer" / "config.json"),
                       (scheduler, root / "scheduler" / "scheduler_config.json"), (vae, root / "vae" / "config.json")):
        check_numbers(part, path, finite=part is not scheduler)
        name = part.get("_class_name")
        if part and (not isinstance(name, str) or not name.isidentifier()):
            raise ModelError(f"{path}: _class_name is {name!r}; it must name a diffusers class")
    check_transformer_class(pipeline, index, transformer, root)
    config = _config(transformer)
    steps, guidance = _pipeline_defaults(pipeline, bool(config.get("guidance_embeds")))
    qwen_vae = vae.get("_class_name") == "AutoencoderKLQwenImage"
    if qwen_vae:  # a video VAE: one halving per entry of temperal_downsample
        scale = 2 ** len(vae.get("temperal_downsample") or [])
    else:
        scale = 2 ** (len(_block_list(vae, root / "vae" / "config.json")) - 1) if vae else 1
    doc: dict[str, Any] = {
        "name": root.name,
        "description": f"discovered from the diffusers pipeline folder {source or root.name}",
        "pretrained": str(root),
        "pipeline": pipeline,
        "transformer": {"class": transformer.get("_class_name"), "config": config},
        "scheduler": {"class": scheduler.get("_class_name"), "config": _config(scheduler)},
        "vae": {"kind": "autoencoder_kl_qwenimage" if qwen_vae else "autoencoder_kl", "config": _config(vae)}
        if vae else {"kind": "identity"},
        "steps": steps,
        "guidance_scale": guidance,
        "resolution": int(config.get("sample_size") or DEFAULT_SAMPLE_SIZE.get(pipeline, 32)) * scale,
        "calibration": {"seeds": [0, 1], "heldout_seeds": [1000, 1001, 1002]},
    }
    if any(key in config for key in TEXT_WIDTH_KEYS):  # text-conditioned: prompt-embedding indices
        doc["conditions"] = list(range(4))
        doc["prompt_embeddings"] = {"random": {"count": 4, "tokens": PROMPT_TOKENS.get(pipeline, 120), "seed": 0}}
    else:
        classes = int(config.get("num_embeds_ada_norm") or 1000)  # checked by check_numbers
        doc["conditions"] = sorted({round(i * classes / CLASS_SPREAD) for i in range(CLASS_SPREAD)})
        if pipeline == "DiTPipeline" and guidance > 1 and classes < NULL_CLASS:
            logger.warning("%s has %d classes but DiTPipeline guides with class %d as the null label: running it "
                           "without guidance (guidance_scale 1)", source or root.name, classes, NULL_CLASS)
            doc["guidance_scale"] = 1.0
    profile = parse_profile(doc, root / "model_index.json")
    profile.adapter  # noqa: B018  (a pipeline no adapter runs is refused here, naming the ones that run)
    profile.source = source or str(root)
    profile.document["pretrained"] = profile.source  # a written profile names the folder as the user did
    return profile
