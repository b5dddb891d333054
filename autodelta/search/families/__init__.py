"""Search families: one module each, listed once here.

Adding a family is one new module with a :class:`~autodelta.search.families.base.SearchFamily`
subclass and one line in ``FAMILIES``; a space file then names it.
"""

from __future__ import annotations

from autodelta.errors import AutodeltaError
from autodelta.search.families.anchored import Anchored
from autodelta.search.families.base import SearchFamily, SeedContext
from autodelta.search.families.delta_dit import DeltaDiT
from autodelta.search.families.explicit import Explicit
from autodelta.search.families.free_steps import FreeSteps
from autodelta.search.families.stagewise import Stagewise

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
