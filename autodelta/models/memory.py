"""Will one generation fit? Its peak activations estimated from the config, checked before anything is built.

At a resolution far above the model's (``apply --resolution 16384``) a CPU swaps or a GPU
fails after minutes of silence. The estimate needs only the profile: per transformer
block, about ten width-sized rows per token are alive at once (input, norm, q, k, v, the
attention output and the 4x MLP; attention itself runs fused, linear in the tokens); the
VAE decoder holds about three full-resolution maps of its widest top level. One item is
the least a generation can run (an out-of-memory retry halves the batch down to it), so
only an item that cannot fit on its own is refused.
"""

from __future__ import annotations

from typing import Any

from autodelta.errors import ModelError

ROWS_PER_TOKEN = 10
"""Width-sized activations alive per token inside one transformer block."""
DECODER_MAPS = 3
"""Full-resolution feature maps alive at once in the VAE decoder's top level."""


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (Linux ``MemAvailable``), or ``None`` when unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def device_memory(device: Any) -> int | None:
    """Free bytes on ``device``: a CUDA card's, else this machine's (CPU; MPS shares it)."""
    import torch

    if torch.device(device).type == "cuda":
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return available_memory()


def generation_bytes(rows: int, tokens: int, width: int, decoder_channels: int, resolution: int,
                     element_bytes: int = 4) -> int:
    """Estimated peak activation bytes of one item: ``rows`` transformer rows (2 with batched CFG) of ``tokens``
    tokens ``width`` wide, then a decoder whose top level has ``decoder_channels`` at ``resolution`` pixels."""
    blocks = rows * tokens * width * ROWS_PER_TOKEN
    decoder = decoder_channels * resolution * resolution * DECODER_MAPS
    return max(blocks, decoder) * element_bytes


def check_generation_fits(model: str, resolution: int, need: int, device: Any, default_resolution: int) -> None:
    """Refuse, with the estimate ``need``, a resolution at which even one item cannot fit in ``device``'s free
    memory."""
    free = device_memory(device)
    if free is not None and need > free:
        raise ModelError(f"{model} at {resolution} px needs about {need / 2**30:.1f} GiB for one item's "
                         f"activations, more than the {free / 2**30:.1f} GiB free on {device}; pick a smaller "
                         f"--resolution (it runs at {default_resolution} px by default)")
