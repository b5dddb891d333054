"""Train tiny-flux: a FLUX-style dual-stream transformer (double- then single-stream blocks) on the digits.

The dual-stream proxy: ``FluxTransformer2DModel`` with flow matching, run by diffusers' own
``FluxPipeline``. A digit's class enters as a "prompt": a fixed, seeded embedding sequence
(4 tokens) plus a pooled vector per class, shipped beside the weights as
``tiny-flux-prompts.safetensors``; the negative prompt (zeros) is the unconditional one,
and sampling uses FLUX's true CFG (two transformer calls per step). Pixels reach the 16x16
digits through a space-to-depth "VAE" (``SpaceToDepthDecoder``: 4 latent channels at 8x8),
so the transformer sees 16 image tokens, as tiny-dit does.

Seeded. Writes into --out-dir: the EMA weights (fp16), the prompt embeddings, ``tiny-flux.yaml``
(load spec, config, measured cost, quality gate) and a loss curve; the digit classifier is
tiny-dit's (``tiny-dit-classifier.safetensors``), so both proxies are judged by the same judge.

    python scripts/train_tiny_flux.py                          # tiny-flux, as shipped
    python scripts/train_tiny_flux.py --quick --out-dir /tmp/f # a smoke run in seconds
    python scripts/train_tiny_flux.py --gate-only              # re-run the quality gate and cost
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel
from tqdm.auto import tqdm
from train_tiny_dit import _plot_losses, _safetensors_bytes, _write_cost, optimizer_step

from autodelta.evaluation.digits import accuracy, frechet_distance, load_digits
from autodelta.files import atomic_write, dump_yaml

logger = logging.getLogger("train_tiny_flux")

NAME = "tiny-flux"
STEPS = 20
TEXT_TOKENS = 4
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.5,
                        max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)


def transformer_config(args: argparse.Namespace) -> dict:
    return dict(patch_size=1, in_channels=16, out_channels=None, num_layers=args.double, num_single_layers=args.single,
                attention_head_dim=32, num_attention_heads=args.heads, joint_attention_dim=32,
                pooled_projection_dim=32, guidance_embeds=False, axes_dims_rope=[8, 12, 12])


def prompt_tensors(width: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """One fixed embedding sequence and pooled vector per digit; zeros are the negative (empty) prompt."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "prompt_embeds": torch.randn(10, TEXT_TOKENS, width, generator=gen),
        "pooled_prompt_embeds": torch.randn(10, width, generator=gen),
        "negative_prompt_embeds": torch.zeros(1, TEXT_TOKENS, width),
        "negative_pooled_prompt_embeds": torch.zeros(1, width),
    }


def profile_doc(args: argparse.Namespace) -> dict:
    hidden = args.heads * 32
    return {
        "name": args.name,
        "description": f"A FLUX-style dual-stream transformer ({args.double} double- + {args.single} single-stream "
                       f"blocks, hidden {hidden}) trained with flow matching on scikit-learn's 16x16 digits by "
                       "scripts/train_tiny_flux.py; digit classes enter as prompt embeddings, true CFG. The offline "
                       "dual-stream model where quality numbers mean something.",
        "pretrained": None,
        "weights": f"{args.name}.safetensors",
        "classifier": "tiny-dit-classifier.safetensors",
        "pipeline": "FluxPipeline",
        "transformer": {"class": "FluxTransformer2DModel", "config": transformer_config(args)},
        "vae": {"kind": "space_to_depth", "factor": 2},
        "scheduler": {"class": "FlowMatchEulerDiscreteScheduler", "config": SCHEDULER_CONFIG},
        "steps": STEPS,
        "guidance_scale": args.guidance,
        "resolution": 16,
        "conditions": list(range(10)),
        "prompt_embeddings": {"file": f"{args.name}-prompts.safetensors"},
        "calibration": {"seeds": [0, 1], "heldout_seeds": [1000, 1001, 1002]},
    }


def pack(images: torch.Tensor) -> torch.Tensor:
    """Pixels ``[B, 1, 16, 16]`` in [-1, 1] → FLUX's packed latents ``[B, 16, 16]`` (as the pipeline packs them)."""
    from diffusers import FluxPipeline

    latents = F.pixel_unshuffle(images, 2)  # the space-to-depth "VAE": [B, 4, 8, 8]
    return FluxPipeline._pack_latents(latents, latents.shape[0], 4, 8, 8)


