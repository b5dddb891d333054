"""Train a digit DiT: a class-conditional DiT on scikit-learn's digits, plus its classifier.

Seeded; the defaults give tiny-dit (about 40 minutes on one CPU core; OMP_NUM_THREADS=1 leaves the other
core free). The architecture options give the other proxy models: ``tiny-dit-p2`` is patch 2, 3 heads × 32,
24 blocks, seed 1, guidance 4 (see PROXIES). ``--device cuda`` trains on a GPU; ``--recost`` re-measures a
trained model's cost on this machine (latency belongs to the machine that runs the search).
Writes into --out-dir: the EMA weights (safetensors, fp16), the digit classifier,
``NAME.yaml`` (load spec, config, measured cost, quality gate) and a loss curve.

    python scripts/train_tiny_dit.py                       # tiny-dit, as shipped
    python scripts/train_tiny_dit.py --proxy tiny-dit-p2 --device cuda
    python scripts/train_tiny_dit.py --quick --out-dir /tmp/t   # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiTTransformer2DModel
from tqdm.auto import tqdm

from autodelta.evaluation.digits import accuracy, frechet_distance, load_digits, train_classifier
from autodelta.files import atomic_write, dump_yaml
from autodelta.models.pipelines import compact_label_tables

logger = logging.getLogger("train_tiny_dit")
NULL_CLASS = 1000  # DiTPipeline hard-codes class 1000 as the unconditional label

SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
STEPS = 20

# The shipped proxy models: architecture, seed and guidance differ so that no default fits one of them only.
PROXIES = {
    "tiny-dit": dict(patch_size=4, heads=2, head_dim=32, layers=28, seed=0, guidance=3.0, iters=3000, batch=128,
                     lr=5e-4, compact=False),
    "tiny-dit-p2": dict(patch_size=2, heads=3, head_dim=32, layers=24, seed=1, guidance=4.0, iters=2000, batch=512,
                        lr=6e-4, compact=True),
}


def transformer_config(args: argparse.Namespace) -> dict:
    return dict(
        num_attention_heads=args.heads, attention_head_dim=args.head_dim, in_channels=1, out_channels=1,
        num_layers=args.layers, sample_size=16, patch_size=args.patch_size, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_zero",
        norm_elementwise_affine=False, norm_eps=1e-6, upcast_attention=False, dropout=0.0,
    )


def profile_doc(args: argparse.Namespace, weights: str, classifier: str) -> dict:
    config = transformer_config(args)
    hidden = args.heads * args.head_dim
    return {
        "name": args.name,
        "description": f"A {args.layers}-block class-conditional DiT (hidden {hidden}, patch {args.patch_size}) trained "
                       "on scikit-learn's 16x16 digits by scripts/train_tiny_dit.py; pixel space, identity decoder. "
                       "An offline model where quality numbers mean something.",
        "pretrained": None,
        "weights": weights,
        "classifier": classifier,
        "pipeline": "DiTPipeline",
        "blocks_attr": "transformer_blocks",
        "transformer": {"class": "DiTTransformer2DModel", "config": config},
        "vae": {"kind": "identity", "scaling_factor": 1.0},
        "scheduler": {"class": "DPMSolverMultistepScheduler", "config": SCHEDULER_CONFIG},
        "steps": STEPS,
        "guidance_scale": args.guidance,
        "resolution": 16,
        "conditions": list(range(10)),
        "calibration": {"seeds": [0, 1], "heldout_seeds": [1000, 1001, 1002]},
    }


def train(args: argparse.Namespace) -> None:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    gen = torch.Generator(device).manual_seed(args.seed)  # draws on the device: no host copies per iteration
    splits = load_digits(seed=args.seed)
    t_start = time.perf_counter()

    classifier = train_classifier(splits, epochs=args.classifier_epochs, seed=args.seed)
    clf_acc = accuracy(classifier, splits.test_images, splits.test_labels)
    print(f"classifier: {clf_acc:.2%} on {len(splits.test_labels)} held-out digits")

    model = DiTTransformer2DModel(**transformer_config(args)).to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    noise_schedule = DDPMScheduler(**SCHEDULER_CONFIG)
    alphas = noise_schedule.alphas_cumprod.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    x_all = (splits.train_images * 2 - 1).to(device)
    y_all = splits.train_labels.to(device)
    losses: list[torch.Tensor] = []
    bar = tqdm(range(args.iters), desc=f"training {args.name}")
    for it in bar:
        idx = torch.randint(0, len(y_all), (args.batch,), generator=gen, device=device)
        x0 = x_all[idx]
        drop = torch.rand(args.batch, generator=gen, device=device) < args.label_dropout
        labels = torch.where(drop, torch.full_like(y_all[idx], NULL_CLASS), y_all[idx])
        noise = torch.randn(x0.shape, generator=gen, device=device)
        t = torch.randint(0, SCHEDULER_CONFIG["num_train_timesteps"], (args.batch,), generator=gen, device=device)
        a = alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise  # DDPMScheduler.add_noise, on the model's device
        pred = model(noisy, timestep=t, class_labels=labels).sample
        loss = F.mse_loss(pred, noise)
        optimizer_step(model, ema, opt, loss, it, args)
        losses.append(loss.detach())
        if it % 500 == 0:
            recent = float(torch.stack(losses[-50:]).mean())
            bar.set_postfix(loss=f"{recent:.4f}")
            logger.info("iteration %d: loss %.4f, %.0f s", it, recent, time.perf_counter() - t_start)
    loss_curve = torch.stack(losses).cpu().tolist()
    train_s = time.perf_counter() - t_start

    weights = {k: v.to("cpu", torch.float16).contiguous() for k, v in ema.state_dict().items()}
    metadata = None
    if args.compact:  # the 11 label rows a digit model uses (DiTPipeline's null class is 1000)
        weights, metadata = compact_label_tables(weights, [*range(10), NULL_CLASS])
    atomic_write(out / f"{args.name}.safetensors", _safetensors_bytes(weights, metadata))
    atomic_write(out / f"{args.name}-classifier.safetensors", _safetensors_bytes(classifier.state_dict()))
    _plot_losses(loss_curve, out / f"{args.name}-training.png", args.name)

    doc = profile_doc(args, f"{args.name}.safetensors", f"{args.name}-classifier.safetensors")
    profile_path = out / f"{args.name}.yaml"
    atomic_write(profile_path, dump_yaml(doc))
    gate = quality_gate(profile_path, classifier, splits, args.gate_samples, device)
    gate.update(training_seconds=round(train_s, 1), training_device=device.type, iterations=args.iters,
                batch=args.batch, seed=args.seed, classifier_heldout_accuracy=round(clf_acc, 4),
                final_loss=round(sum(loss_curve[-100:]) / len(loss_curve[-100:]), 5))
    doc["quality_gate"] = gate
    atomic_write(profile_path, dump_yaml(doc))
    _write_cost(profile_path, repeats=1 if args.quick else 5)
    print(json.dumps(gate, indent=2))


def optimizer_step(model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor,
                   it: int, args: argparse.Namespace) -> None:
    """One AdamW step with linear warm-up and gradient clipping, then the EMA update (both proxies' recipe)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    for group in opt.param_groups:
        group["lr"] = args.lr * min(1.0, (it + 1) / args.warmup)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        decay = min(args.ema, (1 + it) / (10 + it))
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def quality_gate(profile_path: Path, classifier: torch.nn.Module, splits, samples: int, device: torch.device) -> dict:
    """Full-compute samples: share recognised as the asked class, and Fréchet distance to held-out digits."""
    from autodelta.evaluation.generation import generate
    from autodelta.models.loading import load_profile

    profile = load_profile(profile_path)
    pipe = profile.load_pipeline(device=device)
    labels = [i % 10 for i in range(samples)]
    t0 = time.perf_counter()
    images = generate(pipe, profile, labels, seed=12345).images  # [N, 16, 16, 1]
    fake = torch.from_numpy(images).permute(0, 3, 1, 2)
    acc = accuracy(classifier, fake, torch.tensor(labels))
    fd = frechet_distance(classifier, splits.test_images, fake)
    fd_real = frechet_distance(classifier, splits.test_images, splits.train_images)
    print(f"quality gate: {acc:.2%} of {samples} samples recognised as the asked digit; Fréchet distance "
          f"{fd:.2f} (train vs held-out real digits: {fd_real:.2f}); {time.perf_counter() - t0:.0f} s")
    return {"samples": samples, "steps": STEPS, "guidance_scale": profile.guidance_scale, "classifier_accuracy": round(acc, 4),
            "frechet_distance": round(fd, 3), "frechet_distance_train_vs_heldout": round(fd_real, 3)}


def _write_cost(profile_path: Path, repeats: int) -> None:
    from autodelta.models.loading import load_profile
    from autodelta.models.profiler import profile

    spec = load_profile(profile_path)
    transformer = spec.load_pipeline().transformer
    result = profile(transformer, spec.example_inputs(batch=2 * len(spec.conditions)), spec.blocks_attr,
                     repeats=repeats, resolution=spec.resolution)
    spec.write_cost(result.as_dict())


def _safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)


