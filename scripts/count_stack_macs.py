"""Count a large profile's per-block MACs on a copy with one block of each kind (same widths, same resolution).

FLUX.1 has 12 B parameters: 48 GB in fp32, more than a small machine holds. Blocks of one
kind (FLUX: double- or single-stream; SD3.5: with or without its second attention, and the
last block, which drops the text stream) have the same shapes and so the same MACs, and the
layers around the stack do not depend on its depth. So a copy with one block of each kind,
counted by the same fvcore profiler as every other profile, gives each block's MACs and the
pre/post MACs exactly; the stack repeats each kind's count.

    python scripts/count_stack_macs.py flux-dev flux-schnell sd35-medium   # writes each profile's cost section
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import torch

from autodelta.models.loading import load_profile
from autodelta.models.profile import Profile
from autodelta.models.profiler import CostProfile, profile_macs


def kinds(profile: Profile) -> tuple[list[tuple[int, ...]], dict[str, Any]]:
    """Each block's kind, in stack order, and the config of a copy with one block of each kind (in the same order)."""
    config = profile.transformer_config
    if profile.transformer_class == "SD3Transformer2DModel":
        layers, dual = int(config["num_layers"]), set(config.get("dual_attention_layers") or ())
        per_block = [(int(i in dual), int(i == layers - 1)) for i in range(layers)]
        order = sorted(set(per_block), key=per_block.index)
        small = {**config, "num_layers": len(order),
                 "dual_attention_layers": [j for j, kind in enumerate(order) if kind[0]]}
        return per_block, small
    sizes = [int(config.get(key) or 0) for key in profile.stack.sizes]  # one kind per block list
    return [(k,) for k, size in enumerate(sizes) for _ in range(size)], {**config, **dict.fromkeys(profile.stack.sizes, 1)}


def count(name: str) -> CostProfile:
    profile = load_profile(name)
    per_block, small_config = kinds(profile)
    small = copy.copy(profile)
    small.transformer_config = small_config
    transformer = small.build_transformer()
    inputs = small.example_inputs(batch=1, dtype=torch.float32)
    measured = profile_macs(transformer, inputs, progress=True)
    order = sorted(set(per_block), key=per_block.index)
    blocks = [measured.blocks_macs[order.index(kind)] for kind in per_block]
    return CostProfile(blocks_macs=blocks, pre_macs=measured.pre_macs, post_macs=measured.post_macs,
                       resolution=profile.resolution)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", nargs="+")
    args = parser.parse_args()
    for name in args.profiles:
        cost = count(name)
        profile = load_profile(name)
        doc = cost.as_dict()
        doc["macs"]["unit"] += "; counted on a copy with one block of each kind, each repeated"
        profile.write_cost(doc)
        print(f"{name}: {cost.total_macs / 1e12:.2f} TMACs per call, blocks {sorted(set(cost.blocks_macs))}")


if __name__ == "__main__":
    main()
