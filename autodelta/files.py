"""Atomic file writes and friendly YAML reads.

Every output autodelta writes (schedules, profiles, studies' reports, caches) goes
through :func:`atomic_write`, so an interrupted run never leaves half a file behind.
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


LOCK_NAME = ".autodelta.lock"


@contextmanager
def folder_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold ``folder`` for one command: a second autodelta run writing into it is refused in one line.

    An OS lock (``flock``) on a file in the folder: it goes with the process, so a run that
    was killed never leaves the folder locked. The file names the holder (pid, command,
    start time), never its arguments (a storage URL may hold a password).
    """
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise AutodeltaError(f"folder {str(folder)!r} cannot be locked ({_reason(exc)}); choose a folder you can "
                             "write to") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise AutodeltaError(f"folder {str(folder)!r} is in use by another autodelta run ({holder}); wait for it "
                                 "to finish or choose another --out") from None
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, autodelta {command}, since {started}".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:g} MiB" if nbytes >= 2**20 else f"{nbytes} bytes"


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words (``None`` for a regular file)."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def write_target(path: str | os.PathLike[str]) -> Path:
    """Where a write to ``path`` lands: ``path`` itself, or the regular file a symlink points to (written
    through, so the link keeps pointing at it). Anything else that exists there is refused."""
    target = Path(path)
    try:
        mode = os.stat(target).st_mode  # follows symlinks
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise AutodeltaError(f"cannot write {str(target)!r} ({_reason(exc)}); choose another path") from None
    kind = _kind(mode)
    if kind is not None:
        raise AutodeltaError(f"{str(target)!r} is {kind}, not a regular file; autodelta only replaces regular "
                             "files: choose a file path")
    return Path(os.path.realpath(target)) if target.is_symlink() else target


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place (through a symlink to a
    regular file; never over a device, FIFO, socket or folder)."""
    target = write_target(path)
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
MAX_YAML_DEPTH = 32
"""Deepest nesting of lists and mappings autodelta reads (its own files nest four deep)."""
MAX_YAML_ITEMS = 100_000
"""Most entries of one list or mapping (a plan holds at most 10,000 steps)."""


class _Loader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """A safe loader that refuses duplicate keys: the last one would silently win."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                continue  # an unhashable key: the constructor says so
            if first != key_node.start_mark.line + 1:
                raise _Refused(f"key {key!r} appears twice (lines {first} and {key_node.start_mark.line + 1}); "
                               "keep one")
        return super().construct_mapping(node, deep=deep)


class _Refused(yaml.YAMLError):
    pass


def _check_events(text: str) -> None:
    """One fast pass over the parser's events: no anchors or aliases, no nesting or collection beyond the limits."""
    parser = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
    stack: list[int] = []
    for event in yaml.parse(text, Loader=parser):
        line = (event.start_mark.line if event.start_mark is not None else -1) + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _Refused(f"YAML anchors and aliases are not allowed (line {line}); write the values out")
        if isinstance(event, (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)) and stack:
            stack[-1] += 1
            if stack[-1] > 2 * MAX_YAML_ITEMS:  # a mapping counts keys and values
                raise _Refused(f"a list or mapping ending after line {line} holds more than {MAX_YAML_ITEMS} entries")
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            stack.append(0)
            if len(stack) > MAX_YAML_DEPTH:
                raise _Refused(f"nesting deeper than {MAX_YAML_DEPTH} levels at line {line}")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            stack.pop()


def read_bounded(path: str | os.PathLike[str], what: str, limit: int | None = None, kind: str = "YAML") -> str:
    """The text of a regular file of at most ``limit`` bytes (default :data:`MAX_YAML_BYTES`), counted as
    read: a FIFO, device or socket is refused before reading, so nothing hangs or grows without bound."""
    source = Path(path)
    limit = MAX_YAML_BYTES if limit is None else limit
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise AutodeltaError(f"{what} {str(source)!r} does not exist; check the path") from None
    except OSError as exc:
        raise AutodeltaError(f"{what} {str(source)!r} cannot be read ({_reason(exc)}); check the file") from None
    try:
        other = _kind(os.fstat(fd).st_mode)
        if other is not None:
            raise AutodeltaError(f"{what} {str(source)!r} is {other}, not a regular file; give a file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(2**20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise AutodeltaError(f"{what} {str(source)!r} is larger than {_size(limit)}; autodelta reads {kind} files "
                                 f"of at most {_size(limit)}")
        return b"".join(chunks).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AutodeltaError(f"{what} {str(source)!r} cannot be read ({_reason(exc)}); check the file") from None
    finally:
        os.close(fd)


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """Load a YAML file, turning missing, unreadable, oversized and malformed files into one-line errors.

    Only plain YAML from a regular file is read: no tags (``!!python/...``), no anchors or
    aliases, no duplicate keys, at most :data:`MAX_YAML_BYTES` (counted as read),
    :data:`MAX_YAML_DEPTH` levels and :data:`MAX_YAML_ITEMS` entries per collection; so a
    shared file can never run code, hang or exhaust memory.
    """
    source = Path(path)
    text = read_bounded(source, what)
    try:
        _check_events(text)
        return yaml.load(text, Loader=_Loader)
    except _Refused as exc:
        raise AutodeltaError(f"{what} {str(source)!r}: {exc}") from None
    except yaml.constructor.ConstructorError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = str(getattr(exc, "problem", "") or "")
        if "unhashable" in problem:
            raise AutodeltaError(f"{what} {str(source)!r}: a key{where} is a list or mapping; keys must be names") \
                from None
        raise AutodeltaError(f"{what} {str(source)!r} uses a YAML tag{where}; tags are not allowed, "
                             "write plain values") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        detail = getattr(exc, "problem", None)
        raise AutodeltaError(
            f"{what} {str(source)!r} is not valid YAML{where}{f' ({detail})' if detail else ''}; fix the syntax "
            "or regenerate it"
        ) from None
    except RecursionError:
        raise AutodeltaError(f"{what} {str(source)!r} nests too deep; autodelta reads at most {MAX_YAML_DEPTH} "
                             "levels") from None


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
    """A shipped data folder: ``profiles`` or ``search_spaces``, top-level in the repository.

    Both are packages of their own (``autodelta.profiles``, ``autodelta.search_spaces``,
    mapped from the top-level folders by ``package-dir`` in pyproject.toml), found with
    :mod:`importlib.resources`: a wheel, an editable install and a checkout all find them.
    """
    from importlib import resources

    return Path(str(resources.files(f"autodelta.{kind}")))

