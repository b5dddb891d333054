"""Train tiny-dit: a 28-block class-conditional DiT on scikit-learn's digits, plus its classifier.

Deterministic (seeded), CPU-friendly (about 40 minutes on one core with the defaults; OMP_NUM_THREADS=1 leaves the other core free).
Writes into --out-dir: the EMA weights (safetensors, fp16), the digit classifier,
``tiny-dit.yaml`` (load spec, config, measured cost, quality gate) and a loss curve.

    python scripts/train_tiny_dit.py                 # the shipped model
    python scripts/train_tiny_dit.py --quick --out-dir /tmp/t   # a smoke run in seconds
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiTTransformer2DModel
from tqdm.auto import tqdm

from autodelta.digits import accuracy, frechet_distance, load_digits, train_classifier
from autodelta.files import atomic_write, dump_yaml

NULL_CLASS = 1000  # DiTPipeline hard-codes class 1000 as the unconditional label

TRANSFORMER_CONFIG = dict(
    num_attention_heads=2, attention_head_dim=32, in_channels=1, out_channels=1, num_layers=28,
    sample_size=16, patch_size=4, attention_bias=True, activation_fn="gelu-approximate",
    num_embeds_ada_norm=1000, norm_type="ada_norm_zero", norm_elementwise_affine=False, norm_eps=1e-6,
    upcast_attention=False, dropout=0.0,
)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
STEPS, GUIDANCE = 20, 3.0


def profile_doc(name: str, weights: str, classifier: str) -> dict:
    return {
        "name": name,
        "description": "A 28-block class-conditional DiT (hidden 64) trained on scikit-learn's 16x16 digits by "
                       "scripts/train_tiny_dit.py; pixel space, identity decoder. The offline model where quality "
                       "numbers mean something.",
        "pretrained": None,
        "weights": weights,
        "classifier": classifier,
        "pipeline": "DiTPipeline",
        "blocks_attr": "transformer_blocks",
        "transformer": {"class": "DiTTransformer2DModel", "config": TRANSFORMER_CONFIG},
        "vae": {"kind": "identity", "scaling_factor": 1.0},
        "scheduler": {"class": "DPMSolverMultistepScheduler", "config": SCHEDULER_CONFIG},
        "steps": STEPS,
        "guidance_scale": GUIDANCE,
        "resolution": 16,
        "conditions": list(range(10)),
        "calibration": {"seeds": [0, 1], "heldout_seeds": [1000, 1001, 1002]},
    }


def train(args: argparse.Namespace) -> None:
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    splits = load_digits(seed=args.seed)
    t_start = time.perf_counter()

    classifier = train_classifier(splits, epochs=args.classifier_epochs, seed=args.seed)
    clf_acc = accuracy(classifier, splits.test_images, splits.test_labels)
    print(f"classifier: {clf_acc:.2%} on {len(splits.test_labels)} held-out digits")

    model = DiTTransformer2DModel(**TRANSFORMER_CONFIG).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    noise_schedule = DDPMScheduler(**SCHEDULER_CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    x_all = splits.train_images * 2 - 1
    y_all = splits.train_labels
    losses: list[float] = []
    bar = tqdm(range(args.iters), desc="training tiny-dit")
    for it in bar:
        idx = torch.randint(0, len(y_all), (args.batch,), generator=gen)
        x0 = x_all[idx]
        labels = torch.where(torch.rand(args.batch, generator=gen) < args.label_dropout,
                             torch.full_like(y_all[idx], NULL_CLASS), y_all[idx])
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, SCHEDULER_CONFIG["num_train_timesteps"], (args.batch,), generator=gen)
        pred = model(noise_schedule.add_noise(x0, noise, t), timestep=t, class_labels=labels).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (it + 1) / args.warmup)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + it) / (10 + it))
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - decay)
        losses.append(float(loss))
        if it % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.4f}")
    train_s = time.perf_counter() - t_start

    weights = {k: v.to(torch.float16).contiguous() for k, v in ema.state_dict().items()}
    atomic_write(out / f"{args.name}.safetensors", _safetensors_bytes(weights))
    atomic_write(out / f"{args.name}-classifier.safetensors", _safetensors_bytes(classifier.state_dict()))
    _plot_losses(losses, out / f"{args.name}-training.png")

    doc = profile_doc(args.name, f"{args.name}.safetensors", f"{args.name}-classifier.safetensors")
    profile_path = out / f"{args.name}.yaml"
    atomic_write(profile_path, dump_yaml(doc))
    gate = quality_gate(profile_path, classifier, splits, args.gate_samples)
    gate.update(training_seconds=round(train_s, 1), iterations=args.iters, batch=args.batch,
                classifier_heldout_accuracy=round(clf_acc, 4), final_loss=round(sum(losses[-100:]) / len(losses[-100:]), 5))
    doc["quality_gate"] = gate
    atomic_write(profile_path, dump_yaml(doc))
    _write_cost(profile_path, repeats=1 if args.quick else 5)
    print(json.dumps(gate, indent=2))


def quality_gate(profile_path: Path, classifier: torch.nn.Module, splits, samples: int) -> dict:
    """Full-compute samples: share recognised as the asked class, and Fréchet distance to held-out digits."""
    from autodelta.generation import generate
    from autodelta.models import load_profile

    profile = load_profile(profile_path)
    pipe = profile.load_pipeline()
    labels = [i % 10 for i in range(samples)]
    t0 = time.perf_counter()
    images = generate(pipe, profile, labels, seed=12345).images  # [N, 16, 16, 1]
    fake = torch.from_numpy(images).permute(0, 3, 1, 2)
    acc = accuracy(classifier, fake, torch.tensor(labels))
    fd = frechet_distance(classifier, splits.test_images, fake)
    fd_real = frechet_distance(classifier, splits.test_images, splits.train_images)
    print(f"quality gate: {acc:.2%} of {samples} samples recognised as the asked digit; Fréchet distance "
          f"{fd:.2f} (train vs held-out real digits: {fd_real:.2f}); {time.perf_counter() - t0:.0f} s")
    return {"samples": samples, "steps": STEPS, "guidance_scale": GUIDANCE, "classifier_accuracy": round(acc, 4),
            "frechet_distance": round(fd, 3), "frechet_distance_train_vs_heldout": round(fd_real, 3)}


def _write_cost(profile_path: Path, repeats: int) -> None:
    from autodelta.models import load_profile
    from autodelta.profiler import profile

    spec = load_profile(profile_path)
    transformer = spec.load_pipeline().transformer
    result = profile(transformer, spec.example_inputs(batch=2 * len(spec.conditions)), spec.blocks_attr,
                     repeats=repeats, resolution=spec.resolution)
    spec.write_cost(result.as_dict())


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


def _plot_losses(losses: list[float], path: Path) -> None:
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
    ax.set_title("tiny-dit training loss")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent.parent / "autodelta" / "profiles"))
    parser.add_argument("--name", default="tiny-dit")
    parser.add_argument("--iters", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--label-dropout", type=float, default=0.1)
    parser.add_argument("--classifier-epochs", type=int, default=30)
    parser.add_argument("--gate-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few iterations on a tiny setting (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.iters, args.batch, args.classifier_epochs, args.gate_samples = 3, 8, 1, 20
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train(args)


if __name__ == "__main__":
    main()