def _plot_losses(losses: list[float], path: Path, name: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = max(1, len(losses) // 100)
    smooth = [sum(losses[i : i + window]) / window for i in range(0, len(losses) - window + 1, window)]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([i * window for i in range(len(smooth))], smooth)
    ax.set_xlabel("iteration")
    ax.set_ylabel("ε-prediction MSE")
    ax.set_yscale("log")
    ax.set_title(f"{name} training loss")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent.parent / "profiles"))
    parser.add_argument("--proxy", choices=sorted(PROXIES), default="tiny-dit",
                        help="a shipped proxy's architecture, seed, guidance and iterations (the options below override)")
    parser.add_argument("--name", help="model name (default: --proxy)")
    parser.add_argument("--patch-size", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--head-dim", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--iters", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compact", action=argparse.BooleanOptionalAction, default=None,
                        help="ship only the 11 label-table rows a digit model uses (keeps tiny-dit-p2 under 12 MB)")
    parser.add_argument("--recost", action="store_true", help="only re-measure the cost of the trained model in --out-dir")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--label-dropout", type=float, default=0.1)
    parser.add_argument("--classifier-epochs", type=int, default=30)
    parser.add_argument("--gate-samples", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="a few iterations on a tiny setting (smoke test)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for key, value in PROXIES[args.proxy].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.name = args.name or args.proxy
    if args.recost:
        _write_cost(Path(args.out_dir) / f"{args.name}.yaml", repeats=5)
        return
    if args.quick:
        args.iters, args.batch, args.classifier_epochs, args.gate_samples = 3, 8, 1, 20
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train(args)


if __name__ == "__main__":
    main()
