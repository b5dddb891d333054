"""Finding a model by what the user gave: a profile name, a profile YAML, a pipeline folder or a cached hub id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from autodelta.errors import ModelError
from autodelta.files import read_yaml, shipped_dir
from autodelta.models.profile import Profile, parse_profile

if TYPE_CHECKING:

    pass


def profile_dirs() -> list[Path]:
    """Where profiles are found by name: ``$AUTODELTA_PROFILES`` (if set), then the shipped ones."""
    dirs = [Path(p) for p in os.environ.get("AUTODELTA_PROFILES", "").split(os.pathsep) if p]
    return [*dirs, shipped_dir("profiles")]


def known_profiles() -> list[str]:
    return sorted({p.stem for folder in profile_dirs() if folder.is_dir() for p in folder.glob("*.yaml")})


def load_profile(name_or_path: str | os.PathLike[str]) -> Profile:
    """A profile by name (``dit-xl``) or by path to a YAML file; every field's type is checked."""
    candidate = Path(name_or_path)
    if candidate.is_dir() or ("/" in str(name_or_path) and not candidate.suffix and not candidate.exists()):
        from autodelta.models.discover import profile_from_folder
        from autodelta.models.hub import cached_hub_folder, is_pipeline_folder

        folder = candidate if candidate.is_dir() else cached_hub_folder(str(name_or_path))
        if folder is None:
            raise ModelError(f"{str(name_or_path)!r} is neither a folder nor a hub id whose files are in the local "
                             f"Hugging Face cache; download it with `huggingface-cli download {name_or_path}`")
        if not is_pipeline_folder(folder):
            raise ModelError(f"{str(folder)!r} is a folder without model_index.json; give a diffusers pipeline "
                             "folder (save_pretrained layout), a profile name or a profile YAML")
        discovered = profile_from_folder(folder, source=str(name_or_path))
        discovered.origin = str(name_or_path)
        return discovered
    if candidate.suffix in {".yaml", ".yml"} and candidate.exists():
        path = candidate
    else:
        existing = [p for p in (folder / f"{name_or_path}.yaml" for folder in profile_dirs()) if p.exists()]
        if not existing:
            raise ModelError(
                f"unknown model {str(name_or_path)!r}; known models: {', '.join(known_profiles())} "
                "(or give the path to a profile YAML)"
            )
        path = existing[0]
    profile = parse_profile(read_yaml(path, "profile"), path)
    profile.origin = str(name_or_path)
    return profile
