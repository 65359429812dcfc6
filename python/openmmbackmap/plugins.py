"""Loading the OpenMM plugins this package relies on.

Two kinds of plugin libraries:

* openmm-torch's kernels link against libtorch, which is only on the loader's path once
  ``torch`` has been imported; a script that imports ``openmm`` before ``torch`` therefore
  gets a TorchForce without Reference/CPU kernels ("does not support all required kernels").
  :func:`load_plugins` loads such libraries again once torch is in place.
* This package's own plugin (``plugin/`` in the source tree, built by ``pip install``), a native
  :class:`MappingRestraintForce`. ``setup.py`` puts it in ``openmmbackmap/_plugin/``:
  ``libOpenMMBackmap.so`` (the force and its XML proxy), the SWIG module ``mappingrestraint``
  and ``plugins/`` with the kernel libraries, which :func:`load_plugins` loads with
  ``openmm.Platform.loadPluginsFromDirectory`` (never through ``OPENMM_PLUGIN_DIR``, which would
  replace OpenMM's own plugin folder and lose the CPU platform): Reference kernels (which serve
  the CPU platform too) and, where they were built, OpenCL and CUDA kernels. A GPU kernel library
  that does not load (no OpenCL driver, say) only takes its platform away:
  :func:`native_kernel_platforms` says which platforms the native force runs on.

``import openmmbackmap`` calls :func:`load_plugins`. When the native library is missing (a
build without a C++ compiler, say), :func:`native_plugin_error` says why and
:mod:`openmmbackmap.restraints` uses its pure-OpenMM fallback.

>>> from openmmbackmap import plugins
>>> plugins.load_plugins() == []      # already loaded when openmmbackmap was imported
True
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch  # noqa: F401  (must precede loading openmm-torch's kernels: it brings libtorch)
import openmm

#: Where setup.py installs the native plugin (libraries, SWIG module, kernel folder).
NATIVE_PLUGIN_DIR = Path(__file__).resolve().parent / "_plugin"
#: The folder of kernel libraries handed to ``Platform.loadPluginsFromDirectory``.
NATIVE_KERNEL_DIR = NATIVE_PLUGIN_DIR / "plugins"

#: The kernel library of each platform; the Reference one also serves the CPU platform.
KERNEL_LIBRARIES = {
    "Reference": "libOpenMMBackmapReference.so",
    "OpenCL": "libOpenMMBackmapOpenCL.so",
    "CUDA": "libOpenMMBackmapCUDA.so",
}

_native_class: type | None = None
_native_platforms: dict[str, str | None] = {}
_native_error: str | None = "load_plugins() has not run yet"
_native_tried = False


def load_plugins() -> list[str]:
    """Load the plugin libraries that are not loaded yet: openmm-torch's and this package's.

    Returns
    -------
    list of str
        Paths of the libraries loaded now (empty when everything was loaded already).
    """
    # First: OpenMM's failures from its own load at import, which the next
    # loadPluginsFromDirectory call replaces.
    loaded = _retry_torch_plugins()
    loaded += _load_native_plugin()
    return loaded


def _retry_torch_plugins() -> list[str]:
    loaded = []
    for failure in openmm.Platform.getPluginLoadFailures():
        match = re.match(r"Error loading library (\S+?):", failure)
        if match is None:
            continue
        path = match.group(1)
        name = os.path.basename(path)
        # Only openmm-torch's libraries can be helped by torch; OpenCL/CUDA ones lack drivers here.
        if "Torch" not in name or "OpenCL" in name or "CUDA" in name:
            continue
        try:
            openmm.Platform.loadPluginLibrary(path)
        except openmm.OpenMMException:
            continue
        loaded.append(path)
    return loaded


def _load_native_plugin() -> list[str]:
    global _native_class, _native_error, _native_tried
    if _native_tried:
        return []
    _native_tried = True
    if not NATIVE_KERNEL_DIR.is_dir():
        _native_error = (
            f"the native plugin was not built ({NATIVE_KERNEL_DIR} is missing); reinstall with "
            "`pip install -e .` and read the build output"
        )
        return []
    try:
        # Loads libOpenMMBackmap.so: the force class and its XmlSerializer proxy.
        from openmmbackmap._plugin.mappingrestraint import MappingRestraintForce
    except ImportError as error:
        _native_error = f"the native plugin's Python module does not import: {error}"
        return []
    loaded = list(openmm.Platform.loadPluginsFromDirectory(str(NATIVE_KERNEL_DIR)))
    failures = list(openmm.Platform.getPluginLoadFailures())
    loaded_names = {os.path.basename(path) for path in loaded}

    def failure_of(library: str) -> str:
        found = [failure for failure in failures if library in failure]
        if found:
            return "; ".join(found)
        if not (NATIVE_KERNEL_DIR / library).exists():
            return f"{library} was not built (see the CMake output of `pip install`)"
        return f"{library} did not load"

    if KERNEL_LIBRARIES["Reference"] not in loaded_names:
        _native_error = "the native plugin's kernels did not load: " + failure_of(KERNEL_LIBRARIES["Reference"])
        return loaded
    available = {openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())}
    for name, library in KERNEL_LIBRARIES.items():
        platform_names = ("Reference", "CPU") if name == "Reference" else (name,)
        for platform_name in platform_names:
            if platform_name not in available:
                _native_platforms[platform_name] = f"OpenMM has no {platform_name} platform here"
            elif library in loaded_names:
                _native_platforms[platform_name] = None
            else:
                _native_platforms[platform_name] = failure_of(library)
    _native_class = MappingRestraintForce
    _native_error = None
    return loaded


def native_restraint_force_class() -> type | None:
    """The native ``MappingRestraintForce`` class (an ``openmm.Force``), or None when it is not available."""
    load_plugins()
    return _native_class


def native_kernel_platforms() -> tuple[str, ...]:
    """The platforms the native ``MappingRestraintForce`` has kernels for in this process.

    Reference and CPU whenever the plugin loaded; OpenCL and CUDA where their kernels were
    built, their libraries loaded and OpenMM has the platform (it loaded a driver library; whether
    a device is present shows when a Context is made).
    """
    load_plugins()
    return tuple(name for name, reason in _native_platforms.items() if reason is None)


def native_kernel_error(platform_name: str) -> str | None:
    """Why the native force has no kernels for ``platform_name``, or None when it has."""
    load_plugins()
    if _native_error is not None:
        return _native_error
    return _native_platforms.get(platform_name, f"no kernels for a platform named {platform_name!r}")


def native_plugin_error() -> str | None:
    """Why the native plugin is not available, or None when it is."""
    load_plugins()
    return _native_error


def platform(name: str) -> openmm.Platform:
    """The OpenMM platform called ``name`` ("Reference", "CPU", "CUDA", "OpenCL"), plugins loaded.

    Raises
    ------
    InputError
        Naming the platforms this installation has, if ``name`` is not one of them.
    """
    from openmmbackmap.errors import InputError

    load_plugins()
    try:
        return openmm.Platform.getPlatformByName(name)
    except Exception as exc:  # OpenMMException
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        raise InputError(f"OpenMM platform {name!r} is not available here; available: {', '.join(names)}") from exc
