"""Mapping restraints: hold the weighted centroid of each group of atoms at a target point.

After a switch from CG to atomistic resolution, each group of atoms that makes a bead is held at
its bead while the rest relaxes:

    E = sum over groups of 0.5 * k * max(0, |c - t| - r0)^2

with c the weighted centroid of the group, t its target (the bead) and r0 an optional
flat-bottom radius. Two implementations share one interface:

* the native ``MappingRestraintForce`` of this package's OpenMM plugin (``plugin/``; loaded by
  :mod:`openmmbackmap.plugins`): C++ kernels, targets moved in one call;
* :class:`CentroidRestraintFallback`, the same restraint as an ``openmm.CustomCentroidBondForce``,
  used (with a warning) when the native library is missing.

Interface of both: ``addGroup(atoms, weights, k, r0=0) -> index``,
``getGroupParameters(index) -> (atoms, weights, k, r0)``, ``setGroupParameters(...)``,
``setTargets(array (n, 3) nm)``, ``getTargets() -> (n, 3)``, ``setTarget(i, xyz)``,
``getTarget(i)``, ``getNumGroups()``, ``setUsesPeriodicBoundaryConditions(bool)`` and
``updateParametersInContext(context)``. Bad input raises ``openmm.OpenMMException`` naming the
group and the fault.

Differences of the fallback, all from ``CustomCentroidBondForce``:

* with periodic boundaries it does not make a group whole before taking its centroid, so a group
  split across the box gets a centroid between the images (the native force unwraps each group
  relative to its first atom); the centroid-target vector is a minimum image in both;
* ``updateParametersInContext`` moves targets, k and r0 but not changed atoms or weights
  (those need a new Context), and an atom index out of range is reported at Context creation
  without the group's index;
* it is much slower to update: one ``setBondParameters`` call per group
  (``benchmarks/bench_restraint.py``).

Example
-------
>>> import numpy as np, openmm
>>> from openmmbackmap.restraints import mapping_restraint_force
>>> force = mapping_restraint_force([[0, 1], [2]], k=1000.0, targets=np.zeros((2, 3)))
>>> system = openmm.System()
>>> for _ in range(3):
...     _ = system.addParticle(12.0)
>>> _ = system.addForce(force)
>>> context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
>>> context.setPositions(np.array([[0.1, 0, 0], [0.3, 0, 0], [0, 0, 0]]))
>>> round(context.getState(getEnergy=True).getPotentialEnergy()._value, 6)   # 0.5 * 1000 * 0.2^2
20.0
>>> force.setTargets(np.array([[0.2, 0, 0], [0, 0, 0]]))
>>> force.updateParametersInContext(context)
>>> context.getState(getEnergy=True).getPotentialEnergy()._value
0.0
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import openmm
from openmm import unit

from openmmbackmap import plugins
from openmmbackmap.errors import BackmapError

__all__ = [
    "CentroidRestraintFallback",
    "NativePluginWarning",
    "mapping_restraint_force",
    "native_available",
]


class NativePluginWarning(RuntimeWarning):
    """The native plugin is missing and the slower pure-OpenMM fallback is used."""


def native_available() -> bool:
    """Whether the native ``MappingRestraintForce`` plugin is built and loaded."""
    return plugins.native_restraint_force_class() is not None


def _check_group(index: int, atoms: Sequence[int], weights: Sequence[float] | None, k: float, r0: float) -> None:
    """The native force's checks, with its messages."""
    prefix = f"MappingRestraintForce: group {index}: "
    if len(atoms) == 0:
        raise openmm.OpenMMException(prefix + "the group has no atoms")
    for atom in atoms:
        if atom < 0:
            raise openmm.OpenMMException(prefix + f"atom index {atom} is negative")
    if weights is not None and len(weights) > 0:
        if len(weights) != len(atoms):
            raise openmm.OpenMMException(prefix + f"{len(atoms)} atoms but {len(weights)} weights")
        for w in weights:
            if not (w >= 0.0) or not math.isfinite(w):
                raise openmm.OpenMMException(prefix + f"weight {w:g} is negative or not finite")
        if sum(weights) <= 0.0:
            raise openmm.OpenMMException(prefix + "the weights sum to zero")
    if not (k >= 0.0) or not math.isfinite(k):
        raise openmm.OpenMMException(prefix + f"the force constant k = {k:g} is negative or not finite")
    if not (r0 >= 0.0) or not math.isfinite(r0):
        raise openmm.OpenMMException(prefix + f"the flat-bottom radius r0 = {r0:g} is negative or not finite")


