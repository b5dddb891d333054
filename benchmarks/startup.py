"""CLI start-up benchmark: how long a command takes before it answers.

Commands that only read files (``--help``, ``show``, ``rule``, and every input error)
must not load torch and diffusers; this measures them side by side with a bare
``python -c "import torch"`` in one run (median of --repeats, each a fresh process).

    python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(argv: list[str], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cli = shutil.which("autodelta") or sys.executable
    prefix = [cli] if cli != sys.executable else [sys.executable, "-m", "autodelta.cli.app"]
    out = Path(tempfile.mkdtemp()) / "rule.yaml"
    rows = [
        ("autodelta --help", prefix + ["--help"]),
        ("autodelta show examples/tiny-dit-paper-1.6x.yaml", prefix + ["show", "examples/tiny-dit-paper-1.6x.yaml"]),
        ("autodelta rule --model tiny-dit", prefix + ["rule", "--model", "tiny-dit", "--out", str(out)]),
        ("autodelta apply missing.yaml (an input error)", prefix + ["apply", "missing.yaml"]),
        ('python -c "import torch" (reference)', [sys.executable, "-c", "import torch"]),
    ]
    print(f"| command | median s ({args.repeats} fresh processes) |")
    print("|---|---|")
    for label, argv in rows:
        print(f"| `{label}` | {timed(argv, args.repeats):.3f} |")


if __name__ == "__main__":
    main()
