"""A profile from a diffusers pipeline folder (or a hub id in the local cache): no YAML to write.

Everything a profile needs is in the folder's JSON files (``model_index.json``, the
transformer, scheduler and VAE configs) and in the pipeline class itself (its default
steps and guidance). The cost is counted on first use (fvcore on the architecture built
from config); ``autodelta profile --model DIR --write my.yaml`` saves the whole profile.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from autodelta.errors import ModelError
from autodelta.models import Profile, parse_profile

CLASS_SPREAD = 10
"""Class-conditional models are calibrated on this many class labels spread over all classes."""
PROMPT_TOKENS = {"PixArtAlphaPipeline": 120, "PixArtSigmaPipeline": 300}
"""Stand-in prompt length per pipeline (its own ``max_sequence_length``) when no embeddings are given."""


def is_pipeline_folder(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / "model_index.json").is_file()


def cached_hub_folder(repo_id: str) -> Path | None:
    """The local snapshot of hub repo ``org/name`` if its files are in the Hugging Face cache, else ``None``."""
    if repo_id.count("/") != 1 or any(part in ("", ".", "..") for part in repo_id.split("/")):
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (or no huggingface_hub): the caller says what to do
        return None
    return folder if is_pipeline_folder(folder) else None


def _json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} is missing; a diffusers pipeline folder has one per component") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} cannot be read as JSON ({type(exc).__name__}); re-save the pipeline") from None
    if not isinstance(doc, dict):
        raise ModelError(f"{path} is not a JSON object; re-save the pipeline")
    return doc


def _config(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def _pipeline_defaults(pipeline: str) -> tuple[int, float]:
    """The pipeline's own default ``num_inference_steps`` and ``guidance_scale``."""
    import inspect

    import diffusers

    cls = getattr(diffusers, pipeline, None)
    if cls is None:
        raise ModelError(f"pipeline class {pipeline!r} is not in diffusers {diffusers.__version__}")
    params = inspect.signature(cls.__call__).parameters
    steps = params["num_inference_steps"].default if "num_inference_steps" in params else 20
    guidance = params["guidance_scale"].default if "guidance_scale" in params else 1.0
    return int(steps), float(guidance)


def profile_from_folder(folder: str | os.PathLike[str], source: str | None = None) -> Profile:
    """A :class:`Profile` describing the pipeline saved in ``folder`` (``save_pretrained`` layout)."""
    root = Path(folder)
    index = _json(root / "model_index.json")
    pipeline = str(index.get("_class_name", ""))
    transformer = _json(root / "transformer" / "config.json")
    scheduler = _json(root / "scheduler" / "scheduler_config.json")
    vae = _json(root / "vae" / "config.json") if (root / "vae" / "config.json").is_file() else {}
    config = _config(transformer)
    steps, guidance = _pipeline_defaults(pipeline)
    scale = 2 ** (len(vae.get("block_out_channels", [0])) - 1) if vae else 1
    doc: dict[str, Any] = {
        "name": root.name,
        "description": f"discovered from the diffusers pipeline folder {source or root.name}",
        "pretrained": str(root),
        "pipeline": pipeline,
        "transformer": {"class": transformer.get("_class_name"), "config": config},
        "scheduler": {"class": scheduler.get("_class_name"), "config": _config(scheduler)},
        "vae": {"kind": "autoencoder_kl", "config": _config(vae)} if vae else {"kind": "identity"},
        "steps": steps,
        "guidance_scale": guidance,
        "resolution": int(config.get("sample_size", 32)) * scale,
        "calibration": {"seeds": [0, 1], "heldout_seeds": [1000, 1001, 1002]},
    }
    if "caption_channels" in config:  # text-conditioned: prompt-embedding indices
        doc["conditions"] = list(range(4))
        doc["prompt_embeddings"] = {"random": {"count": 4, "tokens": PROMPT_TOKENS.get(pipeline, 120), "seed": 0}}
    else:
        classes = int(config.get("num_embeds_ada_norm") or 1000)
        doc["conditions"] = sorted({round(i * classes / CLASS_SPREAD) for i in range(CLASS_SPREAD)})
    profile = parse_profile(doc, root / "model_index.json")
    profile.source = source or str(root)
    profile.document["pretrained"] = profile.source  # a written profile names the folder as the user did
    return profile