def _flat_targets(targets, num_groups: int) -> np.ndarray:
    """Targets as an (n, 3) float64 array in nm; OpenMMException (as the native force) on a wrong shape."""
    if unit.is_quantity(targets):
        targets = targets.value_in_unit(unit.nanometer)
    array = np.asarray(targets, dtype=np.float64)
    if not (array.shape == (num_groups, 3) or array.shape == (3 * num_groups,)):
        raise openmm.OpenMMException(
            f"MappingRestraintForce.setTargets: expected targets of shape ({num_groups}, 3) "
            f"(one x, y, z in nm per group) or {3 * num_groups} values, got shape {array.shape}"
        )
    array = array.reshape(num_groups, 3)
    bad = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(bad):
        raise openmm.OpenMMException(f"MappingRestraintForce.setTargets: group {bad[0]}: the target is not finite")
    return array


class CentroidRestraintFallback(openmm.CustomCentroidBondForce):
    """The mapping restraint as an ``openmm.CustomCentroidBondForce`` (one group and one bond per bead).

    Per-bond parameters k, r0 and the target x0, y0, z0; ``pointdistance`` gives the
    minimum-image distance when the force uses periodic boundary conditions. Same interface as
    the native ``MappingRestraintForce``; see the module docstring for the differences.
    """

    ENERGY = "0.5*k*max(0, pointdistance(x1, y1, z1, x0, y0, z0) - r0)^2"

    def __init__(self):
        super().__init__(1, self.ENERGY)
        for name in ("k", "r0", "x0", "y0", "z0"):
            self.addPerBondParameter(name)
        self.setName("MappingRestraintForce")
        self._equal_weights: list[bool] = []
        self._k: list[float] = []
        self._r0: list[float] = []
        self._targets: list[list[float]] = []

    def addGroup(self, atoms, weights, k, r0=0.0) -> int:  # noqa: N802  (OpenMM's spelling)
        """Add a group; its target starts at the origin. Empty or None weights mean equal weights."""
        atoms = [int(a) for a in atoms]
        weights = None if weights is None else [float(w) for w in weights]
        k, r0 = float(_strip(k, unit.kilojoule_per_mole / unit.nanometer**2)), float(_strip(r0, unit.nanometer))
        index = self.getNumGroups()
        _check_group(index, atoms, weights, k, r0)
        equal = not weights
        # An empty weight list means masses to CustomCentroidBondForce: pass equal weights explicitly.
        super().addGroup(atoms, [1.0] * len(atoms) if equal else weights)
        self.addBond([index], [k, r0, 0.0, 0.0, 0.0])
        self._equal_weights.append(equal)
        self._k.append(k)
        self._r0.append(r0)
        self._targets.append([0.0, 0.0, 0.0])
        return index

    def getGroupParameters(self, index):  # noqa: N802
        """(atoms, weights, k, r0); weights is empty when equal weights were asked for."""
        self._check_index(index, "getGroupParameters")
        atoms, weights = super().getGroupParameters(index)
        return list(atoms), ([] if self._equal_weights[index] else list(weights)), self._k[index], self._r0[index]

    def setGroupParameters(self, index, atoms, weights, k, r0=0.0) -> None:  # noqa: N802
        """Change a group. New atoms or weights reach a Context only when it is created anew."""
        self._check_index(index, "setGroupParameters")
        atoms = [int(a) for a in atoms]
        weights = None if weights is None else [float(w) for w in weights]
        k, r0 = float(_strip(k, unit.kilojoule_per_mole / unit.nanometer**2)), float(_strip(r0, unit.nanometer))
        _check_group(index, atoms, weights, k, r0)
        equal = not weights
        super().setGroupParameters(index, atoms, [1.0] * len(atoms) if equal else weights)
        self._equal_weights[index] = equal
        self._k[index] = k
        self._r0[index] = r0
        self.setBondParameters(index, [index], [k, r0, *self._targets[index]])

    def setTargets(self, targets) -> None:  # noqa: N802
        """Targets of all groups: an (n, 3) array in nm (or a Quantity), or 3n values."""
        targets = _flat_targets(targets, self.getNumGroups()).tolist()
        for index, (target, k, r0) in enumerate(zip(targets, self._k, self._r0)):
            self.setBondParameters(index, [index], [k, r0, *target])
        self._targets = targets

    def getTargets(self) -> np.ndarray:  # noqa: N802
        """Targets of all groups, shape (n, 3), nm."""
        return np.array(self._targets, dtype=np.float64).reshape(-1, 3)

    def setTarget(self, index, target) -> None:  # noqa: N802
        self._check_index(index, "setTarget")
        target = np.asarray(_strip(target, unit.nanometer), dtype=float).reshape(3)
        if not np.isfinite(target).all():
            raise openmm.OpenMMException(f"MappingRestraintForce.setTarget: group {index}: the target is not finite")
        self._targets[index] = target.tolist()
        self.setBondParameters(index, [index], [self._k[index], self._r0[index], *self._targets[index]])

    def getTarget(self, index) -> openmm.Vec3:  # noqa: N802
        self._check_index(index, "getTarget")
        return openmm.Vec3(*self._targets[index])

    def _check_index(self, index: int, method: str) -> None:
        if not 0 <= index < self.getNumGroups():
            raise openmm.OpenMMException(
                f"MappingRestraintForce.{method}: group {index} does not exist (the force has {self.getNumGroups()} groups)"
            )