def train(args: argparse.Namespace) -> None:
    from diffusers import FluxPipeline

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    splits = load_digits(seed=0)  # tiny-dit's split: its classifier never saw the held-out digits
    t_start = time.perf_counter()
    prompts = prompt_tensors()
    atomic_write(out / f"{args.name}-prompts.safetensors", _safetensors_bytes(prompts))

    model = FluxTransformer2DModel(**transformer_config(args)).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    x_all = pack(splits.train_images * 2 - 1)
    y_all = splits.train_labels
    txt_ids = torch.zeros(TEXT_TOKENS, 3)
    img_ids = FluxPipeline._prepare_latent_image_ids(1, 4, 4, "cpu", torch.float32)
    null_embeds, null_pooled = prompts["negative_prompt_embeds"][0], prompts["negative_pooled_prompt_embeds"][0]
    losses: list[torch.Tensor] = []
    bar = tqdm(range(args.iters), desc=f"training {args.name}")
    for it in bar:
        idx = torch.randint(0, len(y_all), (args.batch,), generator=gen)
        x0, labels = x_all[idx], y_all[idx]
        drop = (torch.rand(args.batch, generator=gen) < args.label_dropout)[:, None]
        embeds = torch.where(drop[:, :, None], null_embeds, prompts["prompt_embeds"][labels])
        pooled = torch.where(drop, null_pooled, prompts["pooled_prompt_embeds"][labels])
        noise = torch.randn(x0.shape, generator=gen)
        sigma = torch.sigmoid(torch.randn(args.batch, generator=gen))  # logit-normal, as SD3/FLUX train
        noisy = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
        pred = model(hidden_states=noisy, timestep=sigma, encoder_hidden_states=embeds, pooled_projections=pooled,
                     txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        loss = F.mse_loss(pred, noise - x0)  # the velocity FlowMatchEulerDiscreteScheduler integrates
        optimizer_step(model, ema, opt, loss, it, args)
        losses.append(loss.detach())
        if it % 250 == 0:
            recent = float(torch.stack(losses[-50:]).mean())
            bar.set_postfix(loss=f"{recent:.4f}")
            logger.info("iteration %d: loss %.4f, %.0f s", it, recent, time.perf_counter() - t_start)
    loss_curve = torch.stack(losses).tolist()
    weights = {k: v.to(torch.float16).contiguous() for k, v in ema.state_dict().items()}
    atomic_write(out / f"{args.name}.safetensors", _safetensors_bytes(weights))
    _plot_losses(loss_curve, out / f"{args.name}-training.png", args.name)
    doc = profile_doc(args)
    doc["quality_gate"] = {"training_seconds": round(time.perf_counter() - t_start, 1), "iterations": args.iters,
                           "batch": args.batch, "seed": args.seed,
                           "final_loss": round(sum(loss_curve[-100:]) / len(loss_curve[-100:]), 5)}
    atomic_write(out / f"{args.name}.yaml", dump_yaml(doc))


def gate(args: argparse.Namespace) -> None:
    """The quality gate (full-compute samples judged by tiny-dit's classifier) and the measured cost."""
    from autodelta.evaluation.generation import generate
    from autodelta.evaluation.scoring import load_judge
    from autodelta.models.loading import load_profile

    out = Path(args.out_dir)
    profile_path = out / f"{args.name}.yaml"
    classifier_src = Path(__file__).resolve().parent.parent / "profiles" / "tiny-dit-classifier.safetensors"
    if not (out / classifier_src.name).exists():
        shutil.copyfile(classifier_src, out / classifier_src.name)
    profile = load_profile(profile_path)
    splits = load_digits(seed=0)
    classifier = load_judge(profile).classifier
    pipe = profile.load_pipeline()
    labels = [i % 10 for i in range(args.gate_samples)]
    t0 = time.perf_counter()
    images = generate(pipe, profile, labels, seed=12345).images
    fake = torch.from_numpy(images).permute(0, 3, 1, 2)
    acc = accuracy(classifier, fake, torch.tensor(labels))
    fd = frechet_distance(classifier, splits.test_images, fake)
    fd_real = frechet_distance(classifier, splits.test_images, splits.train_images)
    print(f"quality gate: {acc:.2%} of {args.gate_samples} samples recognised as the asked digit; Fréchet distance "
          f"{fd:.2f} (train vs held-out real digits: {fd_real:.2f}); {time.perf_counter() - t0:.0f} s")
    doc = dict(profile.document)
    doc["quality_gate"] = {**(doc.get("quality_gate") or {}), "samples": args.gate_samples, "steps": STEPS,
                           "guidance_scale": profile.guidance_scale, "classifier_accuracy": round(acc, 4),
                           "frechet_distance": round(fd, 3), "frechet_distance_train_vs_heldout": round(fd_real, 3)}
    doc.pop("cost", None)
    atomic_write(profile_path, dump_yaml(doc))
    _write_cost(profile_path, repeats=1 if args.quick else 5)
    print(json.dumps(doc["quality_gate"], indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent.parent / "profiles"))
    parser.add_argument("--name", default=NAME)
    parser.add_argument("--double", type=int, default=4, help="double-stream blocks")
    parser.add_argument("--single", type=int, default=8, help="single-stream blocks")
    parser.add_argument("--heads", type=int, default=2, help="attention heads of 32 channels")
    parser.add_argument("--guidance", type=float, default=3.0, help="true CFG scale the profile samples with")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iters", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--label-dropout", type=float, default=0.1)
    parser.add_argument("--gate-samples", type=int, default=1000)
    parser.add_argument("--gate-only", action="store_true", help="only re-run the quality gate and cost")
    parser.add_argument("--quick", action="store_true", help="a few iterations (smoke test)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quick:
        args.iters, args.batch, args.gate_samples = 3, 8, 20
    if not args.gate_only:
        train(args)
    gate(args)


if __name__ == "__main__":
    main()
