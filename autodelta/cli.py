"""The ``autodelta`` command line: argument parsing only; the work lives in the modules."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from autodelta.errors import AutodeltaError
from autodelta.logs import configure_cli_logging
from autodelta.schedule import MAX_STEPS

SEED_MAX = 2**32 - 1
"""Seeds are numpy/torch seeds: 0 … 2³²−1."""

# Options shared by several commands, defined once.
_MODEL = typer.Option("tiny-dit", help="Profile name, profile YAML, diffusers pipeline folder, or hub id in the local cache.")
_MODEL_OVERRIDE = typer.Option(None, "--model", help="The model to run the schedule on (default: the one it names).")
_RANDOM_WEIGHTS = typer.Option(False, "--random-weights", help="Build the architecture with random weights.")
_BUDGET = typer.Option("1.6x", help="Speed budget: '1.6x' or '62.5%'.")
_RESOLUTION = typer.Option(None, min=8, max=16384, help="Image side in pixels (PixArt; default: the profile's).")
_PROMPT_EMBEDS = typer.Option(None, "--prompt-embeds",
                              help="safetensors file of prompt embeddings (PixArt; default: the profile's).")
_DEVICE = typer.Option("auto", help="auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps.")
_DTYPE = typer.Option("auto", help="auto (fp32 on CPU, the model's fp16/bf16 on a GPU), fp32, fp16 or bf16.")
_BATCH_SIZE = typer.Option(None, "--batch-size", min=1, max=1_000_000,
                           help="Items generated at once (default: all; halved if a GPU runs out of memory). "
                                "Images do not depend on it.")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Automatic Δ-DiT cache schedules for Diffusion Transformers.")


def _options(model: Optional[str], random_weights: bool, device: str, dtype: str, resolution: Optional[int],
             prompt_embeds: Optional[Path], batch_size: Optional[int] = None) -> Any:
    from autodelta.commands import ModelOptions

    return ModelOptions(model=model, random_weights=random_weights, device=device, dtype=dtype,
                        resolution=resolution, prompt_embeds=prompt_embeds, batch_size=batch_size)


@app.command("apply")
def apply_cmd(
    schedule_path: Path = typer.Argument(..., metavar="SCHEDULE.yaml", help="Schedule file to apply."),
    compare: bool = typer.Option(False, "--compare", help="Also generate with full compute and compare."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed of the initial noise."),
    class_labels: Optional[str] = typer.Option(None, "--class-labels",
                                               help="Comma-separated class ids (PixArt: prompt-embedding indices)."),
    out: Path = typer.Option(Path("out/apply"), help="Folder for the images."),
    model: Optional[str] = _MODEL_OVERRIDE,
    random_weights: bool = _RANDOM_WEIGHTS,
    device: str = _DEVICE,
    dtype: str = _DTYPE,
    compile: bool = typer.Option(False, "--compile", help="torch.compile each block (hooks stay outside the graphs)."),
    resolution: Optional[int] = _RESOLUTION,
    prompt_embeds: Optional[Path] = _PROMPT_EMBEDS,
) -> None:
    """Generate with a schedule; with --compare, also with full compute, and report speed-up and PSNR."""
    from autodelta.commands import run_apply

    run_apply(schedule_path, _options(model, random_weights, device, dtype, resolution, prompt_embeds),
              compare=compare, seed=seed, class_labels=class_labels, out=out, compile=compile)


@app.command("show")
def show_cmd(
    schedule_path: Path = typer.Argument(..., metavar="SCHEDULE.yaml"),
    png: Optional[Path] = typer.Option(None, help="Also write the steps × blocks map as a PNG."),
) -> None:
    """Print a schedule's plan as a steps × blocks map (computed / Δ-cached)."""
    from autodelta.commands import run_show

    run_show(schedule_path, png)


