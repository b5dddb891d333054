"""Prompt embeddings: the calibration conditions of text-conditioned models (PixArt, FLUX).

PixArt's T5-XXL encoder is 4.7 B parameters and cannot be downloaded here, and the
search never needs the text itself: it needs fixed conditions. So conditions are
prompt embeddings, either from a file written on a machine that has the encoder
(``safetensors`` with ``prompt_embeds`` ``[N, L, D]``, ``prompt_attention_mask``
``[N, L]`` and optionally ``negative_prompt_embeds``/``negative_prompt_attention_mask``
``[1, L, D]``/``[1, L]``), or seeded random embeddings for random-weight runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autodelta.errors import ModelError

# T5-XXL hidden states have a standard deviation of about 0.2; random stand-ins match it.
_RANDOM_SCALE = 0.2


@dataclass(frozen=True)
class PromptEmbeddings:
    """Embeddings of N prompts and of the negative (empty) prompt used for guidance."""

    embeds: torch.Tensor  # [N, L, D]
    mask: torch.Tensor  # [N, L]
    negative: torch.Tensor  # [1, L, D]
    negative_mask: torch.Tensor  # [1, L]
    source: str
    pooled: torch.Tensor | None = None  # [N, P]: FLUX's pooled CLIP embedding (None for PixArt)
    negative_pooled: torch.Tensor | None = None  # [1, P]

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def width(self) -> int:
        return int(self.embeds.shape[-1])

    def pipeline_kwargs(self, indices: Sequence[int], dtype: torch.dtype = torch.float32,
                        device: Any = "cpu") -> dict[str, torch.Tensor]:
        """Keyword arguments of ``PixArtAlphaPipeline.__call__`` for the prompts ``indices``."""
        index = torch.tensor([int(i) % len(self) for i in indices], dtype=torch.long)
        count = len(index)
        return {
            "prompt_embeds": self.embeds[index].to(device=device, dtype=dtype),
            "prompt_attention_mask": self.mask[index].to(device),
            "negative_prompt_embeds": self.negative.expand(count, -1, -1).to(device=device, dtype=dtype),
            "negative_prompt_attention_mask": self.negative_mask.expand(count, -1).to(device),
        }

    def pooled_kwargs(self, indices: Sequence[int], dtype: torch.dtype = torch.float32, device: Any = "cpu",
                      negative: bool = True) -> dict[str, torch.Tensor]:
        """Keyword arguments of ``FluxPipeline.__call__``: sequence and pooled embeddings (and the negative
        prompt's, shaped like the prompts', for true CFG)."""
        if self.pooled is None or self.negative_pooled is None:
            raise ModelError(f"prompt embeddings from {self.source} have no pooled embeddings; FLUX needs "
                             "'pooled_prompt_embeds' [N, P] in the file")
        index = torch.tensor([int(i) % len(self) for i in indices], dtype=torch.long)
        count = len(index)
        out = {"prompt_embeds": self.embeds[index].to(device=device, dtype=dtype),
               "pooled_prompt_embeds": self.pooled[index].to(device=device, dtype=dtype)}
        if negative:
            out["negative_prompt_embeds"] = self.negative.expand(count, -1, -1).to(device=device, dtype=dtype)
            out["negative_pooled_prompt_embeds"] = self.negative_pooled.expand(count, -1).to(device=device,
                                                                                          dtype=dtype)
        return out

    def identity(self) -> str:
        """Content hash of the embeddings: reference caches made with other embeddings never match."""
        import hashlib

        digest = hashlib.sha256()
        for tensor in (self.embeds, self.mask, self.negative, self.negative_mask, self.pooled, self.negative_pooled):
            if tensor is not None:
                digest.update(tensor.contiguous().numpy().tobytes())
        return f"sha256:{digest.hexdigest()[:16]}"

    def checked(self, width: int, profile: str, pooled_width: int | None = None,
                width_name: str = "caption_channels") -> PromptEmbeddings:
        """Itself, if its widths match the transformer's (caption channels, pooled projection); one line otherwise."""
        if self.width != width or self.negative.shape[-1] != width:
            raise ModelError(
                f"prompt embeddings from {self.source} have width {self.width} but {profile} expects "
                f"{width} ({width_name} of its transformer); encode the prompts with that model's text encoder"
            )
        if pooled_width is not None:
            got = None if self.pooled is None else int(self.pooled.shape[-1])
            if got != pooled_width or self.negative_pooled is None or self.negative_pooled.shape[-1] != pooled_width:
                raise ModelError(f"prompt embeddings from {self.source} have pooled width {got} but {profile} expects "
                                 f"{pooled_width} (pooled_projection_dim); save 'pooled_prompt_embeds' [N, "
                                 f"{pooled_width}] with them")
        return self


