"""Loading the OpenMM plugins this package relies on.

OpenMM loads every plugin library in its plugin folder when ``openmm`` is first imported.
openmm-torch's kernels link against libtorch, which is only on the loader's path once
``torch`` has been imported; a script that imports ``openmm`` before ``torch`` therefore
gets a TorchForce without Reference/CPU kernels ("does not support all required kernels").
:func:`load_plugins` loads such libraries again once torch is in place.
"""

from __future__ import annotations

import os
import re

import torch  # noqa: F401  (must precede loading openmm-torch's kernels: it brings libtorch)
import openmm


def load_plugins() -> list[str]:
    """Retry the openmm-torch plugin libraries that failed to load before torch was imported.

    Returns
    -------
    list of str
        Paths of the libraries loaded now (empty when nothing had failed).
    """
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
