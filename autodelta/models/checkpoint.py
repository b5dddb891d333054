"""A folder's transformer weights against the architecture its config builds, before anything loads.

diffusers loads a checkpoint whose tensors do not match its config with a warning (which
autodelta mutes with the rest of diffusers' load chatter): a ``num_single_layers`` that
grew initialises the new blocks at random, a ``guidance_embeds`` turned off drops the
embedder's weights. Either way the search would tune a model nobody runs. This compares
the tensor names in the safetensors headers (nothing is read but the headers) with the
names the architecture built on the meta device expects.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from autodelta.errors import ModelError

WEIGHTS = "diffusion_pytorch_model.safetensors"
"""The file diffusers' ``save_pretrained`` writes (or its ``.index.json`` when sharded)."""


def checkpoint_names(folder: Path) -> set[str] | None:
    """Tensor names of the safetensors checkpoint in ``folder``; ``None`` when there is none to read
    (a ``.bin`` checkpoint, a variant only), which leaves the check to diffusers."""
    index = folder / f"{WEIGHTS}.index.json"
    if index.is_file():
        try:
            return set(json.loads(index.read_text())["weight_map"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ModelError(f"{index} is not a safetensors index (no weight_map); re-save the pipeline") from None
    single = folder / WEIGHTS
    if not single.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(single), "pt") as handle:
            return set(handle.keys())
    except Exception as exc:  # a truncated or foreign file: safetensors says why in its own words
        raise ModelError(f"{single} is not a readable safetensors file ({type(exc).__name__}); "
                         "re-save the pipeline") from None


def _example(names: set[str]) -> str:
    return repr(sorted(names)[0])


def check_weights(model: Any, folder: Path) -> None:
    """Refuse in one line when the checkpoint in ``folder`` lacks tensors ``model`` (built from the same
    folder's config, on the meta device) has, or holds tensors it has not, naming both counts."""
    saved = checkpoint_names(folder)
    if saved is None:
        return
    wanted = set(model.state_dict())
    ignored = [re.compile(p) for p in getattr(type(model), "_keys_to_ignore_on_load_unexpected", None) or []]
    missing = wanted - saved
    unexpected = {k for k in saved - wanted if not any(p.search(k) for p in ignored)}
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} of its {len(wanted)} tensors are missing from the weights "
                     f"(e.g. {_example(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} saved tensors fit nowhere (e.g. {_example(unexpected)})")
    raise ModelError(f"{folder / 'config.json'} does not match the weights beside it: {'; '.join(parts)}; fix "
                     "the config (num_layers, num_single_layers, guidance_embeds, widths) to the checkpoint, or "
                     "pass --random-weights to run the architecture with random weights")
