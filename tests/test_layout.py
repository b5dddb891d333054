"""The package layout the wheel ships: every package folder listed in pyproject, data folders at the top level."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the layout is the same on 3.10

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {name: ROOT / folder for name, folder in config["package-dir"].items()}
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "autodelta").rglob("__init__.py")}
    on_disk |= {name for name, folder in mapped.items() if (folder / "__init__.py").exists()}
    assert set(config["packages"]) == on_disk  # a folder missing here would be left out of the wheel


def test_profiles_and_spaces_live_at_the_top_level_and_load_as_package_data():
    from importlib.resources import files

    for kind in ("profiles", "search_spaces"):
        assert not (ROOT / "autodelta" / kind).exists()
        shipped = {p.name for p in files(f"autodelta.{kind}").iterdir() if p.name.endswith(".yaml")}
        assert shipped == {p.name for p in (ROOT / kind).glob("*.yaml")} and shipped
