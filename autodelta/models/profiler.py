"""Cost profile of a transformer: per-block MACs (fvcore, attention counted) and latency.

fvcore counts one multiply-add as one flop, i.e. MACs, but skips
``scaled_dot_product_attention`` by default; :func:`sdpa_macs` is registered as its
handle (docs/design.md §2: DiT-XL/2 at 256 px comes to ≈ 118.7 GMACs per call).
Blocks are traced one by one on the inputs they really receive, so no block is
charged for work done elsewhere (DiT's head calls ``transformer_blocks[0].norm1.emb``).
"""

from __future__ import annotations

import datetime as _dt
import inspect
import logging
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from tqdm.auto import tqdm

from autodelta.logs import quieted
from autodelta.models.blocks import BlocksSpec, block_stack, find_blocks
from autodelta.models.devices import dtype_name, synchronize

logger = logging.getLogger(__name__)


def sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    """MACs of ``aten::scaled_dot_product_attention``: Q·Kᵀ plus attention·V."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch_heads = prod(q[:-2])
    lq, dh = q[-2], q[-1]
    lk, dv = k[-2], v[-1]
    return batch_heads * lq * lk * (dh + dv)


class KeywordCall(torch.nn.Module):
    """Adapts a module called with keyword arguments to fvcore's positional tracing."""

    def __init__(self, module: torch.nn.Module, positional: int, names: Sequence[str], fixed: dict[str, Any]) -> None:
        super().__init__()
        self.module, self.positional, self.names, self.fixed = module, positional, list(names), fixed

    def forward(self, *tensors: torch.Tensor) -> Any:
        args, named = tensors[: self.positional], tensors[self.positional :]
        out = self.module(*args, **dict(zip(self.names, named)), **self.fixed)
        if isinstance(out, tuple):  # every stream: tracing drops what no output depends on (FLUX's image stream)
            return tuple(o for o in out if isinstance(o, torch.Tensor))
        return getattr(out, "sample", out)


def count_macs(module: torch.nn.Module, kwargs: dict[str, Any], args: tuple[torch.Tensor, ...] = ()) -> FlopCountAnalysis:
    """fvcore analysis of ``module(*args, **kwargs)`` with the SDPA handle; tensors traced, the rest fixed."""
    names = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    fixed = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}
    inputs = tuple(args) + tuple(kwargs[k] for k in names)
    analysis = FlopCountAnalysis(KeywordCall(module, len(args), names, fixed), inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_macs)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analysis


def _call_with_hooks(transformer: torch.nn.Module, inputs: dict[str, Any], handles: list[Any]) -> None:
    """One no-grad call that the capturing ``handles`` observe; they are removed whatever happens."""
    try:
        with torch.no_grad():
            transformer(**inputs, return_dict=False)
    finally:
        for handle in handles:
            handle.remove()