def random_prompt_embeddings(count: int, tokens: int, width: int, seed: int = 0,
                             pooled_width: int | None = None) -> PromptEmbeddings:
    """Seeded stand-ins for T5 embeddings: Gaussian tokens, each prompt a different valid length (and, for
    FLUX, Gaussian pooled vectors)."""
    gen = torch.Generator().manual_seed(seed)
    embeds = torch.randn(count, tokens, width, generator=gen) * _RANDOM_SCALE
    mask = torch.zeros(count, tokens, dtype=torch.long)
    for i in range(count):
        mask[i, : min(tokens, 8 + (7 * i) % 24)] = 1
    negative = torch.randn(1, tokens, width, generator=gen) * _RANDOM_SCALE
    negative_mask = torch.zeros(1, tokens, dtype=torch.long)
    negative_mask[0, :1] = 1  # T5 encodes "" as one end-of-sequence token
    pooled = negative_pooled = None
    if pooled_width is not None:
        pooled = torch.randn(count, pooled_width, generator=gen) * _RANDOM_SCALE
        negative_pooled = torch.randn(1, pooled_width, generator=gen) * _RANDOM_SCALE
    return PromptEmbeddings(embeds, mask, negative, negative_mask,
                            source=f"random embeddings (seed {seed}, {count} x {tokens} x {width})",
                            pooled=pooled, negative_pooled=negative_pooled)


def load_prompt_embeddings(path: str | os.PathLike[str]) -> PromptEmbeddings:
    """Embeddings from a ``safetensors`` file; the negative prompt defaults to zeros with one token."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise ModelError(f"prompt embeddings file {path} does not exist; write it with save_prompt_embeddings()")
    try:
        doc = load_file(str(path))
    except Exception as exc:
        raise ModelError(f"prompt embeddings file {path} is not a readable safetensors file ({type(exc).__name__})") from None
    if "prompt_embeds" not in doc:
        raise ModelError(f"prompt embeddings file {path} lacks 'prompt_embeds' [N, L, D]; "
                         "save it with save_prompt_embeddings()")
    embeds = doc["prompt_embeds"].float()
    if embeds.ndim != 3:
        raise ModelError(f"'prompt_embeds' in {path} has shape {tuple(embeds.shape)}; expected [N, L, D]")
    count, tokens, width = embeds.shape
    mask = doc.get("prompt_attention_mask", torch.ones(count, tokens, dtype=torch.long))
    negative = doc.get("negative_prompt_embeds")
    if negative is None:
        negative = torch.zeros(1, tokens, width)
        negative_mask = torch.zeros(1, tokens, dtype=torch.long)
        negative_mask[0, :1] = 1
    else:
        negative = negative.float()[:1]
        negative_mask = doc.get("negative_prompt_attention_mask", torch.ones(1, tokens, dtype=torch.long))[:1]
    pooled = doc.get("pooled_prompt_embeds")
    negative_pooled = doc.get("negative_pooled_prompt_embeds")
    if pooled is not None:
        if pooled.ndim != 2 or pooled.shape[0] != count:
            raise ModelError(f"'pooled_prompt_embeds' in {path} has shape {tuple(pooled.shape)}; expected [{count}, P]")
        pooled = pooled.float()
        negative_pooled = torch.zeros(1, pooled.shape[1]) if negative_pooled is None else negative_pooled.float()[:1]
    return PromptEmbeddings(embeds, mask.long(), negative, negative_mask.long(), source=str(path), pooled=pooled,
                            negative_pooled=negative_pooled)


def save_prompt_embeddings(path: str | os.PathLike[str], pipe: Any, prompts: Sequence[str],
                           max_sequence_length: int = 120) -> None:
    """Encode ``prompts`` with a PixArt pipeline's T5 (on a machine that has it) and save them atomically."""
    from safetensors.torch import save

    from autodelta.files import atomic_write

    embeds, mask, negative, negative_mask = pipe.encode_prompt(
        list(prompts), do_classifier_free_guidance=True, negative_prompt="", max_sequence_length=max_sequence_length)
    tensors = {"prompt_embeds": embeds, "prompt_attention_mask": mask,
               "negative_prompt_embeds": negative[:1], "negative_prompt_attention_mask": negative_mask[:1]}
    atomic_write(Path(path), save({k: v.detach().float().cpu().contiguous() if v.is_floating_point()
                                   else v.detach().cpu().contiguous() for k, v in tensors.items()}))


def profile_prompt_embeddings(spec: dict[str, Any], width: int, profile: str,
                              override: str | os.PathLike[str] | None = None,
                              pooled_width: int | None = None, width_name: str = "caption_channels") -> PromptEmbeddings:
    """A profile's ``prompt_embeddings`` section (``file: …`` or ``random: {count, tokens, seed}``), checked."""
    if override is not None:
        return load_prompt_embeddings(override).checked(width, profile, pooled_width, width_name)
    if spec.get("file"):
        return load_prompt_embeddings(spec["file"]).checked(width, profile, pooled_width, width_name)
    random_spec = spec.get("random") or {}
    return random_prompt_embeddings(int(random_spec.get("count", 4)), int(random_spec.get("tokens", 120)), width,
                                    int(random_spec.get("seed", 0)), pooled_width)
