"""The README's offline Python example runs as printed (the hub example needs a download and is not run)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_offline_python_example_runs_as_printed(monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    offline = [b for b in blocks if "load_profile(" in b]
    assert len(offline) == 1, "README should show the shipped tiny-dit offline"
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(offline[0], "README.md", "exec"), scope)
    assert scope["digits"].shape == (2, 16, 16, 1)
    assert "skipped 220" in capsys.readouterr().out  # the paper's 1.6x plan really skipped blocks
