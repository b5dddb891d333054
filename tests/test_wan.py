"""Wan 2.x video transformers: one `blocks` list called positionally, latents with frames."""

from __future__ import annotations

import torch

import autodelta
from autodelta.plan.schedule import CachedRange
from tests.conftest import make_schedule


def test_a_wan_video_transformer_runs_a_schedule_over_its_blocks():
    """Wan 2.x: one `blocks` list called positionally, video latents [B, C, frames, H, W]; a Δ step by hand."""
    from diffusers import WanTransformer3DModel

    from autodelta.models.blocks import find_blocks

    torch.manual_seed(0)
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                        out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4,
                                        rope_max_seq_len=32).eval()
    blocks = find_blocks(transformer)
    assert blocks == list(transformer.blocks)
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(1, 4, 3, 8, 8, generator=gen)  # 3 latent frames of 8x8
    text = torch.randn(1, 5, 16, generator=gen)
    calls = [dict(hidden_states=video, timestep=torch.tensor([t]), encoder_hidden_states=text) for t in (900, 600)]
    seen: list[tuple] = []
    handles = [b.register_forward_pre_hook(lambda m, args: seen.append(args)) for b in blocks]
    with torch.no_grad():
        plain = [transformer(**c, return_dict=False)[0] for c in calls]
    for handle in handles:
        handle.remove()
    s, n = 1, 2
    with torch.no_grad():
        first = seen[s + n][0] - seen[s][0]  # Δ of blocks [1, 3) at the full step: h_3 - h_1
        h = seen[len(blocks)][0]
        rest = seen[len(blocks)][1:]
        for k in range(s):
            h = blocks[k](h, *rest)
        h = h + first
        for k in range(s + n, len(blocks)):
            h = blocks[k](h, *rest)
    stack_out: list[torch.Tensor] = []
    with autodelta.apply(transformer, make_schedule([None, None], model="wan", num_blocks=4)), torch.no_grad():
        assert all(torch.equal(transformer(**c, return_dict=False)[0], p) for c, p in zip(calls, plain))
    last = blocks[-1].register_forward_hook(lambda m, a, out: stack_out.append(out))
    with autodelta.apply(transformer, make_schedule([None, CachedRange(s, n)], model="wan", num_blocks=4)) as handle, \
            torch.no_grad():
        out = [transformer(**c, return_dict=False)[0] for c in calls]
    last.remove()
    assert handle.stats.blocks_skipped == n and torch.equal(out[0], plain[0]) and not torch.equal(out[1], plain[1])
    assert torch.equal(stack_out[-1], h) and out[1].shape == video.shape
