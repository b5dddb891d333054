"""``autodelta profile``: per-block MACs and latency of a model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from autodelta.cli.options import ModelOptions
from autodelta.errors import AutodeltaError
from autodelta.models.devices import inputs_on

if TYPE_CHECKING:
    pass


def run_profile(model: str, options: ModelOptions, *, write: bool, out: Optional[Path], batch: int,
                repeats: int) -> None:
    from autodelta.models.loading import load_profile

    options.check()
    spec = load_profile(model)
    if batch < 1 or repeats < 1:
        raise AutodeltaError("--batch and --repeats must be at least 1")
    if write and out is None and spec.source is not None:
        raise AutodeltaError(f"{spec.name} was read from a pipeline folder, not a profile file; pass --out my.yaml "
                             "to write its profile")
    placement = options.placement(spec)

    import torch

    from autodelta.models.profiler import profile

    resolution = spec.check_resolution(options.resolution)
    if spec.weights is not None or (spec.pretrained and not options.random_weights):
        transformer = spec.load_pipeline(dtype=placement.torch_dtype(), device=placement.device).transformer
    else:
        transformer = spec.build_transformer().to(device=placement.device, dtype=placement.torch_dtype())
    inputs = inputs_on(spec.example_inputs(batch=batch, dtype=placement.torch_dtype(), resolution=resolution),
                 placement.device)
    result = profile(transformer, inputs, spec.blocks_attr, repeats=repeats, progress=True, resolution=resolution)
    blocks = result.blocks_macs
    print(f"{spec.name} at {resolution} px: {result.total_macs / 1e9:.3f} GMACs per sample per call "
          f"(pre {result.pre_macs / 1e9:.4f}, blocks {sum(blocks) / 1e9:.3f} = {len(blocks)} x "
          f"{min(blocks) / 1e9:.4f}..{max(blocks) / 1e9:.4f}, post {result.post_macs / 1e9:.4f})")
    share = sum(result.blocks_ms or []) / (result.call_ms or 1.0)
    where = placement.device if placement.device != "cpu" else f"cpu, {torch.get_num_threads()} threads"
    print(f"latency: {result.call_ms:.1f} ms per call at batch {batch} {placement.dtype} on {where}; "
          f"blocks {share:.1%} of it, median block {sorted(result.blocks_ms or [0])[len(blocks) // 2]:.2f} ms")
    if write:
        target = spec.write_cost(result.as_dict(), out)
        print(f"wrote the profile to {target}")
