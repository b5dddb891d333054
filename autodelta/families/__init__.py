"""Search families: one module each, listed once here.

Adding a family is one new module with a :class:`~autodelta.families.base.SearchFamily`
subclass and one line in ``FAMILIES``; a space file then names it.
"""

from __future__ import annotations

from autodelta.errors import AutodeltaError
from autodelta.families.anchored import Anchored
from autodelta.families.base import SearchFamily, SeedContext
from autodelta.families.delta_dit import DeltaDiT
from autodelta.families.explicit import Explicit
from autodelta.families.free_steps import FreeSteps
from autodelta.families.stagewise import Stagewise

FAMILIES: dict[str, SearchFamily] = {
    family.name: family
    for family in (
        DeltaDiT(),
        Stagewise(),
        FreeSteps(),
        Anchored(),
        Explicit(),
    )
}


def get_family(name: str) -> SearchFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise AutodeltaError(f"unknown family {name!r}; use one of {', '.join(FAMILIES)}") from None


__all__ = ["FAMILIES", "SearchFamily", "SeedContext", "get_family"]