def _block_kwargs(block_forward_args: tuple[Any, ...], block_kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(block_kwargs)
    if block_forward_args:
        kwargs["hidden_states"] = block_forward_args[0]
    return kwargs


@dataclass
class CostProfile:
    """Per-sample MACs and per-call latency of one transformer at one resolution."""

    blocks_macs: list[float]
    pre_macs: float
    post_macs: float
    blocks_ms: list[float] | None = None
    call_ms: float | None = None
    batch: int = 1
    dtype: str = "fp32"
    resolution: int | None = None
    repeats: int = 0
    device: str = "cpu"
    threads: int = field(default_factory=torch.get_num_threads)  # the CPU threads it was measured with

    @property
    def total_macs(self) -> float:
        return self.pre_macs + sum(self.blocks_macs) + self.post_macs

    def as_dict(self) -> dict[str, Any]:
        import diffusers

        doc: dict[str, Any] = {
            "resolution": self.resolution,
            "macs": {
                "unit": "MACs per sample per transformer call (fvcore, SDPA counted)",
                "total": float(self.total_macs),
                "pre": float(self.pre_macs),
                "post": float(self.post_macs),
                "blocks": [float(m) for m in self.blocks_macs],
            },
        }
        if self.blocks_ms is not None:
            doc["latency_ms"] = {
                "unit": f"median ms per call at batch {self.batch} ({self.repeats} repeats after warm-up)",
                "call": round(float(self.call_ms or 0.0), 3),
                "blocks": [round(float(t), 3) for t in self.blocks_ms],
                "batch": self.batch,
                "dtype": self.dtype,
            }
        doc["measured"] = {
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "device": self.device,
            "device_name": _device_name(self.device),
            "threads": self.threads,
            "torch": str(torch.__version__),
            "diffusers": str(diffusers.__version__),
            "date": _dt.date.today().isoformat(),
        }
        return doc


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return str(torch.cuda.get_device_name(torch.device(device)))
    return f"{platform.machine()} {platform.processor() or ''}".strip()


def profile_macs(transformer: torch.nn.Module, inputs: dict[str, Any], blocks_attr: BlocksSpec = None,
                 progress: bool = False) -> CostProfile:
    """Per-sample MACs: the whole call, each block on its real inputs, the rest split pre/post."""
    blocks = find_blocks(transformer, blocks_attr)
    batch = int(inputs["hidden_states"].shape[0])
    captured: list[dict[str, Any]] = []
    order: list[tuple[str, torch.nn.Module, tuple[Any, ...], dict[str, Any]]] = []
    handles = [
        block.register_forward_pre_hook(
            lambda mod, args, kwargs: captured.append(_block_kwargs(args, kwargs)), with_kwargs=True
        )
        for block in blocks
    ]
    segments = block_stack(type(transformer).__name__, blocks_attr).segments
    for name, child in transformer.named_children():
        if name not in segments:
            handles.append(child.register_forward_pre_hook(
                lambda mod, args, kwargs, name=name: order.append((name, mod, args, kwargs)), with_kwargs=True))
    handles.append(blocks[0].register_forward_pre_hook(
        lambda mod, args: order.append((segments[0], mod, (), {}))))
    _call_with_hooks(transformer, inputs, handles)
    with torch.no_grad(), quieted("fvcore", level=logging.ERROR):
        whole = count_macs(transformer, {**inputs, "return_dict": False})
        total = whole.total()
        block_macs = []
        for block, kwargs in tqdm(list(zip(blocks, captured)), desc="MACs per block", disable=None if progress else True):
            block_macs.append(count_macs(block, kwargs).total() / batch)
        names = [entry[0] for entry in order]
        first_block = names.index(segments[0])
        pre = 0.0
        for _, module, args, kwargs in order[:first_block]:  # modules that run before the first block
            named = inspect.signature(module.forward).bind_partial(*args, **kwargs).arguments
            pre += count_macs(module, dict(named)).total()
    pre_macs = pre / batch
    post_macs = total / batch - pre_macs - sum(block_macs)
    if post_macs < 0:  # the blocks, traced one by one, counted a little more than the whole call gave them
        if post_macs < -0.01 * total / batch:
            logger.warning("the blocks' MACs exceed the whole call's by %.3g (%.2f%%); the head is counted as 0",
                           -post_macs, -100 * post_macs * batch / total)
        post_macs = 0.0
    return CostProfile(blocks_macs=block_macs, pre_macs=pre_macs, post_macs=post_macs)


def profile_latency(transformer: torch.nn.Module, inputs: dict[str, Any], blocks_attr: BlocksSpec = None,
                    warmup: int = 1, repeats: int = 3, progress: bool = False) -> tuple[list[float], float]:
    """Median wall time per block and per whole call, in ms, after ``warmup`` calls."""
    blocks = find_blocks(transformer, blocks_attr)
    device = inputs["hidden_states"].device

    def sync() -> None:  # GPU kernels run asynchronously: time the work, not its launch
        synchronize(device)

    starts: dict[int, float] = {}
    samples: list[list[float]] = [[] for _ in blocks]
    recording = [False]

    def before(index: int) -> Any:
        def hook(mod: torch.nn.Module, args: Any) -> None:
            if recording[0]:
                sync()
                starts[index] = time.perf_counter()
        return hook

    def after(index: int) -> Any:
        def hook(mod: torch.nn.Module, args: Any, out: Any) -> None:
            if recording[0]:
                sync()
                samples[index].append((time.perf_counter() - starts[index]) * 1e3)
        return hook

    handles = []
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(before(i)))
        handles.append(block.register_forward_hook(after(i)))
    calls: list[float] = []
    try:
        with torch.no_grad():
            for _ in range(warmup):
                transformer(**inputs, return_dict=False)
            for _ in tqdm(range(repeats), desc="latency", disable=None if progress else True):
                recording[0] = True
                sync()
                t0 = time.perf_counter()
                transformer(**inputs, return_dict=False)
                sync()
                calls.append((time.perf_counter() - t0) * 1e3)
                recording[0] = False
    finally:
        for handle in handles:
            handle.remove()
    return [statistics.median(s) for s in samples], statistics.median(calls)


def profile(transformer: torch.nn.Module, inputs: dict[str, Any], blocks_attr: BlocksSpec = None,
            latency: bool = True, warmup: int = 1, repeats: int = 3, progress: bool = False,
            resolution: int | None = None) -> CostProfile:
    """MACs (always) and latency (unless ``latency=False``) of ``transformer`` on ``inputs``."""
    result = profile_macs(transformer, inputs, blocks_attr, progress=progress)
    result.resolution = resolution
    result.device = str(inputs["hidden_states"].device)
    if latency:
        first = next(transformer.parameters())
        result.blocks_ms, result.call_ms = profile_latency(
            transformer, inputs, blocks_attr, warmup=warmup, repeats=repeats, progress=progress
        )
        result.batch = int(inputs["hidden_states"].shape[0])
        result.dtype = dtype_name(first.dtype)
        result.repeats = repeats
        result.threads = torch.get_num_threads()
    return result


def module_macs(transformer: torch.nn.Module, inputs: dict[str, Any],
                blocks_attr: BlocksSpec = None) -> list[dict[str, float]]:
    """Per block, per-sample MACs of each attention and feed-forward module directly inside it
    (``attn1``, ``attn2``, ``ff``; FLUX: ``attn``, ``ff``, ``ff_context``).

    Pyramid Attention Broadcast and TaylorSeer skip these modules, not blocks; the harness
    counts their calls, and these costs turn the counts into MACs (docs/design.md §2).
    """
    from diffusers.models.attention import AttentionModuleMixin, FeedForward
    from diffusers.models.attention_processor import Attention

    blocks = find_blocks(transformer, blocks_attr)
    batch = int(inputs["hidden_states"].shape[0])
    captured: list[dict[str, Any]] = []
    handles = [block.register_forward_pre_hook(lambda mod, args, kwargs: captured.append(_block_kwargs(args, kwargs)),
                                               with_kwargs=True) for block in blocks]
    _call_with_hooks(transformer, inputs, handles)
    out: list[dict[str, float]] = []
    with torch.no_grad(), quieted("fvcore", level=logging.ERROR):
        for block, kwargs in zip(blocks, captured):
            names = [name for name, child in block.named_children()
                 if isinstance(child, (Attention, AttentionModuleMixin, FeedForward))]
            by_module = count_macs(block, kwargs).by_module() if names else {}
            # fvcore names the traced wrapper's children "module.<name>"
            out.append({name: float(by_module.get(f"module.{name}", by_module.get(name, 0))) / batch for name in names})
    return out
