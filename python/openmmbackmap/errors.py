"""Exceptions raised by openmm-backmap.

Every error that bad user input can cause is one of these, and its message names the
file, line, residue or atom at fault, so a command-line user sees what to fix.
"""


class BackmapError(Exception):
    """Base class of all openmm-backmap errors."""


class MappingError(BackmapError, ValueError):
    """A mapping cannot be built or does not fit the topology it is applied to."""


class InputError(BackmapError, ValueError):
    """A structure, topology or trajectory file cannot be used as given."""
