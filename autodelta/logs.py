"""Logging habits: the library logs under ``autodelta.*`` and leaves handlers to the CLI.

Other libraries (diffusers, Optuna, fvcore, cache-dit) are chatty at INFO; autodelta
quiets them only inside :func:`quieted`, restoring their levels afterwards, so an
application that embeds autodelta keeps the logging it configured.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quieted(*prefixes: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise every logger whose name starts with one of ``prefixes`` to ``level`` for the block."""
    def matching() -> list[logging.Logger]:
        names = [n for n in list(logging.root.manager.loggerDict) if n.startswith(prefixes)]
        return [logging.getLogger(n) for n in {*names, *prefixes}]

    saved = [(logger, logger.level) for logger in matching()]
    for logger, previous in saved:
        if previous == logging.NOTSET or previous < level:
            logger.setLevel(level)
    try:
        yield
    finally:
        for logger, previous in saved:
            logger.setLevel(previous)


def configure_cli_logging(verbose: bool = False) -> None:
    """What the CLI shows: autodelta's own warnings (or INFO with ``verbose``) as ``autodelta: message``."""
    logger = logging.getLogger("autodelta")
    if not any(getattr(h, "_autodelta", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("autodelta: %(message)s"))
        handler._autodelta = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
