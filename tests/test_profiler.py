from __future__ import annotations

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from autodelta.models.profiler import KeywordCall, count_macs, profile_macs
from autodelta.models.profiler import profile as run_profile


def closed_form_block_macs(d: int, tokens: int, heads: int, freq_dim: int = 256) -> int:
    """One DiT block (adaLN-Zero, GELU MLP x4) for one sample, multiply-adds."""
    emb = freq_dim * d + d * d + d * 6 * d  # timestep MLP + adaLN modulation
    norms = 2 * 4 * tokens * d  # two LayerNorms without affine: fvcore counts 4 per element
    attn_proj = 4 * tokens * d * d  # q, k, v, out
    attn_sdpa = 2 * tokens * tokens * d  # QKᵀ and AV over all heads
    mlp = 2 * tokens * d * 4 * d
    return emb + norms + attn_proj + attn_sdpa + mlp


def test_per_block_macs_match_closed_form(profile):
    cfg = profile.transformer_config
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    tokens = (cfg["sample_size"] // cfg["patch_size"]) ** 2
    result = profile_macs(profile.build_transformer(), profile.example_inputs(batch=2))
    expected = closed_form_block_macs(d, tokens, cfg["num_attention_heads"])
    assert result.blocks_macs == [expected] * 28
    patch = tokens * cfg["in_channels"] * cfg["patch_size"] ** 2 * d
    assert result.pre_macs == patch
    # the head: adaLN's shift/scale projection and the un-patching linear, plus at most the timestep MLP it
    # re-embeds and the final layer norm
    head = d * 2 * d + tokens * d * cfg["patch_size"] ** 2 * cfg["out_channels"]
    assert head <= result.post_macs <= head + 256 * d + d * d + 5 * tokens * d
    assert result.total_macs == pytest.approx(result.pre_macs + 28 * expected + result.post_macs)


def test_sdpa_handle_is_counted(profile):
    transformer = profile.build_transformer()
    inputs = profile.example_inputs(batch=1)
    with_handle = count_macs(transformer, dict(inputs, return_dict=False)).total()
    names = list(inputs)
    without = FlopCountAnalysis(KeywordCall(transformer, 0, names, {"return_dict": False}), tuple(inputs.values()))
    cfg = profile.transformer_config
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    tokens = (cfg["sample_size"] // cfg["patch_size"]) ** 2
    assert with_handle - without.total() == 28 * 2 * tokens * tokens * d


def test_latency_profile_has_one_positive_median_per_block(profile):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the profile records the threads it ran with, not a default
    try:
        result = run_profile(profile.build_transformer(), profile.example_inputs(batch=2), repeats=2)
    finally:
        torch.set_num_threads(threads)
    assert len(result.blocks_ms) == 28 and all(t > 0 for t in result.blocks_ms)
    assert result.call_ms >= sum(result.blocks_ms) * 0.5
    doc = result.as_dict()
    assert doc["macs"]["blocks"] == result.blocks_macs and doc["latency_ms"]["batch"] == 2
    assert doc["measured"]["threads"] == 1
