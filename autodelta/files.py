"""Atomic file writes and friendly YAML reads.

Every output autodelta writes (schedules, profiles, studies' reports, caches) goes
through :func:`atomic_write`, so an interrupted run never leaves half a file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from autodelta.errors import AutodeltaError


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check that files can be written in it."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".autodelta-probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise AutodeltaError(
            f"output folder {str(folder)!r} is not writable ({exc.strerror or exc}); "
            "pass --out with a folder you can write to"
        ) from None
    return folder


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    target = Path(path)
    ensure_writable_dir(target.parent if str(target.parent) else ".")
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


class _Dumper(yaml.SafeDumper):
    """Block style for structure, flow style for short lists of numbers and one-key leaves."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flat = all(isinstance(x, (int, float, str, bool)) or x is None for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


def _represent_dict(dumper: yaml.SafeDumper, data: dict[Any, Any]) -> yaml.Node:
    leaf = len(data) == 1 and all(isinstance(v, list) for v in data.values())
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True if leaf else None)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(dict, _represent_dict)


def dump_yaml(document: Any) -> str:
    """YAML text in the house style: keys in insertion order, numbers lists on one line."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """Load a YAML file, turning missing, unreadable and malformed files into one-line errors."""
    source = Path(path)
    try:
        text = source.read_text()
    except FileNotFoundError:
        raise AutodeltaError(f"{what} {str(source)!r} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AutodeltaError(f"{what} {str(source)!r} cannot be read ({exc}); check the file") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise AutodeltaError(
            f"{what} {str(source)!r} is not valid YAML{where}; fix the syntax or regenerate it"
        ) from None
