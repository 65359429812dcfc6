"""MD readiness: can a backmapped structure be handed straight to OpenMM?

A backmapped frame is *MD ready* when, in the force field it was backmapped for, it has a
sane potential energy, a short restrained minimisation barely moves it, and a short
unrestrained Langevin run from the minimised structure neither blows up (NaN, constraint
failure) nor moves atoms absurdly far per step.

:class:`ReadinessChecker` builds one OpenMM ``Context`` from a ``System`` and reuses it for
every frame (positions are set from numpy arrays in nm; the heavy-atom restraint reference
positions are per-particle parameters changed with ``updateParametersInContext``), so
scoring many frames costs no Context creation per frame. :func:`readiness` scores a
trajectory and summarises it. :func:`reference_system` builds the ``System`` of the standard
reference setup (:mod:`openmmbackmap.data`: amber99sbildn + OBC implicit solvent, no cutoff,
constraints on bonds to hydrogen).

Units are OpenMM's: nm, ps, kJ/mol, K.

Examples
--------
>>> from openmmbackmap import io
>>> topology, positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
>>> checker = ReadinessChecker(reference_system(topology), topology, md_steps=50)
>>> result = checker.check(positions)
>>> bool(result.stable), bool(result.minimization_heavy_max_displacement_nm < 0.05)
(True, True)
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from openmmbackmap import plugins
from openmmbackmap.data import REFERENCE_FORCEFIELD, reference_system
from openmmbackmap.errors import InputError
from openmmbackmap.geometry import superpose

__all__ = ["FrameReadiness", "ReadinessChecker", "readiness", "reference_system", "REFERENCE_FORCEFIELD"]

_RESTRAINT_K = "backmap_restraint_k"


@dataclass(frozen=True)
class FrameReadiness:
    """Readiness of one frame. Energies are potential energies of the force field (restraint excluded).

    Attributes
    ----------
    energy_kj_mol
        Single-point potential energy of the frame as given, kJ/mol (no constraints applied).
        Ideal: within the thermal spread of the reference trajectory's energies. ``inf`` where
        it is undefined (atoms at exactly the same position give NaN in OpenMM) or OpenMM fails.
    minimized_energy_kj_mol
        Potential energy after the restrained minimisation, kJ/mol (restraint energy
        excluded); ``inf`` if the minimisation failed.
    minimization_heavy_rmsd_nm
        Heavy-atom RMSD (Kabsch fit on heavy atoms) between the frame and its minimised
        structure, nm. Ideal: 0 (about 0.01 nm is normal for a thermal frame at 300 K, whose
        bonds and angles relax); ``inf`` if the minimisation failed.
    minimization_heavy_max_displacement_nm
        Largest displacement of a heavy atom caused by the minimisation (same fit), nm.
        Ideal: small (< 0.05 nm).
    minimization_max_displacement_nm
        Largest displacement of any atom, hydrogens included (same fit), nm. A misplaced
        hydrogen shows here even when the heavy-atom numbers are small. Ideal: small, but
        note that methyl groups of thermal frames rotate to their staggered minimum, which
        alone moves hydrogens by ~0.03-0.08 nm.
    stable
        True when the short MD run finished with finite energies and positions, no OpenMM
        exception, and no atom moving more than ``max_step_nm`` in one step. Ideal: True.
    md_max_step_nm
        Largest per-step displacement seen in the MD run (|velocity| x time step at each
        check), nm; ``inf`` if the run produced NaN, ``nan`` if no MD was run.
    error
        Why the frame is not stable (exception text, "non-finite energy", ...), or None.
    seconds
        Wall time spent on the frame, s.
    """

    energy_kj_mol: float
    minimized_energy_kj_mol: float
    minimization_heavy_rmsd_nm: float
    minimization_heavy_max_displacement_nm: float
    minimization_max_displacement_nm: float
    stable: bool
    md_max_step_nm: float
    error: str | None
    seconds: float


class ReadinessChecker:
    """One OpenMM Context, reused to score many frames of one topology.

    A copy of ``system`` gets a heavy-atom position restraint
    ``0.5 * k * |r - r0|^2`` (a ``CustomExternalForce`` with a global parameter ``k`` and
    per-particle reference positions ``x0, y0, z0``) in a force group of its own; reported
    energies exclude that group, and ``k`` is set to 0 outside the minimisation, so the MD
    run is unrestrained.

    Parameters
    ----------
    system
        OpenMM System for the topology (not modified; a copy is used), e.g. from
        :func:`reference_system`. Its constraints (HBonds in the reference setup) are
        enforced by the minimiser and the integrator.
    topology
        The matching topology (hydrogens are recognised by element).
    platform
        OpenMM platform name: "CPU" (default) or "Reference" (slow, deterministic), or a GPU
        platform where available.
    platform_properties
        Platform properties, e.g. ``{"Threads": "1"}`` on CPU.
    restraint_k
        Force constant of the heavy-atom restraints during minimisation, kJ/mol/nm^2.
    tolerance
        Minimisation tolerance: RMS force at which it stops, kJ/mol/nm.
    max_iterations
        Minimisation iteration limit (0: until converged).
    md_steps
        Steps of the unrestrained stability run (0 skips the run; ``stable`` then only
        reflects the energy and minimisation).
    timestep_fs, temperature, friction
        ``LangevinMiddleIntegrator`` settings: fs, K, 1/ps.
    check_interval
        Steps between stability checks (energy, positions, velocities) in the MD run.
    max_step_nm
        Largest sane displacement of an atom in one step, nm. Thermal motion at 300 K and
        2 fs is ~0.005 nm for a hydrogen; the default 0.05 nm is ten times that.
    integrator_seed
        Seed of the Langevin integrator's random numbers (set once, when the Context is
        created: the noise of a frame's run depends on how many frames ran before it; the
        initial velocities are seeded per call).

    Raises
    ------
    InputError
        If the topology and system disagree on the number of atoms.
    ValueError
        If the platform is not available or a setting is out of range.
    """

    def __init__(
        self,
        system: openmm.System,
        topology: app.Topology,
        *,
        platform: str = "CPU",
        platform_properties: Mapping[str, str] | None = None,
        restraint_k: float = 1000.0,
        tolerance: float = 10.0,
        max_iterations: int = 500,
        md_steps: int = 500,
        timestep_fs: float = 2.0,
        temperature: float = 300.0,
        friction: float = 1.0,
        check_interval: int = 10,
        max_step_nm: float = 0.05,
        integrator_seed: int = 1,
    ) -> None:
        n_atoms = topology.getNumAtoms()
        if system.getNumParticles() != n_atoms:
            raise InputError(
                f"system has {system.getNumParticles()} particles but the topology has {n_atoms} atoms"
            )
        if restraint_k < 0 or tolerance <= 0 or max_iterations < 0 or md_steps < 0:
            raise ValueError("restraint_k and max_iterations must be >= 0, tolerance > 0, md_steps >= 0")
        if timestep_fs <= 0 or temperature <= 0 or friction < 0 or check_interval <= 0 or max_step_nm <= 0:
            raise ValueError("timestep_fs, temperature, check_interval, max_step_nm must be positive, friction >= 0")
        self.topology = topology
        self.n_atoms = n_atoms
        self.restraint_k = float(restraint_k)
        self.tolerance = float(tolerance)
        self.max_iterations = int(max_iterations)
        self.md_steps = int(md_steps)
        self.timestep_ps = float(timestep_fs) * 1e-3
        self.temperature = float(temperature)
        self.check_interval = int(check_interval)
        self.max_step_nm = float(max_step_nm)

        system = copy.deepcopy(system)
        masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(n_atoms)])
        elements = [a.element for a in topology.atoms()]
        #: Heavy atoms (not hydrogen, not massless virtual sites): restrained, and the RMSD's atoms.
        self.heavy = np.array([
            (e is None or e.symbol != "H") and m > 0 for e, m in zip(elements, masses)
        ])
        if not self.heavy.any():
            raise InputError("the topology has no heavy atoms to restrain")
        used = {system.getForce(i).getForceGroup() for i in range(system.getNumForces())}
        free = [g for g in range(31, -1, -1) if g not in used]
        if not free:
            raise ValueError("every force group 0-31 is in use; none is left for the restraint")
        self._restraint_group = free[0]
        self._energy_groups = {g for g in range(32) if g != self._restraint_group}

        restraint = openmm.CustomExternalForce(f"0.5*{_RESTRAINT_K}*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
        restraint.addGlobalParameter(_RESTRAINT_K, 0.0)
        for name in ("x0", "y0", "z0"):
            restraint.addPerParticleParameter(name)
        self._restrained = np.flatnonzero(self.heavy)
        for i in self._restrained:
            restraint.addParticle(int(i), [0.0, 0.0, 0.0])
        restraint.setForceGroup(self._restraint_group)
        system.addForce(restraint)
        self._restraint = restraint

        self.integrator = openmm.LangevinMiddleIntegrator(
            self.temperature * unit.kelvin, friction / unit.picosecond, self.timestep_ps * unit.picoseconds
        )
        self.integrator.setRandomNumberSeed(int(integrator_seed))
        omm_platform = plugins.platform(platform)
        self.system = system
        if platform_properties is None and omm_platform.getName() == "CPU":
            # One thread: for peptides thread start-up costs more than it saves (about 0.1 s
            # against 0.65 s per frame measured on 2 cores), and scoring runs beside other work.
            platform_properties = {"Threads": "1"}
        self.context = openmm.Context(system, self.integrator, omm_platform, dict(platform_properties or {}))
        self.platform = self.context.getPlatform().getName()

    @classmethod
    def from_topology(
        cls, topology: app.Topology, forcefield_files: Sequence[str] = REFERENCE_FORCEFIELD, **kwargs: Any
    ) -> "ReadinessChecker":
        """Checker for the standard reference setup (:func:`reference_system`); ``kwargs`` go to the constructor."""
        return cls(reference_system(topology, forcefield_files), topology, **kwargs)

    # -- single steps --------------------------------------------------------------------------

    def _frame(self, xyz: np.ndarray) -> np.ndarray:
        xyz = np.asarray(xyz, dtype=np.float64)
        if xyz.shape != (self.n_atoms, 3):
            raise InputError(f"a frame must have shape ({self.n_atoms}, 3) in nm, got {xyz.shape}")
        return xyz

    def _set_positions(self, xyz: np.ndarray) -> None:
        self.context.setPositions(xyz)
        self.context.setVelocities(np.zeros_like(xyz))
        self.context.setTime(0.0)

    def _energy(self) -> float:
        state = self.context.getState(getEnergy=True, groups=self._energy_groups)
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    def _positions(self) -> np.ndarray:
        return self.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    def energy(self, xyz: np.ndarray) -> float:
        """Single-point potential energy of one frame (atoms, 3) in nm, kJ/mol.

        ``inf`` where the energy is undefined (NaN from OpenMM, e.g. two atoms at exactly the
        same position) or OpenMM fails. Ideal: within the thermal spread of the reference
        trajectory's energies.
        """
        xyz = self._frame(xyz)
        if not np.isfinite(xyz).all():
            return math.inf
        self._set_positions(xyz)
        try:
            energy = self._energy()
        except openmm.OpenMMException:
            return math.inf
        return energy if not math.isnan(energy) else math.inf

    def minimize(self, xyz: np.ndarray) -> tuple[np.ndarray, float]:
        """Restrained minimisation of one frame: (minimised positions (atoms, 3) nm, energy kJ/mol).

        Heavy atoms are restrained to their positions in ``xyz`` with ``restraint_k``; the
        returned energy excludes the restraint. Raises ``openmm.OpenMMException`` if OpenMM
        fails (:meth:`check` catches it).
        """
        xyz = self._frame(xyz)
        self._set_restraint_reference(xyz)
        self._set_positions(xyz)
        self.context.setParameter(_RESTRAINT_K, self.restraint_k)
        try:
            openmm.LocalEnergyMinimizer.minimize(self.context, self.tolerance, self.max_iterations)
        finally:
            self.context.setParameter(_RESTRAINT_K, 0.0)
        return self._positions(), self._energy()

    def _set_restraint_reference(self, xyz: np.ndarray) -> None:
        for k, i in enumerate(self._restrained):
            x, y, z = xyz[i]
            self._restraint.setParticleParameters(k, int(i), [float(x), float(y), float(z)])
        self._restraint.updateParametersInContext(self.context)

    def run_md(self, seed: int = 0) -> tuple[bool, float, str | None]:
        """Unrestrained Langevin run of ``md_steps`` from the Context's current positions.

        Velocities are drawn at ``temperature`` with ``seed``. Returns (stable, largest
        per-step displacement in nm (``inf`` after NaN or an OpenMM error), error text or None).
        """
        self.context.setParameter(_RESTRAINT_K, 0.0)
        self.context.setTime(0.0)
        self.context.setVelocitiesToTemperature(self.temperature * unit.kelvin, int(seed))
        max_step = 0.0
        done = 0
        try:
            while done < self.md_steps:
                n = min(self.check_interval, self.md_steps - done)
                self.integrator.step(n)
                done += n
                state = self.context.getState(getEnergy=True, getPositions=True, getVelocities=True)
                energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
                positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
                velocities = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
                if not (math.isfinite(energy) and np.isfinite(positions).all() and np.isfinite(velocities).all()):
                    return False, math.inf, f"non-finite energy or positions after {done} steps"
                step = float(np.linalg.norm(velocities, axis=1).max()) * self.timestep_ps
                max_step = max(max_step, step)
                if step > self.max_step_nm:
                    return False, max_step, (
                        f"an atom moved {step:.3g} nm in one step after {done} steps (limit {self.max_step_nm} nm)"
                    )
        except openmm.OpenMMException as exc:
            return False, math.inf, f"OpenMM failed after {done} steps: {exc}"
        return True, max_step if done else math.nan, None

    # -- a whole frame -------------------------------------------------------------------------

    def check(self, xyz: np.ndarray, seed: int = 0) -> FrameReadiness:
        """Score one frame (atoms, 3) in nm: energy, restrained minimisation, short MD run.

        Never raises for a bad structure (overlapping atoms, NaN coordinates, stretched
        bonds): failures are reported in the result (``stable=False``, ``error``), and the
        Context is reset by the next frame's positions, so the next frame is scored as if
        on a fresh Context.

        Raises
        ------
        InputError
            Only if the frame has the wrong shape.
        """
        start = time.perf_counter()
        xyz = self._frame(xyz)
        inf = math.inf

        def failed(energy: float, error: str) -> FrameReadiness:
            return FrameReadiness(energy, inf, inf, inf, inf, False, inf, error, time.perf_counter() - start)

        if not np.isfinite(xyz).all():
            return failed(inf, "non-finite input coordinates")
        energy = self.energy(xyz)
        try:
            minimized, minimized_energy = self.minimize(xyz)
        except openmm.OpenMMException as exc:
            return failed(energy, f"minimisation failed: {exc}")
        if not (np.isfinite(minimized).all() and math.isfinite(minimized_energy)):
            return failed(energy, "non-finite energy or positions after minimisation")
        fitted = superpose(minimized[None], xyz[None], self._restrained)[0]
        shift = np.linalg.norm(fitted - xyz, axis=1)
        if self.md_steps:
            stable, max_step, error = self.run_md(seed)
        else:
            stable, max_step, error = True, math.nan, None
        return FrameReadiness(
            energy_kj_mol=energy,
            minimized_energy_kj_mol=minimized_energy,
            minimization_heavy_rmsd_nm=float(np.sqrt((shift[self.heavy] ** 2).mean())),
            minimization_heavy_max_displacement_nm=float(shift[self.heavy].max()),
            minimization_max_displacement_nm=float(shift.max()),
            stable=bool(stable),
            md_max_step_nm=max_step,
            error=error,
            seconds=time.perf_counter() - start,
        )


def _median(values: Sequence[float]) -> float:
    # Failed frames carry inf, so they pull the median up instead of dropping out of it.
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    return float(np.median(array)) if array.size else math.nan


def readiness(
    xyz_frames: np.ndarray,
    checker: ReadinessChecker,
    n_frames: int | None = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """MD readiness of a backmapped trajectory, scored on evenly spaced frames.

    Parameters
    ----------
    xyz_frames
        (frames, atoms, 3) or (atoms, 3) coordinates, nm.
    checker
        A :class:`ReadinessChecker` for the trajectory's topology (reused across calls).
    n_frames
        Number of evenly spaced frames to score (first and last included); None scores all.
        Each frame costs a minimisation and ``checker.md_steps`` MD steps.
    seed
        Frame ``k`` of the selection gets initial velocities from seed ``seed + k``.

    Returns
    -------
    dict
        Summary numbers:

        - ``median_energy_kj_mol``, ``median_minimized_energy_kj_mol``: medians over the
          frames, kJ/mol; failed frames count as ``inf``, so they raise the median rather
          than drop out of it. Ideal: the reference trajectory's values (for the bundled
          alanine dipeptide at 300 K about -70 and -133 kJ/mol).
        - ``median_heavy_rmsd_nm``, ``median_heavy_max_displacement_nm``,
          ``median_max_displacement_nm``: how far the restrained minimisation moved the
          structures, nm (``inf`` for failed frames). Ideal: 0; about 0.01 nm heavy-atom
          RMSD for thermal reference frames.
        - ``fraction_stable``: fraction of frames whose MD run was stable. Ideal 1.
        - ``n_frames``, ``frame_indices``, ``seconds_per_frame`` (wall time), ``platform``.

        and per-frame lists (in ``frame_indices`` order): ``energy_kj_mol``,
        ``minimized_energy_kj_mol``, ``heavy_rmsd_nm``, ``heavy_max_displacement_nm``,
        ``max_displacement_nm``, ``stable``,
        ``md_max_step_nm``, ``error`` (None or the reason a frame is not stable).
    """
    xyz = np.asarray(xyz_frames, dtype=np.float64)
    if xyz.ndim == 2:
        xyz = xyz[None]
    if xyz.ndim != 3 or xyz.shape[0] == 0:
        raise InputError(f"frames must have shape (frames, atoms, 3), got {np.shape(xyz_frames)}")
    total = xyz.shape[0]
    if n_frames is None or n_frames >= total:
        indices = np.arange(total)
    else:
        if n_frames <= 0:
            raise ValueError(f"n_frames must be positive or None, got {n_frames}")
        indices = np.unique(np.round(np.linspace(0, total - 1, int(n_frames))).astype(np.int64))
    results = [checker.check(xyz[i], seed=seed + k) for k, i in enumerate(indices)]
    columns = {key: [asdict(r)[key] for r in results] for key in asdict(results[0])}
    return {
        "n_frames": len(results),
        "frame_indices": indices.tolist(),
        "platform": checker.platform,
        "median_energy_kj_mol": _median(columns["energy_kj_mol"]),
        "median_minimized_energy_kj_mol": _median(columns["minimized_energy_kj_mol"]),
        "median_heavy_rmsd_nm": _median(columns["minimization_heavy_rmsd_nm"]),
        "median_heavy_max_displacement_nm": _median(columns["minimization_heavy_max_displacement_nm"]),
        "median_max_displacement_nm": _median(columns["minimization_max_displacement_nm"]),
        "fraction_stable": float(np.mean(columns["stable"])),
        "seconds_per_frame": float(np.mean(columns["seconds"])),
        "energy_kj_mol": columns["energy_kj_mol"],
        "minimized_energy_kj_mol": columns["minimized_energy_kj_mol"],
        "heavy_rmsd_nm": columns["minimization_heavy_rmsd_nm"],
        "heavy_max_displacement_nm": columns["minimization_heavy_max_displacement_nm"],
        "max_displacement_nm": columns["minimization_max_displacement_nm"],
        "stable": columns["stable"],
        "md_max_step_nm": columns["md_max_step_nm"],
        "error": columns["error"],
    }
