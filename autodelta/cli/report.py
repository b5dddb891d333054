"""What people look at: the plan as a steps × blocks map, image grids, plots."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from autodelta.files import atomic_write
from autodelta.plan.schedule import Schedule, Step

COMPUTED, CACHED = "█", "·"


def plan_matrix(plan: Sequence[Step], num_blocks: int) -> np.ndarray:
    """``[steps, blocks]`` array: 1 where a block is computed, 0 where Δ-Cache replaces it."""
    grid = np.ones((len(plan), num_blocks), dtype=np.int8)
    for i, step in enumerate(plan):
        if step is not None:
            grid[i, step.start : step.stop] = 0
    return grid


def plan_map_text(schedule: Schedule, boundaries: Sequence[int] = ()) -> str:
    """The plan as text: one row per step, one column per block, ``|`` where a block segment begins
    (FLUX's single-stream blocks)."""
    grid = plan_matrix(schedule.plan, schedule.num_blocks)

    def row(cells: Sequence[str]) -> str:
        return "".join(("|" if k in boundaries else "") + c for k, c in enumerate(cells))

    tens = row([str(k // 10) if k % 10 == 0 else " " for k in range(schedule.num_blocks)])
    lines = [f"step  {tens}  ({COMPUTED} computed, {CACHED} Δ-cached)"]
    for i, (cells, step) in enumerate(zip(grid, schedule.plan)):
        lines.append(f"{i:>4}  {row([COMPUTED if c else CACHED for c in cells])}  {'full' if step is None else step}")
    return "\n".join(lines)


def _save_figure(fig: object, path: str | os.PathLike[str]) -> None:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    atomic_write(path, buffer.getvalue())


def save_plan_png(schedule: Schedule, path: str | os.PathLike[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = plan_matrix(schedule.plan, schedule.num_blocks)
    fig, ax = plt.subplots(figsize=(max(4, schedule.num_blocks * 0.22), max(3, len(schedule.plan) * 0.22)))
    ax.imshow(grid, cmap="Greys", vmin=-0.3, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xlabel("block")
    ax.set_ylabel("step")
    speed = (schedule.cost or {}).get("speedup")
    title = f"{schedule.model}: dark = computed, light = Δ-cached"
    ax.set_title(title + (f" ({speed:.2f}x MACs)" if speed else ""), fontsize=9)
    _save_figure(fig, path)


def save_image_grid(rows: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike[str]) -> None:
    """A labelled grid: each row is ``(label, images[N, H, W, C] in [0, 1])``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.8 * n_cols + 0.6, 1.9 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                image = np.clip(images[c], 0.0, 1.0)
                if image.shape[-1] == 1:
                    ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                else:
                    ax.imshow(image, interpolation="nearest")
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    _save_figure(fig, path)


def difference_heatmap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a − b| averaged over channels, scaled to [0, 1] over the batch, as RGB-ready grey."""
    diff = np.abs(a - b).mean(axis=-1, keepdims=True)
    peak = float(diff.max()) or 1.0
    return diff / peak


class Point(Protocol):
    """A scored schedule as the plots need it (a search trial record, a baseline result)."""

    @property
    def speedup(self) -> float: ...

    @property
    def quality(self) -> float: ...


def save_pareto_png(records: Sequence[Point], pareto: Sequence[Point], budget: float, metric: str,
                    path: str | os.PathLike[str], marks: Mapping[str, Point | None] | None = None,
                    chosen: Point | None = None) -> None:
    """Quality vs MACs speed-up of every trial, the Pareto front, the budget line and marked schedules."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autodelta.search.records import QUALITY_CAP

    records = [r for r in records if r.quality < QUALITY_CAP]  # identical to full compute: off the chart
    pareto = [r for r in pareto if r.quality < QUALITY_CAP]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r.speedup for r in records], [r.quality for r in records], s=12, c="#bbbbbb", label="trials")
    front = sorted(pareto, key=lambda r: r.speedup)
    ax.plot([r.speedup for r in front], [r.quality for r in front], "-o", ms=4, c="#1f77b4", label="Pareto front")
    ax.axvline(budget, ls="--", c="#d62728", lw=1, label=f"budget {budget:g}x")
    for (label, rec), marker in zip((marks or {}).items(), ["s", "^", "D", "v", "P"]):
        if rec is not None:
            ax.scatter([rec.speedup], [rec.quality], marker=marker, s=60, zorder=5, label=label)
    if chosen is not None:
        ax.scatter([chosen.speedup], [chosen.quality], marker="*", s=180, c="gold", edgecolors="k", zorder=6,
                   label="chosen")
    ax.set_xlabel("MACs speed-up")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    _save_figure(fig, path)


def save_quality_png(points: dict[str, list[tuple[float, float]]], path: str | os.PathLike[str],
                     metric: str = "PSNR to full compute (dB)") -> None:
    """Quality vs MACs speed-up, one line per method (points: method → [(speed-up, quality), …])."""
    import matplotlib

    matplotlib.use("Agg")
    import itertools

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    markers = itertools.chain(["*"], itertools.cycle(["s", "^", "D", "v", "P", "o", "X", "<", ">", "h", "p"]))
    palette = [plt.get_cmap("tab20")(i) for i in range(20)]  # a listed colormap: integer i is its i-th colour
    colors = itertools.cycle(palette[0::2] + palette[1::2])  # ten strong colours, then their light twins
    for (name, values), marker, color in zip(points.items(), markers, colors):
        values = sorted(v for v in values if v[1] == v[1])  # drop NaN (unreachable budgets)
        if values:
            ax.plot([v[0] for v in values], [v[1] for v in values], f"-{marker}", ms=9 if marker == "*" else 5,
                    label=name, lw=2.2 if marker == "*" else 1.0, color=color)
    ax.set_xlabel("MACs speed-up (measured)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, loc="best", ncol=2)
    ax.grid(alpha=0.3)
    _save_figure(fig, path)
