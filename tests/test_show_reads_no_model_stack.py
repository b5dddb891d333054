"""``show`` reads files only: a schedule whose model is a pipeline folder in the current directory is drawn with its
block segments from the transformer's config, without importing torch or diffusers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autodelta.plan.schedule import CachedRange, Schedule
from tests import factories

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_show_of_a_folder_model_in_the_current_directory_imports_no_torch(tmp_path):
    factories.flux_folder(tmp_path / "my-flux", double=2, single=4)
    plan = (None, CachedRange(1, 4), None, CachedRange(0, 6))
    Schedule(model="my-flux", num_blocks=6, scheduler="FlowMatchEulerDiscreteScheduler", steps=4,
             plan=plan).save(tmp_path / "s.yaml")
    code = ("import sys; from autodelta.cli.app import main\n"
            "try:\n    main(['show', 's.yaml'])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'the model stack was imported'\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "blocks: transformer_blocks 0-1 | single_transformer_blocks 2-5" in done.stdout
