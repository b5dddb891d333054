"""One exception type for every mistake a user can fix.

The CLI turns an :class:`AutodeltaError` into a single line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AutodeltaError(Exception):
    """A user-fixable problem. The message names the problem and the fix, on one line."""


class ScheduleError(AutodeltaError):
    """A schedule file or plan is invalid, or does not fit the model it is applied to."""


class BudgetError(AutodeltaError):
    """A speed budget cannot be parsed or cannot be reached."""


class ModelError(AutodeltaError):
    """A model profile is unknown, or its weights are not available."""