def _strip(value, target_unit):
    return value.value_in_unit(target_unit) if unit.is_quantity(value) else value


def mapping_restraint_force(
    groups: Sequence[Sequence[int]] = (),
    weights: Sequence[Sequence[float] | None] | None = None,
    k: float | Sequence[float] = 1000.0,
    r0: float | Sequence[float] = 0.0,
    targets=None,
    periodic: bool = False,
    native: bool | None = None,
    platform: str | None = None,
):
    """Make a mapping-restraint force: the native plugin's when it is loaded, else the fallback.

    Parameters
    ----------
    groups
        Atom indices of each group (e.g. ``[bead.atom_indices for bead in mapping.beads]``).
    weights
        Weights of each group's atoms (same shapes as ``groups``; None or empty for equal weights);
        None: equal weights everywhere.
    k, r0
        Force constant (kJ/mol/nm^2) and flat-bottom radius (nm), one value or one per group.
    targets
        Targets, shape (n_groups, 3) in nm; None leaves them at the origin.
    periodic
        Whether centroids and centroid-target vectors use periodic boundary conditions. Must be
        True in a periodic System: the native force refuses otherwise (GPU platforms wrap
        molecules into the box, so absolute centroids are not defined there).
    native
        None: native if available, else the fallback with a :class:`NativePluginWarning`;
        True: native or a BackmapError; False: always the fallback.
    platform
        The name of the OpenMM platform the force will run on, if known: the native force is
        used only where it has kernels for it (:func:`openmmbackmap.plugins.native_kernel_platforms`;
        an OpenCL or CUDA build may be missing), else as for a missing plugin.

    Returns
    -------
    openmm.Force
        A native ``MappingRestraintForce`` or a :class:`CentroidRestraintFallback`.
    """
    native_class = plugins.native_restraint_force_class()
    reason = plugins.native_plugin_error()
    if native_class is not None and platform is not None:
        reason = plugins.native_kernel_error(platform)
        if reason is not None:
            native_class = None
            reason = f"no native kernels for the {platform} platform: {reason}"
    if native is True and native_class is None:
        raise BackmapError(f"the native MappingRestraintForce is not available: {reason}")
    if native is None and native_class is None:
        warnings.warn(
            "openmm-backmap's native MappingRestraintForce is not available "
            f"({reason}); using the slower CustomCentroidBondForce fallback",
            NativePluginWarning,
            stacklevel=2,
        )
    use_native = native_class is not None and native is not False
    force = native_class() if use_native else CentroidRestraintFallback()
    n = len(groups)
    ks = np.broadcast_to(np.asarray(_strip(k, unit.kilojoule_per_mole / unit.nanometer**2), dtype=float), (n,))
    r0s = np.broadcast_to(np.asarray(_strip(r0, unit.nanometer), dtype=float), (n,))
    for index, atoms in enumerate(groups):
        group_weights = None if weights is None else weights[index]
        group_weights = [] if group_weights is None else [float(w) for w in group_weights]
        force.addGroup([int(a) for a in atoms], group_weights, float(ks[index]), float(r0s[index]))
    if targets is not None:
        force.setTargets(targets)
    force.setUsesPeriodicBoundaryConditions(periodic)
    return force