@app.command("profile")
def profile_cmd(
    model: str = _MODEL,
    write: bool = typer.Option(False, "--write", help="Store the measured cost in the profile file (or in --out)."),
    out: Optional[Path] = typer.Option(None, help="Write the whole profile here (a folder model's profile, say)."),
    random_weights: bool = _RANDOM_WEIGHTS,
    device: str = _DEVICE,
    dtype: str = _DTYPE,
    batch: int = typer.Option(2, min=1, max=4096, help="Batch size for the latency measurement (2 = one image with CFG)."),
    repeats: int = typer.Option(3, min=1, max=1000, help="Timed repeats (median) after one warm-up call."),
    resolution: Optional[int] = _RESOLUTION,
) -> None:
    """Measure per-block MACs (fvcore, attention counted) and latency of a model."""
    from autodelta.commands import run_profile

    run_profile(model, _options(None, random_weights, device, dtype, resolution, None), write=write or out is not None,
                out=out, batch=batch, repeats=repeats)


@app.command("rule")
def rule_cmd(
    model: str = _MODEL,
    budget: str = _BUDGET,
    steps: Optional[int] = typer.Option(None, min=1, max=MAX_STEPS, help="Sampling steps T (default: the profile's)."),
    out: Path = typer.Option(Path("schedule.yaml"), help="Where to write the paper's schedule."),
) -> None:
    """Write the paper's hand-set Δ-DiT schedule for a budget (N and N_c by the paper's rule)."""
    from autodelta.commands import run_rule

    run_rule(model, budget, steps, out)


@app.command("evaluate")
def evaluate_cmd(
    schedule_path: Optional[Path] = typer.Argument(None, metavar="[SCHEDULE.yaml]",
                                                   help="Schedule to score (or use --baseline)."),
    baseline: Optional[str] = typer.Option(None, help="Score a caching baseline instead, set to --budget: paper, "
                                                      "fora, deepcache, greedy, fbcache, taylorseer, magcache, seacache, "
                                                      "pab, dbcache or dbcache-taylorseer."),
    budget: str = _BUDGET,
    model: Optional[str] = typer.Option(None, help="The model (default: the schedule's; tiny-dit for --baseline)."),
    calib: Optional[int] = typer.Option(None, min=1, max=1_000_000, help="Calibration items (conditions x seeds); default: all."),
    heldout: bool = typer.Option(False, "--heldout", help="Use the held-out seeds instead of the calibration ones."),
    metrics: Optional[str] = typer.Option(None, help="Comma-separated metric names; default: all available."),
    out: Path = typer.Option(Path("out/evaluate"), help="Folder for the image grid."),
    random_weights: bool = _RANDOM_WEIGHTS,
    device: str = _DEVICE,
    dtype: str = _DTYPE,
    batch_size: Optional[int] = _BATCH_SIZE,
    resolution: Optional[int] = _RESOLUTION,
    prompt_embeds: Optional[Path] = _PROMPT_EMBEDS,
) -> None:
    """Score a schedule, or a baseline at a budget, against full compute on the calibration (or held-out) set."""
    from autodelta.commands import run_evaluate, run_evaluate_baseline

    if (schedule_path is None) == (baseline is None):
        raise AutodeltaError("give either a schedule file or --baseline NAME (not both), e.g. "
                             "`autodelta evaluate --baseline fora --budget 1.6x`")
    options = _options(model, random_weights, device, dtype, resolution, prompt_embeds, batch_size)
    if baseline is not None:
        run_evaluate_baseline(baseline, options, budget_text=budget, calib=calib, heldout=heldout, metrics=metrics,
                              out=out)
    else:
        assert schedule_path is not None
        run_evaluate(schedule_path, options, calib=calib, heldout=heldout, metrics=metrics, out=out)


