"""Backmapper families behind a registry, as openmm-ml registers its potentials.

A family turns (CG, atomistic) training data into a model that follows the contract of
:mod:`openmmbackmap.models.base`. Families register a factory under their name; the
``backmap`` command and :func:`create_family` find them by that name.
"""

from __future__ import annotations

from typing import Callable

from openmmbackmap.errors import BackmapError
from openmmbackmap.models.base import Backmapper, load_backmapper, read_metadata, save_backmapper

_FAMILIES: dict[str, Callable] = {}


def register_family(name: str, factory: Callable) -> None:
    """Register a family factory under ``name`` (called with the family's options)."""
    if name in _FAMILIES and _FAMILIES[name] is not factory:
        raise BackmapError(f"a backmapper family named {name!r} is registered already")
    _FAMILIES[name] = factory


def families() -> list[str]:
    """Names of the registered families."""
    return sorted(_FAMILIES)


def create_family(name: str, **options):
    """An instance of the family ``name``, built with ``options``."""
    try:
        factory = _FAMILIES[name]
    except KeyError:
        raise BackmapError(f"unknown backmapper family {name!r}; registered: {', '.join(families()) or 'none'}") from None
    return factory(**options)


__all__ = ["Backmapper", "create_family", "families", "load_backmapper", "read_metadata", "register_family", "save_backmapper"]
from openmmbackmap.models import ic as _ic  # noqa: E402,F401  (registers the "ic" family)
from openmmbackmap.models import cvae as _cvae  # noqa: E402,F401  (registers the "cvae" family)
from openmmbackmap.models import gan as _gan  # noqa: E402,F401  (registers the "gan" family)
