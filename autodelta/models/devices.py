"""Where and in what precision a model runs: ``--device`` and ``--dtype``, resolved once.

``auto`` means what a diffusion user expects: ``cuda`` when a GPU is visible, else
``mps``, else ``cpu``; fp16 on a GPU (bf16 where the profile says the model was trained
in it) and fp32 on a CPU. A device that is not there is one line naming what is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autodelta.errors import ModelError

if TYPE_CHECKING:
    import torch

# The one naming of dtypes: short name (as the CLI and files write it) → torch attribute.
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def short_dtype(name: str) -> str:
    """``fp32``/``bf16``/``fp16`` for a short or long name (``float16``, ``torch.float16``); checked, no torch."""
    name = name.removeprefix("torch.")
    short = next((k for k, v in DTYPES.items() if name in (k, v)), None)
    if short is None:
        raise ModelError(f"dtype {name!r} is not supported; use one of fp32, bf16, fp16")
    return short


def parse_dtype(name: str) -> torch.dtype:
    """``fp32``/``bf16``/``fp16`` (or the long names) → ``torch.dtype``; checked before torch is imported."""
    short = short_dtype(name)
    import torch

    return getattr(torch, DTYPES[short])


def dtype_name(dtype: torch.dtype) -> str:
    try:
        return short_dtype(str(dtype))
    except ModelError:
        return str(dtype)


@dataclass(frozen=True)
class Placement:
    """A resolved device and dtype, e.g. ``cuda:1`` / fp16."""

    device: str
    dtype: str  # fp32, fp16 or bf16

    def torch_dtype(self) -> torch.dtype:

        return parse_dtype(self.dtype)

    def __str__(self) -> str:
        return f"{self.device} {self.dtype}"


def check_names(device: str, dtype: str) -> None:
    """Refuse malformed ``--device``/``--dtype`` text before torch is imported."""
    kind = device.split(":", 1)[0]
    index = device.split(":", 1)[1] if ":" in device else "0"
    if kind not in ("auto", "cpu", "cuda", "mps") or not index.isdigit() or (kind in ("auto", "cpu") and ":" in device):
        raise ModelError(f"--device {device!r} is not understood; use auto, cpu, cuda, cuda:N or mps")
    if dtype != "auto":
        try:
            short_dtype(dtype)
        except ModelError:
            raise ModelError(f"--dtype {dtype!r} is not supported; use auto, fp32, fp16 or bf16") from None


def resolve(device: str = "auto", dtype: str = "auto", preferred_gpu_dtype: str = "fp16") -> Placement:
    """The device and dtype to run on; an unavailable device is a one-line :class:`ModelError`."""
    check_names(device, dtype)
    import torch

    kind = device.split(":", 1)[0]
    if kind == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif _mps_available():
            device = "mps"
        else:
            device = "cpu"
    elif kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if count == 0:
            raise ModelError(f"--device {device}: no CUDA GPU is visible here (torch {torch.__version__}, "
                             f"built {'with' if torch.version.cuda else 'without'} CUDA); use --device cpu or auto")
        if index >= count:
            raise ModelError(f"--device {device}: only {count} CUDA GPU(s) are visible (cuda:0..cuda:{count - 1})")
    elif kind == "mps" and not _mps_available():
        raise ModelError("--device mps: Apple's Metal backend is not available here; use --device cpu or auto")
    if dtype == "auto":
        name = "fp32" if device == "cpu" else preferred_gpu_dtype
    else:
        name = short_dtype(dtype)
    return Placement(device=device, dtype=name)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def synchronize(device: Any) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the work itself."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: Any) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: Any) -> int | None:
    """Peak memory allocated on a CUDA device since the last reset; ``None`` elsewhere."""
    import torch

    if torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None


def inputs_on(inputs: dict[str, Any], device: Any) -> dict[str, Any]:
    """Transformer inputs on ``device`` (nested dicts such as PixArt's ``added_cond_kwargs`` too)."""
    import torch

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(device)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    return {k: move(v) for k, v in inputs.items()}
