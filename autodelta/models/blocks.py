"""Where a transformer keeps its blocks, and how its blocks hand hidden states on.

A DiT or PixArt has one block list whose blocks map a tensor to a tensor. FLUX has two
lists, double-stream then single-stream blocks, and each block maps the image and text
streams to both, returned text first. The runtime sees every family as one *stack*: the
segments' blocks in call order, indexed 0 … N-1 across the segment boundaries, each block
taking and returning a tuple of streams (:class:`Streams` converts to and from the block's
own calling convention). A cached range may span a boundary; its Δ is a tuple over the streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autodelta.errors import ScheduleError

if TYPE_CHECKING:  # torch is imported where blocks are found: `show` reads a stack's layout without it
    import torch

    StreamTuple = tuple[torch.Tensor | None, ...]
    """A block's hidden-state streams in :attr:`Streams.inputs` order (``None``: the block returns none there)."""


@dataclass(frozen=True)
class Streams:
    """How a block takes and returns its hidden-state streams.

    ``inputs`` are the forward's parameters that carry a stream, in signature order (so a
    positional call puts stream ``k`` at position ``k``). ``returns`` is the order the block
    returns them as a tuple, or ``None`` when it returns the first stream as a bare tensor.
    """

    inputs: tuple[str, ...] = ("hidden_states",)
    returns: tuple[str, ...] | None = None

    def take(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> StreamTuple:
        """The streams a block is called with."""
        return tuple(args[k] if k < len(args) else kwargs.get(name) for k, name in enumerate(self.inputs))

    def split(self, out: Any) -> StreamTuple:
        """The streams a block returned."""
        if self.returns is None:
            return (out,)
        by_name = dict(zip(self.returns, out))
        return tuple(by_name[name] for name in self.inputs)

    def join(self, streams: StreamTuple) -> Any:
        """``streams`` as the block returns them."""
        if self.returns is None:
            return streams[0]
        return tuple(streams[self.inputs.index(name)] for name in self.returns)


SINGLE_STREAM = Streams()
TEXT_FIRST = Streams(("hidden_states", "encoder_hidden_states"), ("encoder_hidden_states", "hidden_states"))
"""FLUX, SD3 and Qwen-Image blocks: image and text streams in, ``(text, image)`` out."""


@dataclass(frozen=True)
class BlockStack:
    """The transformer's block lists in call order (``segments``), the config fields that size them
    (``sizes``), and the blocks' calling convention."""

    segments: tuple[str, ...] = ("transformer_blocks",)
    sizes: tuple[str, ...] = ("num_layers",)
    streams: Streams = SINGLE_STREAM

    def blocks(self, transformer: torch.nn.Module) -> list[torch.nn.Module]:
        """Every block of the stack, in call order."""
        import torch

        blocks: list[torch.nn.Module] = []
        for attr in self.segments:
            segment = getattr(transformer, attr, None)
            if not isinstance(segment, torch.nn.ModuleList):
                raise ScheduleError(f"{type(transformer).__name__} has no ModuleList '{attr}'; pass blocks_attr= with "
                                    "the name(s) of its transformer block list(s)")
            blocks.extend(segment)
        if not blocks:
            raise ScheduleError(f"{type(transformer).__name__} has no blocks in {', '.join(self.segments)}; "
                                "pass blocks_attr= with the name(s) of its transformer block list(s)")
        return blocks

    def count(self, config: dict[str, Any]) -> int:
        """Blocks a transformer of this ``config`` has."""
        return sum(int(config.get(key) or 0) for key in self.sizes)

    def describe(self, config: dict[str, Any]) -> str:
        """The segments and their block indices, e.g. ``transformer_blocks 0-18 | single_transformer_blocks 19-56``."""
        parts, start = [], 0
        for attr, key in zip(self.segments, self.sizes):
            size = int(config.get(key) or 0)
            if size:  # a list the config leaves empty (FLUX with no single-stream blocks) is not a segment
                parts.append(f"{attr} {start}-{start + size - 1}")
            start += size
        return " | ".join(parts)

    def boundaries(self, config: dict[str, Any]) -> list[int]:
        """Stack indices where a segment after the first begins (FLUX: the first single-stream block)."""
        edges, total = [], 0
        for key in self.sizes[:-1]:
            total += int(config.get(key) or 0)
            edges.append(total)
        return edges


LAYOUTS: dict[str, BlockStack] = {
    "DiTTransformer2DModel": BlockStack(),
    "PixArtTransformer2DModel": BlockStack(),
    "FluxTransformer2DModel": BlockStack(("transformer_blocks", "single_transformer_blocks"),
                                         ("num_layers", "num_single_layers"), TEXT_FIRST),
    "SD3Transformer2DModel": BlockStack(streams=TEXT_FIRST),
    "QwenImageTransformer2DModel": BlockStack(streams=TEXT_FIRST),
    "WanTransformer3DModel": BlockStack(("blocks",)),
}
"""The stack of each transformer class autodelta knows; any other has one ``transformer_blocks`` list."""


BlocksSpec = str | Sequence[str] | BlockStack | None
"""Where the blocks are: ``None`` (the class's known stack), one block list's name, several in call order, or a stack."""


def block_stack(transformer_class: str, blocks_attr: BlocksSpec = None) -> BlockStack:
    """The stack of a transformer class; ``blocks_attr`` names other block lists (one, or several in call order)."""
    if isinstance(blocks_attr, BlockStack):
        return blocks_attr
    known = LAYOUTS.get(transformer_class, BlockStack())
    if blocks_attr is None:
        return known
    segments = (blocks_attr,) if isinstance(blocks_attr, str) else tuple(blocks_attr)
    if segments == known.segments:
        return known
    return BlockStack(segments, ("num_layers",) if len(segments) == 1 else known.sizes, known.streams)


def find_blocks(transformer: torch.nn.Module, blocks_attr: BlocksSpec = None) -> list[torch.nn.Module]:
    """Every block of a DiT-style transformer's stack, in call order."""
    return block_stack(type(transformer).__name__, blocks_attr).blocks(transformer)