@app.command("search")
def search_cmd(
    model: str = _MODEL,
    budget: str = _BUDGET,
    budgets: Optional[str] = typer.Option(None, help="Several budgets from one study, e.g. 1.3x,1.6x,2x,2.5x,3x: "
                                                     "one schedule each (overrides --budget)."),
    trials: Optional[int] = typer.Option(None, min=1, max=1_000_000,
                                         help="Completed trials (real evaluations) the study should reach; default "
                                              "20 with the model sampler (+10 per extra budget), else 60. A rerun "
                                              "resumes."),
    max_generations: Optional[int] = typer.Option(None, "--max-generations", min=1, max=10**12,
                                                  help="Bound on item-generations (one calibration item generated once),"
                                                       " every phase counted: reference, model probes, screening, "
                                                       "trials."),
    space: str = typer.Option("explicit", help="Search space name or YAML path (default: the benchmark winner)."),
    metric: str = typer.Option("psnr", help="Quality objective (a registered metric name)."),
    calib: Optional[int] = typer.Option(None, min=1, max=1_000_000, help="Calibration items; default: all the profile defines."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL; default: SQLite in --out."),
    study: Optional[str] = typer.Option(None, help="Study name; default: MODEL-SPACE-BUDGET."),
    jobs: int = typer.Option(1, min=1, max=1024, help="Worker processes on the same study (on a multi-GPU machine, one per GPU)."),
    devices: Optional[str] = typer.Option(None, help="Devices for the workers in turn, e.g. cuda:0,cuda:2."),
    out: Path = typer.Option(Path("out/search"), help="Folder for the study and the outputs."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Sampler seed."),
    sampler: str = typer.Option("auto", help="auto (model on explicit spaces, else tpe), model, local (greedy + "
                                             "screened moves), tpe, nsga2 or random."),
    random_weights: bool = _RANDOM_WEIGHTS,
    device: str = _DEVICE,
    dtype: str = _DTYPE,
    batch_size: Optional[int] = _BATCH_SIZE,
    resume_any: bool = typer.Option(False, "--resume-any", help="Continue a study made with other settings."),
    resolution: Optional[int] = _RESOLUTION,
    prompt_embeds: Optional[Path] = _PROMPT_EMBEDS,
) -> None:
    """Search the Pareto set of quality vs MACs and write the best schedule within the budget."""
    from autodelta.commands import run_search

    run_search(_options(model, random_weights, device, dtype, resolution, prompt_embeds, batch_size),
               budget_text=budget, trials=trials, space_name=space, metric=metric, calib=calib, storage=storage,
               study=study, jobs=jobs, out=out, seed=seed, resume_any=resume_any, sampler=sampler, devices=devices,
               budgets_text=budgets, max_generations=max_generations)


def _click_error(exc: BaseException) -> tuple[str, int] | None:
    """A click/typer usage error as (one line, exit code), or ``None`` if ``exc`` is not one.

    typer vendors click (``typer._click`` from 0.29), so the exception classes are matched
    by name rather than by import: the CLI behaves the same with either.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "ClickException" not in names:
        return None
    message = " ".join(str(exc.format_message()).split()).rstrip(".")  # type: ignore[attr-defined]
    command = getattr(getattr(exc, "ctx", None), "command_path", None) or "autodelta"
    if "UsageError" in names:
        message += f"; see `{command} --help`"
    return message, int(getattr(exc, "exit_code", 2))


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2, never a traceback; Ctrl-C is 130."""
    configure_cli_logging()
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = app(args=args or ["--help"], prog_name="autodelta", standalone_mode=False)  # plain `autodelta` is its help, exit 0
        if isinstance(code, int) and code != 0:  # click returns (not raises) Exit codes, Ctrl-C's 130 among them
            if code == 130:
                print("autodelta: interrupted", file=sys.stderr)
            sys.exit(code)
    except AutodeltaError as exc:
        print(f"autodelta: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        print("autodelta: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        usage = _click_error(exc)
        if usage is None:
            raise
        print(f"autodelta: error: {usage[0]}", file=sys.stderr)
        sys.exit(usage[1])


if __name__ == "__main__":
    main()
