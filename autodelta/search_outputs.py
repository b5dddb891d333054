"""The four outputs of a search, each written atomically: schedule, Pareto set, plot, report."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autodelta.cost import paper_rule
from autodelta.errors import AutodeltaError
from autodelta.files import atomic_write, dump_yaml
from autodelta.metrics import get_metric
from autodelta.report import plan_map_text, save_pareto_png
from autodelta.schedule import Schedule, encode_plan
from autodelta.search import SearchOutcome, SearchSettings, TrialRecord
from autodelta.storage import redact_url


def _schedule_of(record: TrialRecord, settings: SearchSettings, evaluator: Any, profile: Any,
                 heldout: dict[str, float] | None, storage: str | None) -> Schedule:
    calib = len(getattr(evaluator, "calibration", ()))
    return Schedule(
        model=profile.name, pretrained=profile.pretrained_id, num_blocks=profile.num_blocks, scheduler=profile.scheduler,
        source=profile.schedule_source,
        steps=profile.steps, guidance_scale=profile.guidance_scale, plan=record.plan,
        params={"family": settings.space.family, "space": settings.space.name, **record.params},
        cost=evaluator.cost.summary(record.plan),
        quality={"metric": settings.metric, "value": record.quality, "metrics": record.metrics,
                 "calibration_size": calib, "heldout": heldout,
                 "reference": f"full compute, {profile.scheduler}, T={profile.steps}, guidance {profile.guidance_scale}"},
        provenance={"study": settings.study_name, "trial": record.number, "storage": storage,
                    "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
    )


def screen_correlation(records: list[TrialRecord]) -> tuple[float, int] | None:
    """Spearman correlation of screened and full scores over the trials that have both, and their count."""
    pairs = [(r.screen, r.quality) for r in records if r.screen is not None]
    if len(pairs) < 3:
        return None
    from scipy.stats import spearmanr

    value = float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)
    return value, len(pairs)


def write_outputs(outcome: SearchOutcome, settings: SearchSettings, evaluator: Any,
                  heldout_factory: Callable[[], Any] | None, profile: Any, out: Path, top: int = 3) -> dict[str, Any]:
    """schedule.yaml, pareto.yaml, pareto.png and report.md in ``out``.

    Returns the headline figures; ``figures["summary"]`` holds the lines the CLI prints.
    """
    metric = get_metric(settings.metric)
    sign = 1.0 if metric.higher_is_better else -1.0
    if outcome.best is None:
        raise AutodeltaError(f"no completed trial meets budget {settings.budget} yet; run more --trials")
    rule = paper_rule(evaluator.cost, evaluator.steps, settings.budget)
    rule_plan = rule.plan(evaluator.steps, evaluator.num_blocks)
    paper = next((r for r in outcome.records if r.plan == rule_plan), None)
    if paper is None:  # the space cannot express it: measure it anyway, for the comparison
        ev = evaluator.evaluate(rule_plan)
        paper = TrialRecord(-1, rule.as_dict(), rule_plan, ev.metrics[settings.metric], ev.macs, ev.speedup,
                            ev.metrics, settings.budget.allows(ev.speedup), "paper rule")
    ranked: list[TrialRecord] = []
    for r in sorted((r for r in outcome.records if r.feasible), key=lambda r: (-sign * r.quality, r.macs)):
        if all(r.plan != o.plan for o in ranked):
            ranked.append(r)
    shown = ranked[:top] + ([paper] if all(paper.plan != r.plan for r in ranked[:top]) else [])
    held: dict[int, dict[str, float]] = {}
    if heldout_factory is not None:
        held_ev = heldout_factory()
        for r in shown:
            held[id(r)] = held_ev.evaluate(r.plan).metrics
    best = outcome.best
    storage = redact_url(settings.storage) if settings.storage else None  # no password, no local path
    schedule = _schedule_of(best, settings, evaluator, profile, held.get(id(best)), storage)
    schedule.save(out / "schedule.yaml")

    pareto_doc = {
        "format": "autodelta/pareto@1", "model": profile.name, "budget": settings.budget.text,
        "metric": settings.metric, "space": settings.space.name, "study": settings.study_name,
        "schedules": [
            {"trial": r.number, "speedup": round(r.speedup, 4), "macs": r.macs, "quality": r.quality,
             "within_budget": r.feasible, "metrics": r.metrics, "params": r.params, "plan": encode_plan(r.plan)}
            for r in outcome.pareto
        ],
    }
    atomic_write(out / "pareto.yaml", dump_yaml(pareto_doc))
    seeds = {r.label: r for r in outcome.records if r.label}
    marks = {"paper (rule)": paper, **{k: v for k, v in seeds.items() if k != "paper rule"}}
    save_pareto_png(outcome.records, outcome.pareto, settings.budget.speedup, settings.metric, out / "pareto.png",
                    marks=marks, chosen=best)

    ratio = getattr(evaluator, "reuse_ratio", None)
    found_at = min(r.number for r in outcome.records if r.plan == best.plan)
    fidelity = screen_correlation(outcome.records)
    lines = [
        f"# autodelta search: {profile.name} at {settings.budget}",
        "",
        f"space `{settings.space.name}` ({settings.space.family}), metric `{settings.metric}`, "
        f"{len(outcome.records)} completed trials, study `{settings.study_name}`.",
        f"search time {outcome.seconds:.1f} s this run; best found at trial {found_at}; "
        f"{outcome.duplicates} duplicate plans answered from the study"
        + (f"; prefix reuse: {evaluator.blocks_naive} block evaluations needed naively, "
           f"{evaluator.blocks_computed} computed ({ratio:.2f}x)" if ratio is not None else "") + ".",
        "",
        *([f"multi-fidelity: {fidelity[1]} trials were screened on a subset of the calibration items first; Spearman "
           f"rank correlation of screened and full scores {fidelity[0]:.3f}.", ""] if fidelity else []),
        f"| schedule | trial | MACs speed-up | {settings.metric} (calibration) | {settings.metric} (held-out) | params |",
        "|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(shown):
        name = "paper rule" if r is paper else f"#{i + 1}" + (" (chosen)" if r is best else "")
        h = held.get(id(r), {}).get(settings.metric)
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.params.items())
        lines.append(f"| {name} | {r.number} | {r.speedup:.3f}x | {r.quality:.3f} | "
                     f"{'' if h is None else f'{h:.3f}'} | {params} |")
    lines += ["", "Chosen plan:", "", "```", plan_map_text(schedule), "```", ""]
    atomic_write(out / "report.md", "\n".join(lines))

    figures = {
        "best": best.quality, "best_heldout": held.get(id(best), {}).get(settings.metric),
        "paper": paper.quality, "paper_heldout": held.get(id(paper), {}).get(settings.metric),
        "found_at": found_at, "reuse_ratio": ratio, "seconds": outcome.seconds,
        "screen_correlation": fidelity[0] if fidelity else None,
    }
    lines = [f"best within {settings.budget}: {settings.metric} {best.quality:.3f} at {best.speedup:.3f}x "
             f"(trial {best.number}); paper rule {paper.quality:.3f} at {paper.speedup:.3f}x"]
    if figures["best_heldout"] is not None and figures["paper_heldout"] is not None:
        lines.append(f"held-out: chosen {figures['best_heldout']:.3f}, paper rule {figures['paper_heldout']:.3f}")
    if ratio is not None:
        lines.append(f"prefix reuse: {evaluator.blocks_naive} block evaluations naive, {evaluator.blocks_computed} "
                     f"computed ({ratio:.2f}x)")
    lines.append(f"wrote {out / 'schedule.yaml'}, {out / 'pareto.yaml'}, {out / 'pareto.png'}, {out / 'report.md'}")
    figures["summary"] = lines
    return figures
