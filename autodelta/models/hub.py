"""Where a pipeline's files are: a local ``save_pretrained`` folder, or a hub id's snapshot in the local cache.

Apart from :mod:`autodelta.models.discover` (which turns a folder into a profile) because
loading and weight checks need only the location, not the profile machinery.
"""

from __future__ import annotations

import os
from pathlib import Path


def is_pipeline_folder(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / "model_index.json").is_file()


def cached_hub_folder(repo_id: str) -> Path | None:
    """The local snapshot of hub repo ``org/name`` if its files are in the Hugging Face cache, else ``None``."""
    if repo_id.count("/") != 1 or any(part in ("", ".", "..") for part in repo_id.split("/")):
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (or no huggingface_hub): the caller says what to do
        return None
    return folder if is_pipeline_folder(folder) else None


def pipeline_folder(pretrained: str) -> Path | None:
    """The folder a pretrained pipeline loads from: ``pretrained`` itself, or its cached hub snapshot."""
    return Path(pretrained) if is_pipeline_folder(pretrained) else cached_hub_folder(pretrained)
