"""Where a transformer keeps its blocks."""

from __future__ import annotations

import torch

from autodelta.errors import ScheduleError


def find_blocks(transformer: torch.nn.Module, attr: str = "transformer_blocks") -> torch.nn.ModuleList:
    """The block list of a DiT-style transformer (``transformer_blocks`` in DiT and PixArt)."""
    blocks = getattr(transformer, attr, None)
    if not isinstance(blocks, torch.nn.ModuleList) or len(blocks) == 0:
        raise ScheduleError(
            f"{type(transformer).__name__} has no non-empty ModuleList '{attr}'; pass blocks_attr= "
            "with the name of its transformer block list"
        )
    return blocks
