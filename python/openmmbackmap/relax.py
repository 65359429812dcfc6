"""Restrained relaxation of backmapped structures in reusable atomistic Contexts.

After a switch from CG to atomistic resolution the reconstructed atoms are relaxed with every
mapped group's centroid held on its bead (:mod:`openmmbackmap.restraints`: the native
``MappingRestraintForce`` or its pure-OpenMM fallback), so that minimisation removes clashes
and strained bonds without drifting away from the CG configuration. The Contexts are created
once and reused at every switch: only positions, targets and velocities change.

Two Contexts, because OpenMM's minimiser enforces constraints by repeating the minimisation
with ever stiffer penalty springs, which made a chignolin relaxation about five times slower
(shared/FACTS.md; ``benchmarks/bench_switching.py``):

* the *minimisation* Context holds a copy of the System in which every constraint is a stiff
  harmonic bond at the constrained length, plus the mapping restraint and a chirality hold;
* the *MD* Context (:attr:`RestrainedRelaxation.simulation`, an ``app.Simulation``) holds the
  System as given, constraints included. The minimised positions are copied into it and the
  constraints applied; energies are reported from it, so they never include the restraint.

The chirality hold keeps every chiral centre (``TopologyFeatures.chiral_centres``) on the side of
its plane where the minimisation found it: minimising a clashing reconstruction can push a
hydrogen through its centre's plane and invert it (seen on chignolin's Asp3 C-alpha with a
preliminary model), the very error learned backmappers exist to avoid. For each centre c with
neighbours a, b, d it adds ``k * min(0, s * v - margin)^2``, with v the triple product of the
three unit bond vectors (about 0.77 at a tetrahedral centre, 0 when flat) and s the sign v has
in the structure handed to :meth:`RestrainedRelaxation.relax`; zero for any sane geometry.
The omega hold does the same for peptide bonds (``TopologyFeatures.omegas``, CA-C-N-CA): a
minimisation that pushes a clashing side chain away can drag a peptide bond over its barrier
(seen on a chignolin `gan` reconstruction, :func:`omega_hold_force`), and a cis peptide is
again what a backmapper must not produce. Each omega is held on the side (cis or trans) it has
in the structure handed in.

Example
-------
>>> from openmmbackmap import io
>>> from openmmbackmap.data import reference_system
>>> from openmmbackmap.mapping import Mapping
>>> topology, positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
>>> mapping = Mapping.from_scheme(topology, "residue_com")
>>> relaxation = RestrainedRelaxation(reference_system(topology), topology, mapping, platform="Reference")
>>> result = relaxation.relax(positions + 0.01, mapping.map(positions))
>>> result.energy_after < result.energy_before, result.bead_rmsd < 0.01
(True, True)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping as MappingType
from dataclasses import asdict, dataclass

import numpy as np
import openmm
import openmm.app as app
from openmm import unit

from openmmbackmap import plugins
from openmmbackmap.errors import InputError
from openmmbackmap.geometry import dihedrals, signed_volumes
from openmmbackmap.mapping import Mapping
from openmmbackmap.restraints import mapping_restraint_force

__all__ = ["RelaxationResult", "RelaxationSettings", "RestrainedRelaxation"]


@dataclass(frozen=True)
class RelaxationSettings:
    """How a backmapped structure is relaxed.

    Attributes
    ----------
    restraint_k
        Force constant of each group's centroid restraint, kJ/mol/nm^2. 5000 holds a centroid
        within about 0.01 nm of its bead against the forces of a strained structure.
    flat_bottom
        Radius (nm) within which a centroid moves freely.
    tolerance
        Minimisation stops when the RMS force is below this, kJ/mol/nm.
    max_iterations
        Minimisation iteration cap (0: until converged). A switch's cost is dominated by it.
    strong_tolerance, strong_max_iterations
        The stronger relaxation used when a structure still fails its checks after resampling.
    hold_chirality
        Keep every chiral centre's handedness during minimisation (see the module docstring).
    hold_omega
        Keep every peptide bond cis or trans as it was handed in (see the module docstring).
    """

    restraint_k: float = 5000.0
    flat_bottom: float = 0.0
    tolerance: float = 10.0
    max_iterations: int = 200
    strong_tolerance: float = 1.0
    strong_max_iterations: int = 2000
    hold_chirality: bool = True
    hold_omega: bool = True

    def __post_init__(self):
        if self.restraint_k < 0 or self.flat_bottom < 0:
            raise ValueError(f"restraint_k and flat_bottom must be >= 0; got {self.restraint_k}, {self.flat_bottom}")
        if self.tolerance <= 0 or self.strong_tolerance <= 0:
            raise ValueError("minimisation tolerances must be positive")
        if self.max_iterations < 0 or self.strong_max_iterations < 0:
            raise ValueError("iteration caps must be >= 0")

    @classmethod
    def from_dict(cls, values: MappingType | None, source: str = "relaxation settings") -> "RelaxationSettings":
        """Settings from a config section; unknown keys are an error naming them."""
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"{source}: unknown option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RelaxationResult:
    """The outcome of one restrained minimisation.

    Attributes
    ----------
    positions
        Relaxed coordinates, nm, (atoms, 3).
    energy_before, energy_after
        Potential energy without the restraint, kJ/mol, before and after minimisation.
    restraint_energy
        Energy of the restraint after minimisation, kJ/mol.
    bead_rmsd
        RMS distance between each group's centroid and its bead after minimisation, nm.
    seconds
        Wall time of the minimisation (positions in, energies out).
    """

    positions: np.ndarray
    energy_before: float
    energy_after: float
    restraint_energy: float
    bead_rmsd: float
    seconds: float


#: Chirality hold: force constant (kJ/mol) and the normalised triple product below which it acts.
CHIRALITY_K = 5000.0
CHIRALITY_MARGIN = 0.3


def chirality_hold_force(chiral_centres: np.ndarray) -> openmm.CustomCompoundBondForce:
    """A force keeping each chiral centre (rows ``centre, a, b, d``) on its side; per-centre sign ``s`` (0: off)."""
    expression = (
        "k_chiral * min(0, s * v - margin)^2;"
        "v = (ax * (by * dz - bz * dy) + ay * (bz * dx - bx * dz) + az * (bx * dy - by * dx)) / (la * lb * ld);"
        "la = sqrt(ax^2 + ay^2 + az^2); lb = sqrt(bx^2 + by^2 + bz^2); ld = sqrt(dx^2 + dy^2 + dz^2);"
        "ax = x2 - x1; ay = y2 - y1; az = z2 - z1;"
        "bx = x3 - x1; by = y3 - y1; bz = z3 - z1;"
        "dx = x4 - x1; dy = y4 - y1; dz = z4 - z1"
    )
    force = openmm.CustomCompoundBondForce(4, expression)
    force.addGlobalParameter("k_chiral", CHIRALITY_K)
    force.addGlobalParameter("margin", CHIRALITY_MARGIN)
    force.addPerBondParameter("s")
    for row in np.asarray(chiral_centres, dtype=int).reshape(-1, 4):
        force.addBond([int(i) for i in row], [0.0])
    return force


#: Omega hold: force constant (kJ/mol) and the value of ``s * -cos(omega)`` below which it acts
#: (0.3: |omega| < 107 degrees for a trans bond; trans bonds in MD stay above 150).
OMEGA_K = 5000.0
OMEGA_MARGIN = 0.3


def omega_hold_force(omegas: np.ndarray) -> openmm.CustomTorsionForce:
    """A force keeping each peptide bond (rows ``CA, C, N, CA``) cis or trans; per-bond ``s`` 1 trans, -1 cis, 0 off.

    ``k_omega * s^2 * min(0, s * u - margin)^2`` with ``u = -cos(omega)`` (1 trans, -1 cis).
    """
    force = openmm.CustomTorsionForce("k_omega * s^2 * min(0, -s * cos(theta) - omega_margin)^2")
    force.addGlobalParameter("k_omega", OMEGA_K)
    force.addGlobalParameter("omega_margin", OMEGA_MARGIN)
    force.addPerTorsionParameter("s")
    for row in np.asarray(omegas, dtype=int).reshape(-1, 4):
        force.addTorsion(*(int(i) for i in row), [0.0])
    return force


#: Force constant of the harmonic bonds that stand in for constraints during minimisation,
#: kJ/mol/nm^2: the stiffness of a C-H bond in amber99sb (about 2.8e5), so hydrogens stay put.
CONSTRAINT_BOND_K = 3.0e5


def flexible_copy(system: openmm.System) -> openmm.System:
    """A copy of ``system`` without constraints: each becomes a stiff harmonic bond at its length."""
    flexible = copy.deepcopy(system)
    if flexible.getNumConstraints():
        bonds = openmm.HarmonicBondForce()
        bonds.setUsesPeriodicBoundaryConditions(system.usesPeriodicBoundaryConditions())
        for index in reversed(range(flexible.getNumConstraints())):
            i, j, length = flexible.getConstraintParameters(index)
            bonds.addBond(i, j, length, CONSTRAINT_BOND_K)
            flexible.removeConstraint(index)
        flexible.addForce(bonds)
    return flexible


class _SideHold:
    """A hold force whose per-term side ``s`` is re-read from each structure handed to a relaxation.

    ``measure(xyz, rows)`` gives a signed value per row, positive or negative by side; the
    terms whose sign changed since the last structure are updated in the Context (usually none
    after the first switch: a sound model keeps every centre and peptide bond).
    """

    def __init__(self, make_force, rows: np.ndarray, measure):
        self.rows = np.asarray(rows, dtype=int).reshape(-1, 4)
        self.force = make_force(self.rows) if len(self.rows) else None
        self.measure = measure
        self.signs = np.zeros(len(self.rows))

    def update(self, positions: np.ndarray, context: openmm.Context) -> None:
        if self.force is None:
            return
        signs = np.sign(self.measure(positions[None], self.rows)[0])
        changed = np.flatnonzero(signs != self.signs)
        if not len(changed):
            return
        for index in changed:
            parameters = ([float(signs[index])],)
            if isinstance(self.force, openmm.CustomTorsionForce):
                self.force.setTorsionParameters(int(index), *(int(i) for i in self.rows[index]), *parameters)
            else:
                self.force.setBondParameters(int(index), [int(i) for i in self.rows[index]], *parameters)
        self.force.updateParametersInContext(context)
        self.signs = signs


def _free_force_group(system: openmm.System) -> int:
    """A force group no force of ``system`` uses (the restraint's, so its energy can be read alone)."""
    used = {system.getForce(i).getForceGroup() for i in range(system.getNumForces())}
    for group in range(31, -1, -1):
        if group not in used:
            return group
    raise InputError("the atomistic System uses all 32 force groups; one is needed for the mapping restraint")


class RestrainedRelaxation:
    """Restrained minimisation and atomistic MD for one System, Contexts created once, reused at every switch.

    Parameters
    ----------
    system
        The atomistic System (not modified: the Contexts get copies).
    topology
        Its topology (the backmapper's atomistic topology).
    mapping
        Groups and weights of the restraint: one group per bead.
    settings
        Restraint and minimisation settings.
    platform, platform_properties
        OpenMM platform by name ("Reference", "CPU", "CUDA", "OpenCL") and its properties.
    temperature, friction, timestep_fs
        ``LangevinMiddleIntegrator`` of the atomistic MD that may follow a relaxation (K, 1/ps, fs).
    integrator_seed
        Seed of the integrator's random numbers.
    native
        Restraint implementation: None (native if built, else the fallback with a warning),
        True (native or an error), False (fallback).
    chiral_centres
        Rows (centre, a, b, c) of the chirality hold, e.g. ``TopologyFeatures.chiral_centres``
        the caller has already; None finds them in ``topology``.
    omegas
        Rows (CA, C, N, CA) of the omega hold, e.g. ``TopologyFeatures.omegas``; None finds them.

    Attributes
    ----------
    simulation
        The atomistic ``app.Simulation`` (the MD Context); attach OpenMM reporters to
        ``simulation.reporters`` to record atomistic MD.
    restraint
        The mapping-restraint force of the minimisation Context.
    """

    def __init__(
        self,
        system: openmm.System,
        topology: app.Topology,
        mapping: Mapping,
        settings: RelaxationSettings = RelaxationSettings(),
        *,
        platform: str = "CPU",
        platform_properties: MappingType[str, str] | None = None,
        temperature: float = 300.0,
        friction: float = 1.0,
        timestep_fs: float = 2.0,
        integrator_seed: int = 0,
        native: bool | None = None,
        chiral_centres: np.ndarray | None = None,
        omegas: np.ndarray | None = None,
    ):
        if system.getNumParticles() != mapping.n_atoms:
            raise InputError(
                f"the atomistic System has {system.getNumParticles()} particles; the mapping's topology "
                f"has {mapping.n_atoms} atoms"
            )
        self.mapping = mapping
        self.settings = settings
        self.temperature = temperature
        openmm_platform = plugins.platform(platform)
        properties = dict(platform_properties or {})
        minimisation_system = flexible_copy(system)
        self.restraint = mapping_restraint_force(
            [bead.atom_indices for bead in mapping.beads],
            [bead.weights for bead in mapping.beads],
            k=settings.restraint_k,
            r0=settings.flat_bottom,
            periodic=system.usesPeriodicBoundaryConditions(),
            native=native,
            platform=openmm_platform.getName(),
        )
        self.restraint.setForceGroup(_free_force_group(minimisation_system))
        minimisation_system.addForce(self.restraint)
        self._holds: list[_SideHold] = []
        if (settings.hold_chirality and chiral_centres is None) or (settings.hold_omega and omegas is None):
            from openmmbackmap.bench.structure import TopologyFeatures

            features = TopologyFeatures.from_topology(topology)
            chiral_centres = features.chiral_centres if chiral_centres is None else chiral_centres
            omegas = features.omegas if omegas is None else omegas
        if settings.hold_chirality:
            self._holds.append(_SideHold(chirality_hold_force, chiral_centres, signed_volumes))
        if settings.hold_omega:
            self._holds.append(_SideHold(omega_hold_force, omegas, lambda xyz, rows: -np.cos(dihedrals(xyz, rows))))
        for hold in self._holds:
            if hold.force is not None:
                hold.force.setForceGroup(self.restraint.getForceGroup())
                minimisation_system.addForce(hold.force)
        self._minimisation = openmm.Context(
            minimisation_system, openmm.VerletIntegrator(0.001), openmm_platform, properties
        )
        integrator = openmm.LangevinMiddleIntegrator(temperature, friction, timestep_fs * 1e-3)
        integrator.setRandomNumberSeed(int(integrator_seed))
        self.simulation = app.Simulation(topology, copy.deepcopy(system), integrator, openmm_platform, properties)
        self._constraint_tolerance = integrator.getConstraintTolerance()

    @property
    def context(self) -> openmm.Context:
        """The MD Context (the System as given; no restraint)."""
        return self.simulation.context

    def set_positions(self, positions: np.ndarray) -> None:
        """Put coordinates (nm, (atoms, 3)) into the MD Context."""
        self.context.setPositions(np.asarray(positions, dtype=np.float64))

    def energy(self, positions: np.ndarray | None = None) -> float:
        """Potential energy (kJ/mol) of ``positions``, or of the MD Context's, in the System as given."""
        if positions is not None:
            self.set_positions(positions)
        state = self.context.getState(getEnergy=True)
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    def positions(self) -> np.ndarray:
        """The MD Context's coordinates, nm, (atoms, 3)."""
        state = self.context.getState(getPositions=True)
        return state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    def relax(
        self,
        positions: np.ndarray,
        targets: np.ndarray,
        *,
        strong: bool = False,
        energy_before: float | None = None,
    ) -> RelaxationResult:
        """Minimise ``positions`` with each group's centroid restrained to its bead in ``targets``.

        The result is left in the MD Context, constraints applied.

        Parameters
        ----------
        positions
            Backmapped coordinates, nm, (atoms, 3).
        targets
            Bead coordinates, nm, (beads, 3).
        strong
            Use the settings' ``strong_tolerance`` and ``strong_max_iterations``.
        energy_before
            The potential energy of ``positions`` if the caller has it (saves an evaluation).
        """
        targets = np.asarray(targets, dtype=np.float64)
        if targets.shape != (self.mapping.n_beads, 3):
            raise InputError(f"relaxation targets must have shape {(self.mapping.n_beads, 3)}; got {targets.shape}")
        start = time.perf_counter()
        positions = np.asarray(positions, dtype=np.float64)
        if energy_before is None:
            energy_before = self.energy(positions)
        self._minimisation.setPositions(positions)
        self.restraint.setTargets(targets)
        self.restraint.updateParametersInContext(self._minimisation)
        for hold in self._holds:
            hold.update(positions, self._minimisation)
        tolerance = self.settings.strong_tolerance if strong else self.settings.tolerance
        iterations = self.settings.strong_max_iterations if strong else self.settings.max_iterations
        openmm.LocalEnergyMinimizer.minimize(self._minimisation, tolerance, iterations)
        minimised = self._minimisation.getState(getPositions=True).getPositions(asNumpy=True)
        restraint_energy = self.restraint_energy()
        self.context.setPositions(minimised)
        self.context.applyConstraints(self._constraint_tolerance)
        relaxed = self.positions()
        energy_after = self.energy()
        seconds = time.perf_counter() - start
        deviation = self.mapping.map(relaxed) - targets
        return RelaxationResult(
            positions=relaxed,
            energy_before=energy_before,
            energy_after=energy_after,
            restraint_energy=restraint_energy,
            bead_rmsd=float(np.sqrt((deviation**2).sum(-1).mean())),
            seconds=seconds,
        )

    def restraint_energy(self) -> float:
        """Energy of the mapping restraint (and the chirality and omega holds) in the minimisation Context, kJ/mol."""
        state = self._minimisation.getState(getEnergy=True, groups=1 << self.restraint.getForceGroup())
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    def run_md(self, steps: int, seed: int, temperature: float | None = None) -> None:
        """Unrestrained Langevin MD from the MD Context's positions, velocities drawn at ``temperature`` with ``seed``.

        The atomistic Simulation's reporters see these steps.
        """
        if steps <= 0:
            return
        self.context.setVelocitiesToTemperature(self.temperature if temperature is None else temperature, int(seed))
        self.simulation.step(int(steps))
