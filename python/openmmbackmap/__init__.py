"""openmm-backmap: backmapping and resolution switching between coarse-grained and atomistic MD."""

from importlib.metadata import PackageNotFoundError, version as _version

from openmmbackmap.errors import BackmapError, InputError, MappingError
from openmmbackmap.plugins import load_plugins

load_plugins()

from openmmbackmap.mapping import Bead, Mapping, builtin_schemes  # noqa: E402  (after the plugins)

try:
    __version__ = _version("openmm-backmap")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "BackmapError", "Bead", "InputError", "Mapping", "MappingError", "builtin_schemes", "load_backmapper", "__version__",
]


def __getattr__(name: str):
    """``openmmbackmap.load_backmapper`` without importing torch on every ``import openmmbackmap``."""
    if name == "load_backmapper":
        from openmmbackmap.models import load_backmapper

        return load_backmapper
    raise AttributeError(f"module 'openmmbackmap' has no attribute {name!r}")
