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
            f"folder {str(folder)!r} is not writable ({exc.strerror or exc}); choose a folder you can write to"
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
    except OSError as exc:  # disk full, quota, read-only: the old file (if any) is untouched
        Path(tmp).unlink(missing_ok=True)
        raise AutodeltaError(f"cannot write {str(target)!r} ({_reason(exc)}); the previous file, if any, is "
                             "unchanged; free space or choose another folder") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _reason(exc: OSError | UnicodeDecodeError) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


class _Dumper(yaml.SafeDumper):
    """Block style for structure, flow style for short lists of numbers and one-key leaves; no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True  # autodelta's own files never use anchors, so its loader can refuse them


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


MAX_YAML_BYTES = 16 * 2**20
"""Largest YAML file autodelta reads (its own schedules and profiles are a few KB)."""


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` that refuses anchors/aliases: shared files cannot expand into a billion laughs."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None) is not None:
            event = self.peek_event()
            raise _Refused(f"YAML anchors and aliases are not allowed (line {event.start_mark.line + 1}); "
                           "write the values out")
        return super().compose_node(parent, index)


class _Refused(yaml.YAMLError):
    pass


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """Load a YAML file, turning missing, unreadable, oversized and malformed files into one-line errors.

    Only plain YAML is read: no tags (``!!python/...``), no anchors or aliases, at most
    :data:`MAX_YAML_BYTES`; so a shared file can never run code, hang or exhaust memory.
    """
    source = Path(path)
    try:
        if source.is_file() and source.stat().st_size > MAX_YAML_BYTES:
            raise AutodeltaError(f"{what} {str(source)!r} is {source.stat().st_size / 2**20:.0f} MiB; autodelta "
                                 f"reads YAML files of at most {MAX_YAML_BYTES // 2**20} MiB")
        text = source.read_text()
    except FileNotFoundError:
        raise AutodeltaError(f"{what} {str(source)!r} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AutodeltaError(f"{what} {str(source)!r} cannot be read ({_reason(exc)}); check the file") from None
    try:
        return yaml.load(text, Loader=_Loader)
    except _Refused as exc:
        raise AutodeltaError(f"{what} {str(source)!r}: {exc}") from None
    except yaml.constructor.ConstructorError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise AutodeltaError(f"{what} {str(source)!r} uses a YAML tag{where}; tags are not allowed, "
                             "write plain values") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise AutodeltaError(
            f"{what} {str(source)!r} is not valid YAML{where}; fix the syntax or regenerate it"
        ) from None


class Fields:
    """Typed field access to a YAML mapping that names the exact path of a missing or mistyped field.

    Schedules and profiles are read through it, so every file problem is one line that
    says which field is wrong and what it must be.
    """

    def __init__(self, doc: Any, path: str, error: type[AutodeltaError] = AutodeltaError, prefix: str = "",
                 hint: str = "") -> None:
        self.error, self.path, self.prefix, self.hint = error, path, prefix, hint
        if not isinstance(doc, dict):
            where = prefix.rstrip(".") or "the document"
            raise error(f"{path}: {where} must be a mapping, got {type(doc).__name__}")
        self.doc: dict[str, Any] = doc

    def get(self, key: str, kind: type, optional: bool = False, default: Any = None) -> Any:
        name = f"{self.prefix}{key}"
        if key not in self.doc or self.doc[key] is None:
            if optional:
                return default
            raise self.error(f"{self.path}: field '{name}' is missing; add it{self.hint}")
        value = self.doc[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            raise self.error(
                f"{self.path}: field '{name}' is {_short(value)} ({type(value).__name__}); it must be a {kind.__name__}"
            )
        return value

    def ints(self, key: str, optional: bool = False) -> tuple[int, ...]:
        """A list of integers (seeds, class labels)."""
        values = self.get(key, list, optional=optional, default=[])
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise self.error(f"{self.path}: field '{self.prefix}{key}' must be a list of integers")
        return tuple(values)

    def section(self, key: str, optional: bool = False) -> Fields:
        doc = self.get(key, dict, optional=optional, default={})
        return Fields(doc, self.path, self.error, prefix=f"{self.prefix}{key}.", hint=self.hint)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shipped_dir(kind: str) -> Path:
    """A data folder shipped inside the package (``profiles``, ``search_spaces``).

    Found with :mod:`importlib.resources`, so an installed wheel finds its models and
    spaces wherever it is installed, not only an editable checkout.
    """
    from importlib import resources

    return Path(str(resources.files("autodelta").joinpath(kind)))

