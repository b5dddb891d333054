"""Optuna storage with the limits a shared search needs: timeouts, heartbeats, no leaked passwords.

``optuna.create_study(storage=url)`` would build an ``RDBStorage`` with the drivers'
defaults: no connect timeout (a server that accepts and never answers hangs the search),
SQLite's 5 s busy timeout (workers that stop at once hit "database is locked"), and no
heartbeat (a killed trial stays RUNNING for ever). autodelta builds the storage itself:
connect and statement timeouts per backend, a long SQLite busy timeout, and Optuna's own
heartbeat, which marks trials of dead workers FAIL when any worker next starts a trial.
Storage URLs are printed and stored only through :func:`redact_url`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna

from autodelta.errors import AutodeltaError

CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_S = 120
SQLITE_BUSY_TIMEOUT_S = 60
HEARTBEAT_S = 30
GRACE_S = 120


def _connect_args(backend: str) -> dict[str, Any]:
    if backend == "postgresql":
        return {"connect_timeout": CONNECT_TIMEOUT_S, "options": f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}"}
    if backend == "mysql":
        return {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": STATEMENT_TIMEOUT_S,
                "write_timeout": STATEMENT_TIMEOUT_S}
    if backend == "sqlite":
        return {"timeout": SQLITE_BUSY_TIMEOUT_S}
    return {}


def _parse(url: str) -> Any:
    """The sqlalchemy URL object of ``url``, or ``None`` if it is not one."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url)
    except Exception:
        return None


def redact_url(url: str) -> str:
    """A storage URL safe to print or share: no password, and a SQLite file by its name only.

    ``postgresql://user:secret@host/db`` → ``postgresql://user:***@host/db``;
    ``sqlite:////home/me/out/study.db`` → ``sqlite:///study.db`` (no absolute local path).
    """
    parsed = _parse(url)
    if parsed is None:  # not a URL sqlalchemy understands: show its scheme only
        return url.split("://", 1)[0] + "://…" if "://" in url else "…"
    if parsed.get_backend_name() == "sqlite":
        return f"{parsed.drivername}:///{Path(parsed.database).name}" if parsed.database else str(parsed)
    return str(parsed.render_as_string(hide_password=True))


def redact_text(text: str, url: str) -> str:
    """``text`` (e.g. a driver's error message) with the password of ``url`` masked wherever it appears."""
    parsed = _parse(url)
    password = parsed.password if parsed is not None else None
    return text.replace(str(password), "***") if password else text


def backend_of(url: str) -> str:
    """The database backend of a storage URL (``sqlite``, ``postgresql``, …); a bad URL is one line."""
    parsed = _parse(url)
    if parsed is None:
        raise AutodeltaError(f"storage {redact_url(url)!r} is not a database URL; use e.g. sqlite:///study.db or "
                             "postgresql+psycopg2://user@host/db")
    return str(parsed.get_backend_name())


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """An ``RDBStorage`` for ``url`` with timeouts and heartbeats (see the module docstring)."""
    backend = backend_of(url)
    with warnings.catch_warnings():  # heartbeat_interval is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs={"connect_args": _connect_args(backend), "pool_pre_ping": True},
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
        )
