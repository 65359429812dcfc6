"""GROMACS Martini topologies as OpenMM Systems, and atomistic structures for GROMACS.

:func:`read_top` reads a GROMACS topology (``.top`` with its ``#include`` files) the way
``gmx grompp`` does for the subset of GROMACS that Martini 2/3 models use, and
:meth:`GromacsTopology.create_system` turns it into an :class:`openmm.System` with Martini's
non-bonded treatment as run by GROMACS with the Verlet cut-off scheme (periodic box from the
``.gro``, :func:`read_gro`; settings from the run's ``.mdp``, :func:`read_mdp`):

* Lennard-Jones from the per-type-pair C6/C12 table (``[ nonbond_params ]`` or the combination
  rule), shifted to zero at the cut-off (``vdw-modifier = potential-shift``) or not (``None``);
* reaction-field Coulomb with ``epsilon_r`` and ``epsilon_rf`` (0 means infinity), shifted to
  zero at the cut-off as GROMACS does, including GROMACS's reaction-field terms for excluded pairs
  within the cut-off and its self term (both matter for the energy, the first for forces);
  plain cut-off Coulomb as GROMACS runs it (reaction-field kernel with ``k_rf = 0``);
* exclusions from ``[ exclusions ]`` and from the bond graph up to ``nrexcl`` bonds;
* virtual sites as OpenMM virtual sites that place them exactly as GROMACS does.

Supported directives: ``defaults`` (2 to 5 fields), ``atomtypes``, ``nonbond_params``,
``moleculetype``, ``atoms``, ``bonds`` (1, 6), ``constraints`` (1, 2), ``angles`` (1, 2, 10),
``dihedrals`` (1, 2, 4, 9, 11), ``exclusions``, ``position_restraints`` (1),
``virtual_sites2`` (1), ``virtual_sites3`` (1, 2, 3, 4), ``virtual_sitesn`` (1, 2, 3),
``system``, ``molecules``; state-B parameters are read and ignored (no free-energy runs);
preprocessor ``#include``, ``#define`` (with substitution of defined words), ``#undef``,
``#ifdef``, ``#ifndef``, ``#else``, ``#endif``. Everything else raises
:class:`~openmmbackmap.errors.InputError` naming the file, the line and the directive; nothing
is skipped silently. Energies and forces match ``gmx mdrun -rerun`` (GROMACS 2022, double
precision) to about 1e-12 relative, term by term (``tests/test_gromacs*.py``).

:func:`write_gromacs` goes the other way for atomistic structures: an OpenMM topology, positions
and System (or ForceField) as a ``.gro`` and a self-contained ``.top`` for ``gmx grompp``.

:func:`find_model_beads` finds a backmapping model's beads inside a larger CG system (a protein
in Martini water with ions) by residue and bead names, which ``backmap apply --cg-top`` uses;
:func:`run_gmx`, :func:`read_energies` and :func:`mdrun_performance` run GROMACS tools and read
their results. Building Martini systems (martinize2, water, ions) is in
:mod:`openmmbackmap.martinize`.

Units are GROMACS's (nm, kJ/mol, degrees in the files, radians inside OpenMM), which are
OpenMM's.

Examples
--------
>>> mdp = read_mdp("md.mdp")                                              # doctest: +SKIP
>>> top = read_top("topol.top", defines=mdp.defines, include_dirs=["ff/"])  # doctest: +SKIP
>>> positions, box = read_gro("conf.gro")                                 # doctest: +SKIP
>>> system = top.create_system(box, mdp=mdp)                              # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from openmmbackmap.errors import InputError
from openmmbackmap.io import atomic_output

#: GROMACS's 1/(4 pi eps0) in kJ mol^-1 nm e^-2 (``ONE_4PI_EPS0``), which GROMACS 2021+ derives
#: from the 2018 CODATA constants (e, N_A exact; eps0 = 8.8541878128e-12 F/m); OpenMM's
#: 138.935456 differs by 1.8e-8 relative.
ONE_4PI_EPS0 = 1.0 / (4.0 * math.pi * 8.8541878128e-12 * 1e-6 / (1.602176634e-19**2 * 6.02214076e23))

#: Force group of each energy term, named as ``gmx energy`` names it.
FORCE_GROUPS = {
    "Bond": 0,
    "Harmonic Pot.": 1,
    "Angle": 2,
    "G96Angle": 3,
    "Restr. Angles": 4,
    "Proper Dih.": 5,
    "Improper Dih.": 6,
    "Per. Imp. Dih.": 7,
    "CBT Dih.": 8,
    "LJ (SR)": 9,
    "Coulomb (SR)": 10,
    "Position Rest.": 11,
}

_DIRECTIVES = {
    "defaults", "atomtypes", "nonbond_params", "moleculetype", "atoms", "bonds", "constraints",
    "angles", "dihedrals", "exclusions", "position_restraints", "virtual_sites2", "virtual_sites3",
    "virtual_sitesn", "system", "molecules",
}
# Directives that belong to a molecule type.
_MOLECULE_DIRECTIVES = {
    "atoms", "bonds", "constraints", "angles", "dihedrals", "exclusions", "position_restraints",
    "virtual_sites2", "virtual_sites3", "virtual_sitesn",
}
# Number of atoms, parameters of state A and of state B per (directive, function type), as
# GROMACS's interaction_function table has them (NRAL, NRFPA, NRFPB). Without free-energy
# perturbation, which this module does not do, GROMACS uses the A parameters only.
_INTERACTIONS = {
    ("bonds", 1): (2, 2, 2),
    ("bonds", 6): (2, 2, 2),
    ("constraints", 1): (2, 1, 1),
    ("constraints", 2): (2, 1, 1),
    ("angles", 1): (3, 2, 2),
    ("angles", 2): (3, 2, 2),
    ("angles", 10): (3, 2, 0),
    ("dihedrals", 1): (4, 3, 2),
    ("dihedrals", 2): (4, 2, 2),
    ("dihedrals", 4): (4, 3, 2),
    ("dihedrals", 9): (4, 3, 2),
    ("dihedrals", 11): (4, 6, 0),
    ("position_restraints", 1): (1, 3, 3),
}
# Virtual-site directives: number of constructing atoms, and parameters per function type.
_VIRTUAL_SITES = {
    "virtual_sites2": (2, {1: 1}),
    "virtual_sites3": (3, {1: 2, 2: 2, 3: 2, 4: 3}),
}


class Where(NamedTuple):
    """A place in a topology file, for error messages."""

    path: str
    line: int
    directive: str | None = None

    def error(self, message: str) -> InputError:
        directive = f" [ {self.directive} ]" if self.directive else ""
        return InputError(f"{self.path}:{self.line}:{directive} {message}")


@dataclass
class AtomType:
    name: str
    mass: float
    charge: float
    ptype: str
    v: float
    w: float


@dataclass
class Atom:
    type: str
    resid: int
    resname: str
    name: str
    charge: float
    mass: float


@dataclass
class Interaction:
    """One bonded term: atom indices (0-based within the molecule), function type, parameters."""

    directive: str
    func: int
    atoms: tuple[int, ...]
    params: tuple[float, ...]
    where: Where


@dataclass
class VirtualSite:
    """One virtual site: the site and its constructing atoms (0-based within the molecule).

    ``directive`` is ``virtual_sites2``, ``virtual_sites3`` or ``virtual_sitesn``; ``params``
    are the line's parameters as written (``virtual_sitesn`` function 3: the weights).
    """

    site: int
    directive: str
    func: int
    atoms: tuple[int, ...]
    params: tuple[float, ...]
    where: Where


@dataclass
class MoleculeType:
    name: str
    nrexcl: int
    where: Where
    atoms: list[Atom] = field(default_factory=list)
    interactions: list[Interaction] = field(default_factory=list)
    exclusions: list[tuple[int, ...]] = field(default_factory=list)
    virtual_sites: list[VirtualSite] = field(default_factory=list)

    def excluded_pairs(self) -> set[tuple[int, int]]:
        """All excluded pairs (i < j): nrexcl bond graph plus explicit exclusions."""
        n = len(self.atoms)
        neighbours: list[set[int]] = [set() for _ in range(n)]
        for term in self.interactions:
            # GROMACS "chemical bonds": bonds of type 1 and constraints of type 1 (not bond
            # type 6 or constraint type 2) make the graph that nrexcl counts along.
            if (term.directive, term.func) in (("bonds", 1), ("constraints", 1)):
                i, j = term.atoms
                neighbours[i].add(j)
                neighbours[j].add(i)
        pairs: set[tuple[int, int]] = set()
        if self.nrexcl > 0:
            for start in range(n):
                seen = {start}
                frontier = {start}
                for _ in range(self.nrexcl):
                    frontier = {k for f in frontier for k in neighbours[f]} - seen
                    seen |= frontier
                pairs.update((start, k) for k in seen if k > start)
        for row in self.exclusions:
            first = row[0]
            for other in row[1:]:
                if other != first:
                    pairs.add((min(first, other), max(first, other)))
        return pairs


@dataclass
class GromacsTopology:
    """A parsed GROMACS topology: force-field tables, molecule types and the system's molecules."""

    path: Path
    nbfunc: int
    comb_rule: int
    atomtypes: dict[str, AtomType]
    #: (type_i, type_j) -> (v, w) as written (C6/C12 for rule 1, sigma/epsilon for rules 2 and 3).
    nonbond_params: dict[tuple[str, str], tuple[float, float]]
    molecule_types: dict[str, MoleculeType]
    molecules: list[tuple[str, int]]
    title: str = ""

    @property
    def n_particles(self) -> int:
        return sum(len(self.molecule_types[name].atoms) * count for name, count in self.molecules)

    def _expanded(self) -> Iterator[tuple[int, MoleculeType]]:
        """(offset of the first particle, molecule type) for every molecule in the system."""
        offset = 0
        for name, count in self.molecules:
            moltype = self.molecule_types[name]
            for _ in range(count):
                yield offset, moltype
                offset += len(moltype.atoms)

    def particles(self) -> list[Atom]:
        return [atom for _, moltype in self._expanded() for atom in moltype.atoms]

    def topology(self, box_vectors=None) -> app.Topology:
        """An OpenMM Topology: one chain per molecule, residues by residue number, bonds from
        bonds of type 1 and 6 and constraints (elastic-network bonds included)."""
        top = app.Topology()
        element = None
        for offset, moltype in self._expanded():
            chain = top.addChain()
            atoms = []
            residue = None
            last = None
            for atom in moltype.atoms:
                if residue is None or (atom.resid, atom.resname) != last:
                    residue = top.addResidue(atom.resname, chain, str(atom.resid))
                    last = (atom.resid, atom.resname)
                atoms.append(top.addAtom(atom.name, element, residue))
            for term in moltype.interactions:
                if term.directive in ("bonds", "constraints"):
                    top.addBond(atoms[term.atoms[0]], atoms[term.atoms[1]])
        if box_vectors is not None:
            top.setPeriodicBoxVectors(_box_vec3(box_vectors))
        return top

    def _c6_c12(self, ti: str, tj: str) -> tuple[float, float]:
        pair = self.nonbond_params.get((ti, tj)) or self.nonbond_params.get((tj, ti))
        if pair is None:
            a, b = self.atomtypes[ti], self.atomtypes[tj]
            if self.comb_rule == 1:
                pair = (math.sqrt(a.v * b.v), math.sqrt(a.w * b.w))
            elif self.comb_rule == 2:
                pair = (0.5 * (a.v + b.v), math.sqrt(a.w * b.w))
            else:
                pair = (math.sqrt(a.v * b.v), math.sqrt(a.w * b.w))
        if self.comb_rule == 1:
            return pair
        sigma, epsilon = pair
        return 4.0 * epsilon * sigma**6, 4.0 * epsilon * sigma**12

    def create_system(
        self,
        box_vectors=None,
        *,
        mdp: "MdpOptions | dict | str | os.PathLike | None" = None,
        cutoff: float | None = None,
        epsilon_r: float | None = None,
        epsilon_rf: float | None = None,
        split_nonbonded: bool = False,
        restraint_positions=None,
    ) -> openmm.System:
        """An OpenMM System equivalent to GROMACS's Martini setup (Verlet, potential-shift).

        Parameters
        ----------
        box_vectors
            Periodic box in nm: 3 lengths, 3x3 vectors (e.g. from :func:`read_gro`), or None
            for no periodicity (cut-off without periodic images).
        mdp
            The run's non-bonded settings from a GROMACS ``.mdp`` file: its path, or what
            :func:`read_mdp` returned (see :func:`nonbonded_settings` for what is supported).
            Without it, Martini's: reaction field, ``epsilon_r`` 15, ``epsilon_rf`` 0, 1.1 nm
            cut-off, potential-shift.
        cutoff
            ``rvdw`` = ``rcoulomb`` in nm (Martini: 1.1); not together with ``mdp``.
        epsilon_r, epsilon_rf
            Reaction field dielectric constants; ``epsilon_rf = 0`` means infinity (Martini);
            not together with ``mdp``.
        split_nonbonded
            Put LJ and Coulomb in separate forces (and force groups) for term-by-term checks;
            by default one CustomNonbondedForce computes both, which is faster.
        restraint_positions
            Reference positions (nm, one per particle) of ``[ position_restraints ]``; needed
            when the topology has active position restraints (GROMACS's ``-r`` file).

        Force groups follow :data:`FORCE_GROUPS`; the combined non-bonded force is in the
        ``"LJ (SR)"`` group.
        """
        explicit = {"cutoff": cutoff, "epsilon_r": epsilon_r, "epsilon_rf": epsilon_rf}
        if mdp is not None:
            given = [name for name, value in explicit.items() if value is not None]
            if given:
                raise InputError(f"give the non-bonded settings either in the .mdp or as {', '.join(given)}, not both")
            options = mdp if isinstance(mdp, MdpOptions) else (
                read_mdp(mdp) if not isinstance(mdp, dict) else MdpOptions(mdp)
            )
            settings = nonbonded_settings(options)
            if settings.periodic and box_vectors is None:
                raise options.error("pbc", "periodic boundaries need a box (box_vectors, e.g. from the .gro)")
        else:
            settings = NonbondedSettings(
                cutoff=1.1 if cutoff is None else cutoff,
                epsilon_r=15.0 if epsilon_r is None else epsilon_r,
                epsilon_rf=0.0 if epsilon_rf is None else epsilon_rf,
                periodic=box_vectors is not None,
            )
        particles = self.particles()
        n = len(particles)
        system = openmm.System()
        for atom in particles:
            system.addParticle(atom.mass)
        periodic = box_vectors is not None
        cutoff = settings.cutoff
        if periodic:
            a, b, c = _box_vec3(box_vectors)
            system.setDefaultPeriodicBoxVectors(a, b, c)
            half = 0.5 * min(a[0], b[1], c[2])
            if cutoff > half:
                raise InputError(f"cut-off {cutoff} nm is more than half the box ({half:.3f} nm)")

        forces: dict[str, openmm.Force] = {}

        def force(name: str, factory):
            if name not in forces:
                f = factory()
                f.setForceGroup(FORCE_GROUPS[name])
                if periodic and hasattr(f, "setUsesPeriodicBoundaryConditions"):
                    f.setUsesPeriodicBoundaryConditions(True)
                forces[name] = f
            return forces[name]

        def custom_angle(expression):
            def make():
                f = openmm.CustomAngleForce(expression)
                f.addPerAngleParameter("theta0")
                f.addPerAngleParameter("k")
                return f
            return make

        def harmonic_bond():
            return openmm.HarmonicBondForce()

        restraints = []
        for offset, moltype in self._expanded():
            for term in moltype.interactions:
                idx = [offset + i for i in term.atoms]
                p = term.params
                key = (term.directive, term.func)
                if key == ("bonds", 1):
                    force("Bond", harmonic_bond).addBond(*idx, p[0], p[1])
                elif key == ("bonds", 6):
                    force("Harmonic Pot.", harmonic_bond).addBond(*idx, p[0], p[1])
                elif term.directive == "constraints":
                    system.addConstraint(*idx, p[0])
                elif key == ("angles", 1):
                    force("Angle", openmm.HarmonicAngleForce).addAngle(
                        *idx, math.radians(p[0]), p[1]
                    )
                elif key == ("angles", 2):
                    force("G96Angle", custom_angle("0.5*k*(cos(theta)-cos(theta0))^2")).addAngle(
                        *idx, [math.radians(p[0]), p[1]]
                    )
                elif key == ("angles", 10):
                    force(
                        "Restr. Angles",
                        custom_angle("0.5*k*(cos(theta)-cos(theta0))^2/sin(theta)^2"),
                    ).addAngle(*idx, [math.radians(p[0]), p[1]])
                elif term.directive == "dihedrals" and term.func in (1, 4, 9):
                    name = "Per. Imp. Dih." if term.func == 4 else "Proper Dih."
                    periodicity = p[2]
                    if periodicity != int(periodicity) or periodicity < 0:
                        raise term.where.error(f"dihedral multiplicity {periodicity} is not an integer >= 0")
                    force(name, openmm.PeriodicTorsionForce).addTorsion(
                        *idx, int(periodicity), math.radians(p[0]), p[1]
                    )
                elif key == ("dihedrals", 2):
                    def improper():
                        f = openmm.CustomTorsionForce(
                            "0.5*k*d^2; d = dt - 6.283185307179586*floor((dt + 3.141592653589793)"
                            "/6.283185307179586); dt = theta - theta0"
                        )
                        f.addPerTorsionParameter("theta0")
                        f.addPerTorsionParameter("k")
                        return f
                    force("Improper Dih.", improper).addTorsion(*idx, [math.radians(p[0]), p[1]])
                elif key == ("dihedrals", 11):
                    def cbt():
                        f = openmm.CustomCompoundBondForce(
                            4,
                            "k*sin(t1)^3*sin(t2)^3*(a0 + a1*c + a2*c^2 + a3*c^3 + a4*c^4);"
                            "c = cos(dihedral(p1, p2, p3, p4));"
                            "t1 = angle(p1, p2, p3); t2 = angle(p2, p3, p4)",
                        )
                        f.addPerBondParameter("k")
                        for k in range(5):
                            f.addPerBondParameter(f"a{k}")
                        return f
                    force("CBT Dih.", cbt).addBond(idx, list(p))
                elif term.directive == "position_restraints":
                    restraints.append((idx[0], p, term.where))
                else:  # parsing already rejects these; keep the check next to the builder
                    raise term.where.error(f"function type {term.func} is not supported")

        if restraints:
            if restraint_positions is None:
                first = restraints[0][2]
                raise first.error(
                    "position restraints are active but no reference positions were given "
                    "(restraint_positions, GROMACS's -r)"
                )
            ref = np.asarray(_nm(restraint_positions), dtype=float).reshape(-1, 3)
            if len(ref) != n:
                raise InputError(f"restraint_positions has {len(ref)} positions, the topology {n} particles")
            posres = openmm.CustomExternalForce(
                "0.5*(kx*(x-x0)^2 + ky*(y-y0)^2 + kz*(z-z0)^2)"
            )
            for name in ("x0", "y0", "z0", "kx", "ky", "kz"):
                posres.addPerParticleParameter(name)
            for i, p, _ in restraints:
                posres.addParticle(i, [*ref[i], *p])
            posres.setForceGroup(FORCE_GROUPS["Position Rest."])
            forces["Position Rest."] = posres

        self._add_virtual_sites(system)
        self._add_nonbonded(system, particles, periodic, settings, split_nonbonded)
        for f in forces.values():
            system.addForce(f)
        return system

    def _add_virtual_sites(self, system: openmm.System) -> None:
        for offset, moltype in self._expanded():
            for vsite in moltype.virtual_sites:
                system.setParticleMass(offset + vsite.site, 0.0)
                system.setVirtualSite(offset + vsite.site, _openmm_virtual_site(vsite, moltype, offset))

    def _coincident_pairs(self, moltype: MoleculeType, excluded: set[tuple[int, int]]):
        """Non-excluded (site, atom) pairs of virtual sites built on one atom (Go-model and
        water-bias sites of Martini 3 proteins sit on their backbone bead).

        The pair is at distance 0 for ever. GROMACS's kernels clamp r there, so a pair without
        Lennard-Jones parameters or charge product contributes nothing; OpenMM would compute
        0 * infinity = NaN forces, so such pairs are excluded from OpenMM's non-bonded forces
        (no reaction-field correction: GROMACS has none for them either). A pair on top of each
        other that does interact has no finite energy: an error.
        """
        for vsite in moltype.virtual_sites:
            if len(set(vsite.atoms)) != 1:
                continue
            pair = tuple(sorted((vsite.site, vsite.atoms[0])))
            if pair in excluded:
                continue
            a, b = moltype.atoms[pair[0]], moltype.atoms[pair[1]]
            if self._c6_c12(a.type, b.type) != (0.0, 0.0) or a.charge * b.charge != 0:
                raise vsite.where.error(
                    f"virtual site {vsite.site + 1} sits on atom {vsite.atoms[0] + 1}, is not excluded from it "
                    "and interacts with it (Lennard-Jones or charges): the energy is infinite"
                )
            yield pair

    def _add_nonbonded(self, system, particles, periodic, settings: "NonbondedSettings", split):
        types = sorted({a.type for a in particles})
        index = {t: i for i, t in enumerate(types)}
        nt = len(types)
        c6 = np.zeros((nt, nt))
        c12 = np.zeros((nt, nt))
        for i, ti in enumerate(types):
            for j, tj in enumerate(types):
                c6[i, j], c12[i, j] = self._c6_c12(ti, tj)
        rc = settings.cutoff
        k_rf, c_rf = settings.reaction_field_constants()
        f_el = ONE_4PI_EPS0 / settings.epsilon_r
        charges = [a.charge for a in particles]
        charged = any(q != 0 for q in charges)

        shift12, shift6 = (rc**-12, rc**-6) if settings.vdw_shift else (0.0, 0.0)
        lj_expr = (
            "C12(t1, t2)*(ir6*ir6 - {irc12!r}) - C6(t1, t2)*(ir6 - {irc6!r}); ir6 = 1/r^6"
        ).format(irc12=shift12, irc6=shift6)
        coul_expr = "{f!r}*q1*q2*(1/r + {k!r}*r^2 - {c!r})".format(f=f_el, k=k_rf, c=c_rf)

        def nonbonded(expression, with_types, with_charges, group):
            f = openmm.CustomNonbondedForce(expression)
            if with_types:
                f.addTabulatedFunction("C6", openmm.Discrete2DFunction(nt, nt, c6.T.ravel().tolist()))
                f.addTabulatedFunction("C12", openmm.Discrete2DFunction(nt, nt, c12.T.ravel().tolist()))
                f.addPerParticleParameter("t")
            if with_charges:
                f.addPerParticleParameter("q")
            for atom in particles:
                params = []
                if with_types:
                    params.append(float(index[atom.type]))
                if with_charges:
                    params.append(atom.charge)
                f.addParticle(params)
            f.setNonbondedMethod(
                openmm.CustomNonbondedForce.CutoffPeriodic if periodic
                else openmm.CustomNonbondedForce.CutoffNonPeriodic
            )
            f.setCutoffDistance(rc)
            f.setUseSwitchingFunction(False)
            f.setUseLongRangeCorrection(False)
            f.setForceGroup(FORCE_GROUPS[group])
            return f

        if split or not charged:
            built = [nonbonded(lj_expr, True, False, "LJ (SR)")]
            if charged:
                built.append(nonbonded(coul_expr, False, True, "Coulomb (SR)"))
        else:
            built = [nonbonded(f"{lj_expr.split(';')[0]} + {coul_expr}; ir6 = 1/r^6", True, True, "LJ (SR)")]

        excluded: list[tuple[int, int]] = []
        coincident: list[tuple[int, int]] = []
        for offset, moltype in self._expanded():
            pairs = moltype.excluded_pairs()
            excluded.extend((offset + i, offset + j) for i, j in sorted(pairs))
            for i, j in self._coincident_pairs(moltype, pairs):
                coincident.append((offset + i, offset + j))
        for f in built:
            for i, j in excluded + coincident:
                f.addExclusion(i, j)
            system.addForce(f)

        if charged:
            # GROMACS (Verlet scheme) keeps the reaction-field terms of excluded pairs within the
            # cut-off, f*qi*qj*(k_rf r^2 - c_rf), and a self term -f*c_rf*qi^2/2 per particle.
            group = "Coulomb (SR)" if split else "LJ (SR)"
            correction = openmm.CustomBondForce(
                "step({rc!r} - r)*{f!r}*qq*({k!r}*r^2 - {c!r})".format(rc=rc, f=f_el, k=k_rf, c=c_rf)
            )
            correction.addPerBondParameter("qq")
            for i, j in excluded:
                qq = charges[i] * charges[j]
                if qq != 0:
                    correction.addBond(i, j, [qq])
            correction.setUsesPeriodicBoundaryConditions(periodic)
            correction.setForceGroup(FORCE_GROUPS[group])
            system.addForce(correction)
            self_term = openmm.CustomExternalForce("e0")
            self_term.addPerParticleParameter("e0")
            for i, q in enumerate(charges):
                if q != 0:
                    self_term.addParticle(i, [-0.5 * f_el * c_rf * q * q])
            self_term.setForceGroup(FORCE_GROUPS[group])
            system.addForce(self_term)


def _openmm_virtual_site(vsite: VirtualSite, moltype: MoleculeType, offset: int) -> openmm.VirtualSite:
    """The OpenMM site that places ``vsite`` exactly as GROMACS constructs it."""
    idx = [offset + i for i in vsite.atoms]
    p = vsite.params
    if vsite.directive == "virtual_sites2":  # function 1: (1 - a) x_i + a x_j
        return openmm.TwoParticleAverageSite(*idx, 1.0 - p[0], p[0])
    if vsite.directive == "virtual_sites3":
        if vsite.func == 1:  # x_i + a r_ij + b r_ik
            return openmm.ThreeParticleAverageSite(*idx, 1.0 - p[0] - p[1], p[0], p[1])
        if vsite.func == 2:  # 3fd: x_i + b (r_ij + a r_jk) / |r_ij + a r_jk|
            return openmm.LocalCoordinatesSite(
                idx, [1.0, 0.0, 0.0], [-1.0, 1.0 - p[0], p[0]], [0.0, -1.0, 1.0], openmm.Vec3(p[1], 0, 0)
            )
        if vsite.func == 3:  # 3fad: angle theta from r_ij in the ijk plane, distance d from i
            theta, d = math.radians(p[0]), p[1]
            return openmm.LocalCoordinatesSite(
                idx, [1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [0.0, -1.0, 1.0],
                openmm.Vec3(d * math.cos(theta), d * math.sin(theta), 0),
            )
        return openmm.OutOfPlaneSite(*idx, p[0], p[1], p[2])  # 3out: + c (r_ij x r_ik)
    # virtual_sitesn: centre of geometry (1), of mass (2) or of the given weights (3)
    if vsite.func == 1:
        w = np.full(len(idx), 1.0 / len(idx))
    elif vsite.func == 2:
        masses = np.array([moltype.atoms[i].mass for i in vsite.atoms])
        if masses.sum() <= 0:
            raise vsite.where.error("centre-of-mass virtual site built from massless particles")
        w = masses / masses.sum()
    else:
        w = np.asarray(p, dtype=float)
        if w.sum() == 0:
            raise vsite.where.error("virtual site weights sum to zero")
        w = w / w.sum()
    if len(idx) == 1:  # a site on top of one particle (Go-model and water-bias sites)
        return openmm.TwoParticleAverageSite(idx[0], idx[0], 1.0, 0.0)
    if len(idx) == 2:
        return openmm.TwoParticleAverageSite(*idx, *w)
    if len(idx) == 3:
        return openmm.ThreeParticleAverageSite(*idx, *w)
    # Origin = weighted average; local position 0, so the axes only need to be well defined
    # (non-collinear constructing particles).
    xw = [0.0] * len(idx)
    yw = [0.0] * len(idx)
    xw[0], xw[1] = -1.0, 1.0
    yw[0], yw[2] = -1.0, 1.0
    return openmm.LocalCoordinatesSite(idx, list(w), xw, yw, openmm.Vec3(0, 0, 0))


def _nm(values):
    if unit.is_quantity(values):
        return values.value_in_unit(unit.nanometer)
    return values


def _box_vec3(box_vectors) -> tuple[openmm.Vec3, openmm.Vec3, openmm.Vec3]:
    box = np.asarray(_nm(box_vectors), dtype=float)
    if box.shape == (3,):
        box = np.diag(box)
    if box.shape != (3, 3):
        raise InputError(f"box must be 3 lengths or 3x3 vectors in nm, not shape {box.shape}")
    return tuple(openmm.Vec3(*row) for row in box)


# --------------------------------------------------------------------------------------------
# Preprocessor


def _preprocess(
    path: Path, defines: dict[str, str], include_dirs: Sequence[Path], stack: tuple[Path, ...] = ()
) -> Iterator[tuple[str, str, int]]:
    """Yield (line without comment, file, line number) of a topology after GROMACS's cpp-like preprocessing."""
    if path.resolve() in stack:
        raise InputError(f"{path}: recursive #include")
    stack = stack + (path.resolve(),)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read topology file {path}: {exc}") from exc
    # (active, seen_else) per open #if block; a line counts only if all are active.
    conditions: list[list] = []
    active = True
    name = str(path)
    pending = ""
    pending_line = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0].rstrip()
        if pending:
            line = pending + " " + line.strip()
            number_here = pending_line
        else:
            number_here = number
        if line.endswith("\\"):
            pending = line[:-1]
            pending_line = number_here
            continue
        pending = ""
        stripped = line.strip()
        if not stripped:
            continue
        if stripped[0] == "#":
            where = Where(name, number_here)
            words = stripped[1:].split()
            if not words:
                raise where.error("empty preprocessor directive")
            keyword, args = words[0], words[1:]
            if keyword in ("ifdef", "ifndef"):
                if len(args) != 1:
                    raise where.error(f"#{keyword} needs exactly one name")
                value = (args[0] in defines) == (keyword == "ifdef")
                conditions.append([value, False])
            elif keyword == "else":
                if not conditions or conditions[-1][1]:
                    raise where.error("#else without #ifdef/#ifndef")
                conditions[-1][0] = not conditions[-1][0]
                conditions[-1][1] = True
            elif keyword == "endif":
                if not conditions:
                    raise where.error("#endif without #ifdef/#ifndef")
                conditions.pop()
            elif not active:
                continue
            elif keyword == "define":
                if not args:
                    raise where.error("#define needs a name")
                defines[args[0]] = " ".join(args[1:])
            elif keyword == "undef":
                if len(args) != 1:
                    raise where.error("#undef needs exactly one name")
                defines.pop(args[0], None)
            elif keyword == "include":
                match = re.fullmatch(r'#\s*include\s+["<](.+)[">]', stripped)
                if not match:
                    raise where.error(f"cannot read #include line {stripped!r}")
                included = match.group(1)
                for directory in (path.parent, *include_dirs):
                    candidate = Path(directory) / included
                    if candidate.is_file():
                        break
                else:
                    searched = ", ".join(str(d) for d in (path.parent, *include_dirs))
                    raise where.error(f"included file {included!r} not found (searched {searched})")
                yield from _preprocess(candidate, defines, include_dirs, stack)
            else:
                raise where.error(f"preprocessor directive #{keyword} is not supported")
            active = all(c[0] for c in conditions)
            continue
        if not active:
            continue
        if defines:
            line = " ".join(defines.get(w, w) if defines.get(w, "") else w for w in line.split())
        yield line, name, number_here
    if conditions:
        raise InputError(f"{path}: #ifdef/#ifndef without #endif at end of file")


# --------------------------------------------------------------------------------------------
# Parser


def _float(word: str, where: Where, what: str) -> float:
    try:
        return float(word)
    except ValueError:
        raise where.error(f"{what} {word!r} is not a number") from None


def _int(word: str, where: Where, what: str) -> int:
    try:
        return int(word)
    except ValueError:
        raise where.error(f"{what} {word!r} is not an integer") from None


def read_top(
    path: str | os.PathLike,
    *,
    defines: dict[str, str] | Iterable[str] | None = None,
    include_dirs: Sequence[str | os.PathLike] = (),
) -> GromacsTopology:
    """Read a GROMACS topology (Martini subset; see the module documentation).

    Parameters
    ----------
    path
        The ``.top`` file.
    defines
        Preprocessor names defined before reading, like ``grompp``'s ``define = -DPOSRES``:
        a mapping name -> value or an iterable of names.
    include_dirs
        Folders searched for ``#include`` after the including file's own folder.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"topology file {path} does not exist")
    if defines is None:
        defs: dict[str, str] = {}
    elif isinstance(defines, dict):
        defs = {k: str(v) for k, v in defines.items()}
    else:
        defs = {name: "" for name in defines}
    dirs = [Path(d) for d in include_dirs]

    nbfunc, comb_rule = None, None
    atomtypes: dict[str, AtomType] = {}
    nonbond: dict[tuple[str, str], tuple[float, float]] = {}
    moltypes: dict[str, MoleculeType] = {}
    molecules: list[tuple[str, int]] = []
    title_lines: list[str] = []
    directive = None
    current: MoleculeType | None = None

    for line, filename, number in _preprocess(path, defs, dirs):
        stripped = line.strip()
        if directive == "nonbond_params":  # fast path: hundreds of thousands of lines in Martini 3
            words = stripped.split()
            if len(words) == 5 and words[2] == "1" and words[0] in atomtypes and words[1] in atomtypes:
                try:
                    nonbond[(words[0], words[1])] = (float(words[3]), float(words[4]))
                    continue
                except ValueError:
                    pass
        where = Where(filename, number)
        header = re.fullmatch(r"\[\s*(\S+)\s*\]", stripped) if stripped[0] == "[" else None
        if header:
            directive = header.group(1).lower()
            where = Where(where.path, where.line, directive)
            if directive not in _DIRECTIVES:
                raise where.error(f"directive [ {directive} ] is not supported")
            if directive in _MOLECULE_DIRECTIVES and current is None:
                raise where.error("appears before any [ moleculetype ]")
            if directive in ("defaults", "atomtypes", "nonbond_params") and moltypes:
                raise where.error("force-field directive after a [ moleculetype ]")
            continue
        if directive is None:
            raise where.error("data line before any directive")
        where = Where(where.path, where.line, directive)
        words = stripped.split()

        if directive == "defaults":
            if nbfunc is not None:
                raise where.error("[ defaults ] given twice")
            if not 2 <= len(words) <= 5:
                raise where.error(f"expected 2 to 5 fields, found {len(words)}")
            nbfunc = _int(words[0], where, "nbfunc")
            comb_rule = _int(words[1], where, "comb-rule")
            if nbfunc != 1:
                raise where.error(f"non-bonded function type {nbfunc} (only 1, Lennard-Jones) is supported")
            if comb_rule not in (1, 2, 3):
                raise where.error(f"combination rule {comb_rule} is not 1, 2 or 3")
        elif directive == "atomtypes":
            ptype_at = [k for k, w in enumerate(words) if w in ("A", "S", "V", "D")]
            ptype_at = [k for k in ptype_at if k == len(words) - 3]
            if not ptype_at or len(words) < 6:
                raise where.error(f"cannot read atom type line {stripped!r} (expected ... mass charge ptype V W)")
            k = ptype_at[0]
            atomtypes[words[0]] = AtomType(
                words[0],
                _float(words[k - 2], where, "mass"),
                _float(words[k - 1], where, "charge"),
                words[k],
                _float(words[k + 1], where, "V"),
                _float(words[k + 2], where, "W"),
            )
        elif directive == "nonbond_params":
            if len(words) != 5:
                raise where.error(f"expected 5 fields (ai aj func V W), found {len(words)}")
            if words[2] != "1":
                raise where.error(f"function type {words[2]} is not supported (only 1)")
            for t in words[:2]:
                if t not in atomtypes:
                    raise where.error(f"atom type {t!r} is not defined in [ atomtypes ]")
            nonbond[(words[0], words[1])] = (
                _float(words[3], where, "V"), _float(words[4], where, "W")
            )
        elif directive == "moleculetype":
            if len(words) != 2:
                raise where.error(f"expected 2 fields (name nrexcl), found {len(words)}")
            if words[0] in moltypes:
                raise where.error(f"molecule type {words[0]!r} is defined twice")
            current = MoleculeType(words[0], _int(words[1], where, "nrexcl"), where)
            moltypes[words[0]] = current
        elif directive == "atoms":
            if not 6 <= len(words) <= 8:
                raise where.error(
                    f"expected 6 to 8 fields (nr type resnr residue atom cgnr [charge [mass]]), found {len(words)}"
                )
            nr = _int(words[0], where, "atom number")
            if nr != len(current.atoms) + 1:
                raise where.error(f"atom number {nr} out of sequence (expected {len(current.atoms) + 1})")
            atype = atomtypes.get(words[1])
            if atype is None:
                raise where.error(f"atom type {words[1]!r} is not defined in [ atomtypes ]")
            charge = _float(words[6], where, "charge") if len(words) > 6 else atype.charge
            mass = _float(words[7], where, "mass") if len(words) > 7 else atype.mass
            current.atoms.append(
                Atom(words[1], _int(words[2], where, "residue number"), words[3], words[4], charge, mass)
            )
        elif directive in ("bonds", "constraints", "angles", "dihedrals", "position_restraints"):
            natoms = {"bonds": 2, "constraints": 2, "angles": 3, "dihedrals": 4, "position_restraints": 1}[directive]
            if len(words) <= natoms:
                raise where.error("missing function type")
            func = _int(words[natoms], where, "function type")
            spec = _INTERACTIONS.get((directive, func))
            if spec is None:
                supported = sorted(f for d, f in _INTERACTIONS if d == directive)
                raise where.error(f"function type {func} is not supported (supported: {supported})")
            nparams, nparams_b = spec[1], spec[2]
            params = words[natoms + 1:]
            if not params:
                raise where.error(
                    "parameters from [ *types ] directives are not supported; give them on the line"
                )
            if len(params) == nparams + nparams_b and nparams_b:
                params = params[:nparams]  # state B: used by free-energy runs only
            elif len(params) != nparams:
                expected = f"{nparams}" + (f" (or {nparams + nparams_b} with state B)" if nparams_b else "")
                raise where.error(f"function type {func} needs {expected} parameters, found {len(params)}")
            atoms = tuple(_atom_index(w, current, where) for w in words[:natoms])
            current.interactions.append(
                Interaction(directive, func, atoms, tuple(_float(p, where, "parameter") for p in params), where)
            )
        elif directive == "exclusions":
            current.exclusions.append(tuple(_atom_index(w, current, where) for w in words))
        elif directive == "virtual_sitesn":
            if len(words) < 3:
                raise where.error("expected site funct atoms...")
            site = _atom_index(words[0], current, where)
            func = _int(words[1], where, "function type")
            rest = words[2:]
            if func in (1, 2):
                atoms, params = tuple(_atom_index(w, current, where) for w in rest), ()
            elif func == 3:
                if len(rest) % 2:
                    raise where.error("function type 3 needs (atom weight) pairs")
                atoms = tuple(_atom_index(w, current, where) for w in rest[::2])
                params = tuple(_float(w, where, "weight") for w in rest[1::2])
            else:
                raise where.error(f"function type {func} is not supported (supported: [1, 2, 3])")
            _add_virtual_site(current, VirtualSite(site, directive, func, atoms, params, where))
        elif directive in _VIRTUAL_SITES:
            n_from, n_params = _VIRTUAL_SITES[directive]
            if len(words) < n_from + 2:
                raise where.error(f"expected site, {n_from} constructing atoms, function type and parameters")
            func = _int(words[n_from + 1], where, "function type")
            if func not in n_params:
                raise where.error(f"function type {func} is not supported (supported: {sorted(n_params)})")
            params = words[n_from + 2:]
            if not params:
                raise where.error(
                    "parameters from [ virtual_sitestypes ] are not supported; give them on the line"
                )
            if len(params) != n_params[func]:
                raise where.error(f"function type {func} needs {n_params[func]} parameters, found {len(params)}")
            _add_virtual_site(current, VirtualSite(
                _atom_index(words[0], current, where), directive, func,
                tuple(_atom_index(w, current, where) for w in words[1:n_from + 1]),
                tuple(_float(w, where, "parameter") for w in params), where,
            ))
        elif directive == "system":
            title_lines.append(stripped)
        elif directive == "molecules":
            if len(words) != 2:
                raise where.error(f"expected 2 fields (name count), found {len(words)}")
            if words[0] not in moltypes:
                raise where.error(f"molecule type {words[0]!r} is not defined")
            molecules.append((words[0], _int(words[1], where, "count")))

    if nbfunc is None:
        raise InputError(f"{path}: no [ defaults ] directive")
    if not molecules:
        raise InputError(f"{path}: no [ molecules ] directive")
    return GromacsTopology(path, nbfunc, comb_rule, atomtypes, nonbond, moltypes, molecules, " ".join(title_lines))


def _add_virtual_site(moltype: MoleculeType, vsite: VirtualSite) -> None:
    if vsite.site in vsite.atoms:
        raise vsite.where.error(f"virtual site {vsite.site + 1} is built from itself")
    if not vsite.atoms:
        raise vsite.where.error("virtual site without constructing atoms")
    for other in moltype.virtual_sites:
        if other.site == vsite.site:
            raise vsite.where.error(
                f"atom {vsite.site + 1} is already a virtual site (line {other.where.line})"
            )
    moltype.virtual_sites.append(vsite)


def _atom_index(word: str, moltype: MoleculeType, where: Where) -> int:
    nr = _int(word, where, "atom number")
    if not 1 <= nr <= len(moltype.atoms):
        raise where.error(
            f"atom {nr} is not in molecule type {moltype.name!r} ({len(moltype.atoms)} atoms so far)"
        )
    return nr - 1


# --------------------------------------------------------------------------------------------
# .mdp files


@dataclass(frozen=True)
class NonbondedSettings:
    """Non-bonded settings of a GROMACS run (Verlet scheme) that :meth:`GromacsTopology.create_system` reproduces.

    ``coulombtype`` is ``"reaction-field"`` or ``"cut-off"``; ``epsilon_rf = 0`` means
    infinity. ``vdw_shift`` and ``coulomb_shift`` are the ``potential-shift`` modifiers. As
    measured against GROMACS 2022 (Verlet kernels): reaction field is always shifted (its
    ``c_rf``), whatever ``coulomb-modifier`` says; plain cut-off is the reaction-field kernel
    with ``k_rf = 0`` and ``c_rf = 1/rc`` (potential-shift) or 0 (None), excluded pairs and
    self terms included. ``periodic``: the run has periodic boundaries (``pbc = xyz``).
    """

    cutoff: float = 1.1
    epsilon_r: float = 15.0
    epsilon_rf: float = 0.0
    coulombtype: str = "reaction-field"
    coulomb_shift: bool = True
    vdw_shift: bool = True
    periodic: bool = True

    def __post_init__(self):
        if self.epsilon_r == 0:
            raise InputError("epsilon_r = 0 (infinity) is not supported")
        if self.cutoff <= 0:
            raise InputError(f"cut-off {self.cutoff} nm is not positive")
        if self.coulombtype not in ("reaction-field", "cut-off"):
            raise InputError(f"coulombtype {self.coulombtype!r} is not supported (reaction-field, cut-off)")

    def reaction_field_constants(self) -> tuple[float, float]:
        """GROMACS's (k_rf, c_rf): pair potential f qi qj (1/r + k_rf r^2 - c_rf) within the cut-off."""
        rc, eps_r = self.cutoff, self.epsilon_r
        if self.coulombtype == "cut-off":
            return 0.0, (1.0 / rc) if self.coulomb_shift else 0.0
        if self.epsilon_rf == 0:
            k_rf = 1.0 / (2.0 * rc**3)
        else:
            k_rf = (self.epsilon_rf - eps_r) / (2.0 * self.epsilon_rf + eps_r) / rc**3
        return k_rf, 1.0 / rc + k_rf * rc**2


class MdpOptions(dict):
    """The options of a GROMACS ``.mdp`` file: name -> value (text), as :func:`read_mdp` returns them.

    Names are lower case with ``-`` for ``_`` (GROMACS treats them alike); ``lines`` gives the
    line of each option, ``names`` its spelling in the file and ``path`` the file, for error
    messages.
    """

    def __init__(self, options=(), path: str | os.PathLike | None = None):
        super().__init__()
        self.path = str(path) if path is not None else "<mdp>"
        self.lines: dict[str, int] = {}
        self.names: dict[str, str] = {}
        for name, value in dict(options).items():
            self.add(name, value)

    def add(self, name: str, value, line: int | None = None) -> None:
        key = _mdp_key(name)
        if key in self:
            first = f" (first on line {self.lines[key]})" if key in self.lines else ""
            where = f"{self.path}:{line}" if line else self.path
            raise InputError(f"{where}: {name} is given twice{first}")
        self[key] = str(value).strip()
        self.names[key] = name
        if line is not None:
            self.lines[key] = line

    def error(self, key: str, message: str) -> InputError:
        line = self.lines.get(key)
        where = f"{self.path}:{line}" if line else self.path
        value = f" = {self[key]}" if key in self else ""
        return InputError(f"{where}: {self.names.get(key, key)}{value}: {message}")

    def word(self, key: str, default: str) -> str:
        """The option as GROMACS compares enumerated values: lower case, without - and _."""
        return re.sub(r"[-_]", "", self.get(key, default)).lower()

    def number(self, key: str, default: float) -> float:
        if key not in self or self[key] == "":
            return default
        try:
            return float(self[key])
        except ValueError:
            raise self.error(key, "is not a number") from None

    @property
    def defines(self) -> dict[str, str]:
        """``define = -DNAME -DOTHER=VALUE`` as ``read_top``'s ``defines``."""
        out: dict[str, str] = {}
        for word in self.get("define", "").split():
            if not word.startswith("-D") or len(word) < 3:
                raise self.error("define", f"cannot read {word!r} (expected -DNAME or -DNAME=VALUE)")
            name, _, value = word[2:].partition("=")
            out[name] = value
        return out

    @property
    def include_dirs(self) -> list[str]:
        """``include = -I/some/dir ...`` as ``read_top``'s ``include_dirs``."""
        dirs = []
        for word in self.get("include", "").split():
            if not word.startswith("-I") or len(word) < 3:
                raise self.error("include", f"cannot read {word!r} (expected -I/path)")
            dirs.append(word[2:])
        return dirs


# Option spellings that differ only by case, - and _ are the same option to GROMACS; these are
# the names this module uses (GROMACS 2022's own, as in mdout.mdp).
_MDP_NAMES = {
    re.sub(r"[-_]", "", name).lower(): name.lower()
    for name in (
        "cutoff-scheme", "pbc", "coulombtype", "coulomb-modifier", "rcoulomb", "rcoulomb-switch",
        "epsilon-r", "epsilon-rf", "vdw-type", "vdwtype", "vdw-modifier", "rvdw", "rvdw-switch",
        "DispCorr", "free-energy", "nwall", "pull", "awh", "constraints", "implicit-solvent",
        "energygrp-excl", "energygrp-table", "electric-field-x", "electric-field-y",
        "electric-field-z", "define", "include", "QMMM", "qmmm-cp2k-active", "table-extension",
        "rlist", "nstlist", "verlet-buffer-tolerance", "integrator", "nsteps",
    )
}
_MDP_NAMES["vdwtype"] = "vdw-type"  # GROMACS's old spelling of the same option


def _mdp_key(name: str) -> str:
    return _MDP_NAMES.get(re.sub(r"[-_]", "", name).lower(), name.lower().replace("_", "-"))


def read_mdp(path: str | os.PathLike) -> MdpOptions:
    """Read a GROMACS ``.mdp`` file into :class:`MdpOptions` (a dict of option -> value text).

    Comments (``;``) and blank lines are skipped; an option given twice, or a line that is not
    ``name = value``, is an :class:`~openmmbackmap.errors.InputError` naming the file and line.
    :func:`nonbonded_settings` turns the result into the settings ``create_system`` uses.

    Examples
    --------
    >>> mdp = read_mdp("martini_md.mdp")                                    # doctest: +SKIP
    >>> top = read_top("topol.top", defines=mdp.defines)                    # doctest: +SKIP
    >>> system = top.create_system(box, mdp=mdp)                            # doctest: +SKIP
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read .mdp file {path}: {exc}") from exc
    options = MdpOptions(path=path)
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or not name or len(name.split()) != 1:
            raise InputError(f"{path}:{number}: expected 'option = value', found {raw.strip()!r}")
        options.add(name, value, number)
    return options


def nonbonded_settings(mdp: MdpOptions | dict | str | os.PathLike) -> NonbondedSettings:
    """The non-bonded settings of an ``.mdp`` (path, :func:`read_mdp` result or dict).

    Supported, with GROMACS's defaults where an option is absent: ``cutoff-scheme = Verlet``;
    ``pbc = xyz``; ``coulombtype`` ``reaction-field`` or ``cut-off`` with ``epsilon-r``,
    ``epsilon-rf``; ``coulomb-modifier`` and ``vdw-modifier`` ``Potential-shift(-Verlet)`` or
    ``None``; ``vdw-type = cut-off``; ``rvdw = rcoulomb``. Options that change the potential in
    ways this module does not reproduce (PME, switched or force-switched potentials,
    ``DispCorr``, free energy, walls, pulling, AWH, electric fields, ``constraints`` other than
    ``none``, energy-group exclusions) are an :class:`~openmmbackmap.errors.InputError` naming
    the file, line and option. Options that do not change the potential (integrator,
    output, coupling, ...) are ignored.
    """
    if not isinstance(mdp, MdpOptions):
        mdp = MdpOptions(mdp) if isinstance(mdp, dict) else read_mdp(mdp)

    def refuse(key: str, why: str):
        raise mdp.error(key, f"is not supported ({why})")

    if mdp.word("cutoff-scheme", "verlet") != "verlet":
        refuse("cutoff-scheme", "only Verlet")
    if mdp.word("pbc", "xyz") != "xyz":
        refuse("pbc", "only xyz")
    coulombtype = {"reactionfield": "reaction-field", "cutoff": "cut-off"}.get(mdp.word("coulombtype", "cut-off"))
    if coulombtype is None:
        refuse("coulombtype", "only reaction-field and cut-off")
    shifts = {"potentialshiftverlet": True, "potentialshift": True, "none": False}
    coulomb_shift = shifts.get(mdp.word("coulomb-modifier", "potential-shift"))
    if coulomb_shift is None:
        refuse("coulomb-modifier", "only Potential-shift(-Verlet) and None")
    if mdp.word("vdw-type", "cut-off") != "cutoff":
        refuse("vdw-type", "only cut-off; switched potentials are vdw-modifier options, not supported either")
    vdw_shift = shifts.get(mdp.word("vdw-modifier", "potential-shift"))
    if vdw_shift is None:
        refuse("vdw-modifier", "only Potential-shift(-Verlet) and None")
    rcoulomb, rvdw = mdp.number("rcoulomb", 1.0), mdp.number("rvdw", 1.0)
    if rcoulomb != rvdw:
        refuse("rvdw", f"must equal rcoulomb = {rcoulomb} (as GROMACS requires without PME)")
    epsilon_r = mdp.number("epsilon-r", 1.0)
    if epsilon_r == 0:
        refuse("epsilon-r", "0 means infinity: no electrostatics")
    for key, default in (("dispcorr", "no"), ("free-energy", "no"), ("pull", "no"), ("awh", "no"),
                         ("implicit-solvent", "no"), ("qmmm", "no"), ("qmmm-cp2k-active", "false"),
                         ("constraints", "none")):
        if mdp.word(key, default) not in (default, "no", "false"):
            refuse(key, f"only {default}")
    if mdp.number("nwall", 0) != 0:
        refuse("nwall", "walls")
    for key in ("energygrp-excl", "energygrp-table"):
        if mdp.get(key, ""):
            refuse(key, "energy-group exclusions and tables")
    for axis in "xyz":
        key = f"electric-field-{axis}"
        numbers = mdp.get(key, "").split()
        try:
            applied = any(float(v) != 0 for v in numbers)
        except ValueError:
            raise mdp.error(key, "is not a list of numbers") from None
        if applied:
            refuse(key, "external electric fields")
    return NonbondedSettings(
        cutoff=rcoulomb, epsilon_r=epsilon_r, epsilon_rf=mdp.number("epsilon-rf", 0.0),
        coulombtype=coulombtype, coulomb_shift=coulomb_shift, vdw_shift=vdw_shift, periodic=True,
    )


# --------------------------------------------------------------------------------------------
# .gro files


def read_gro(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(positions (n, 3) nm, box vectors (3, 3) nm) of the first frame of a .gro file.

    Coordinates may have any number of decimals (GROMACS's variable-precision .gro: the field
    width is the distance between the first two decimal points of the first atom line).
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    try:
        n = int(lines[1])
    except (IndexError, ValueError):
        raise InputError(f"{path}:2: expected the number of atoms") from None
    if len(lines) < n + 3:
        raise InputError(f"{path}: {n} atoms announced, file has {len(lines) - 3} atom lines")
    width = 8
    if n:
        first = lines[2]
        dot = first.find(".", 20)
        second = first.find(".", dot + 1) if dot >= 0 else -1
        if dot < 0 or second < 0:
            raise InputError(f"{path}:3: cannot find the coordinates' decimal points in {first!r}")
        width = second - dot
    positions = np.empty((n, 3))
    for k in range(n):
        line = lines[2 + k]
        try:
            positions[k] = [float(line[20 + d * width:20 + (d + 1) * width]) for d in range(3)]
        except ValueError:
            raise InputError(f"{path}:{k + 3}: cannot read coordinates from {line!r}") from None
    try:
        b = [float(w) for w in lines[2 + n].split()]
    except ValueError:
        raise InputError(f"{path}:{n + 3}: cannot read the box line") from None
    box = np.diag(b[:3])
    if len(b) == 9:
        box[0, 1], box[0, 2], box[1, 0], box[1, 2], box[2, 0], box[2, 1] = b[3:]
    elif len(b) != 3:
        raise InputError(f"{path}:{n + 3}: box line needs 3 or 9 numbers")
    return positions, box


def write_gro(
    path: str | os.PathLike, topology: GromacsTopology, positions, box, title: str = "", *, decimals: int = 3
) -> Path:
    """Write a .gro file for ``topology`` (names from its [ atoms ]); positions and box in nm.

    ``decimals`` > 3 writes GROMACS's variable-precision .gro (``gmx`` and :func:`read_gro`
    read it), e.g. to hand exact positions to ``gmx mdrun -rerun``. Written atomically.
    """
    positions = np.asarray(_nm(positions), dtype=float)
    box = np.asarray(_nm(box), dtype=float)
    if box.shape == (3,):
        box = np.diag(box)
    atoms = topology.particles()
    if len(atoms) != len(positions):
        raise InputError(f"{len(positions)} positions for {len(atoms)} particles")
    if not np.isfinite(positions).all():
        raise InputError("positions are not all finite")
    width = decimals + 5
    out = [title or topology.title or "written by openmm-backmap", f"{len(atoms):5d}"]
    for k, (atom, xyz) in enumerate(zip(atoms, positions), start=1):
        out.append(
            f"{atom.resid % 100000:5d}{atom.resname[:5]:<5s}{atom.name[:5]:>5s}{k % 100000:5d}"
            + "".join(f"{v:{width}.{decimals}f}" for v in xyz)
        )
    diag = [box[0, 0], box[1, 1], box[2, 2]]
    off = [box[0, 1], box[0, 2], box[1, 0], box[1, 2], box[2, 0], box[2, 1]]
    out.append(" ".join(f"{v:10.5f}" for v in (diag + off if any(off) else diag)))
    with atomic_output(path) as temporary:
        temporary.write_text("\n".join(out) + "\n")
    return Path(path)


# --------------------------------------------------------------------------------------------
# Atomistic output for GROMACS

# Forces that parmed turns into GROMACS topology terms; CMMotionRemover and barostats are
# run settings (the .mdp's comm-mode and pcoupl), not topology.
_GROMACS_FORCES = (
    "HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "RBTorsionForce",
    "CMAPTorsionForce", "NonbondedForce", "CustomTorsionForce",
)
_RUN_SETTINGS = ("CMMotionRemover", "MonteCarloBarostat", "MonteCarloAnisotropicBarostat",
                 "MonteCarloMembraneBarostat", "AndersenThermostat")


def write_gromacs(
    topology: app.Topology,
    positions,
    forcefield: "openmm.System | app.ForceField | str | Sequence[str]",
    gro_path: str | os.PathLike,
    top_path: str | os.PathLike,
    *,
    box_vectors=None,
    decimals: int = 3,
) -> tuple[Path, Path]:
    """Write an atomistic structure as a GROMACS ``.gro`` and a self-contained ``.top``.

    The topology is converted with parmed (``parmed.openmm.load_topology``), so every force
    field term is written with explicit parameters: atom types, bonds, angles, proper and
    improper torsions, 1-4 pairs (``gen-pairs = no``, ``fudgeQQ`` from the System). ``gmx
    grompp`` reads the result without any force-field folder.

    Parameters
    ----------
    topology
        The atomistic topology (e.g. a backmapped protein).
    positions
        Coordinates in nm, shape (atoms, 3) (or an OpenMM Quantity).
    forcefield
        An OpenMM ``System`` for ``topology``, or a ``ForceField`` (or its XML file names), from
        which a flexible System is built (``constraints=None``, flexible water; ``PME`` if there
        is a box, else ``NoCutoff``). Only terms GROMACS has are accepted: implicit solvent
        (GBSA, ``CustomGBForce``), custom external or non-bonded forces and virtual sites raise
        :class:`~openmmbackmap.errors.InputError`. The non-bonded method, cut-offs and
        thermostat/barostat are run settings for the ``.mdp``, not part of the topology.
    gro_path, top_path
        Output files, written atomically.
    box_vectors
        Box (nm, 3 lengths or 3x3); default: the topology's, or else a rectangular box 2 nm
        larger than the structure on every side (GROMACS's Verlet scheme always needs one).
    decimals
        Decimals of the .gro coordinates (3 is standard; more gives GROMACS's
        variable-precision format).

    Constraints of a System are kept: a constrained bond without bond parameters (OpenMM's
    ``constraints=HBonds`` and the like) is written as a connection (bond type 5) plus a
    ``[ constraints ]`` entry with the System's length; a constrained bond that still has
    parameters stays a bond (let the ``.mdp``'s ``constraints`` option constrain it). Rigid
    water from a System is refused; pass the ``ForceField`` instead, which writes flexible water
    with GROMACS's usual ``[ settles ]`` (used unless ``-DFLEXIBLE``).

    Examples
    --------
    >>> write_gromacs(topology, xyz, app.ForceField("amber99sbildn.xml"),   # doctest: +SKIP
    ...               "backmapped.gro", "backmapped.top")
    """
    import io as _text_io
    import warnings

    import parmed

    xyz = np.asarray(_nm(positions), dtype=float)
    if xyz.shape != (topology.getNumAtoms(), 3):
        raise InputError(f"{xyz.shape[0] if xyz.ndim == 2 else xyz.shape} positions for {topology.getNumAtoms()} atoms")
    if not np.isfinite(xyz).all():
        raise InputError("positions are not all finite")
    if box_vectors is None and topology.getPeriodicBoxVectors() is not None:
        box_vectors = topology.getPeriodicBoxVectors()
    if box_vectors is None:
        lo, hi = xyz.min(axis=0), xyz.max(axis=0)
        box = np.diag(hi - lo + 4.0)
        xyz = xyz - lo + 2.0  # centred in its box, as gmx editconf -d 2 would
    else:
        box = np.array([[v[0], v[1], v[2]] for v in _box_vec3(box_vectors)])

    if isinstance(forcefield, openmm.System):
        system = forcefield
    else:
        if not isinstance(forcefield, app.ForceField):
            files = [forcefield] if isinstance(forcefield, (str, os.PathLike)) else list(forcefield)
            try:
                forcefield = app.ForceField(*[str(f) for f in files])
            except Exception as exc:
                raise InputError(f"cannot load force field files {files}: {exc}") from exc
        periodic = topology.getPeriodicBoxVectors() is not None
        try:
            system = forcefield.createSystem(
                topology, nonbondedMethod=app.PME if periodic else app.NoCutoff,
                constraints=None, rigidWater=False,
            )
        except ValueError as exc:
            raise InputError(f"cannot build a System for GROMACS: {exc}") from exc
    if system.getNumParticles() != topology.getNumAtoms():
        raise InputError(f"the System has {system.getNumParticles()} particles, the topology {topology.getNumAtoms()} atoms")
    refused = sorted({
        type(f).__name__ for f in system.getForces()
        if type(f).__name__ not in _GROMACS_FORCES + _RUN_SETTINGS
    })
    if refused:
        implicit = [name for name in refused if "GB" in name]
        hint = " (implicit solvent has no GROMACS equivalent: build a vacuum or explicit-solvent System)" if implicit else ""
        raise InputError(f"the System has forces GROMACS topologies cannot express: {', '.join(refused)}{hint}")
    sites = [i for i in range(system.getNumParticles()) if system.isVirtualSite(i)]
    if sites:
        raise InputError(f"the System has {len(sites)} virtual sites (e.g. particle {sites[0]}); writing them is not supported")

    bonded = {tuple(sorted((b.atom1.index, b.atom2.index))) for b in topology.bonds()}
    with_parameters = set()
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, *_ = force.getBondParameters(k)
                with_parameters.add((min(i, j), max(i, j)))
    constraints: dict[tuple[int, int], float] = {}
    for k in range(system.getNumConstraints()):
        i, j, d = system.getConstraintParameters(k)
        pair = (min(i, j), max(i, j))
        if pair in with_parameters:
            continue
        if pair not in bonded:
            atoms = list(topology.atoms())
            raise InputError(
                f"the System constrains {_describe(atoms[pair[0]])} - {_describe(atoms[pair[1]])}, which are not "
                "bonded (rigid water or angle constraints); pass the ForceField to write flexible water and "
                "[ settles ] instead"
            )
        constraints[pair] = d.value_in_unit(unit.nanometer) if unit.is_quantity(d) else float(d)

    with warnings.catch_warnings():
        warnings.simplefilter("error", parmed.exceptions.OpenMMWarning)
        try:
            structure = parmed.openmm.load_topology(topology, system, xyz=xyz * 10.0)
        except parmed.exceptions.OpenMMWarning as exc:
            raise InputError(f"parmed cannot convert the System for GROMACS: {exc}") from exc
    lengths = np.linalg.norm(box, axis=1)
    angles = [
        math.degrees(math.acos(np.clip(box[j] @ box[k] / (lengths[j] * lengths[k]), -1, 1)))
        for j, k in ((1, 2), (0, 2), (0, 1))
    ]
    structure.box = [*(lengths * 10.0), *angles]
    for bond in structure.bonds:
        if bond.type is None:
            pair = tuple(sorted((bond.atom1.idx, bond.atom2.idx)))
            if pair not in constraints:
                raise InputError(f"bond {_describe(list(topology.atoms())[pair[0]])} - "
                                 f"{_describe(list(topology.atoms())[pair[1]])} has no parameters in the System")
            bond.funct = 5  # a connection: exclusions as for a bond; the constraint holds the length

    top_text = _text_io.StringIO()
    parmed.gromacs.GromacsTopologyFile.from_structure(structure).write(top_text)
    top_text = _add_constraints(top_text.getvalue(), constraints, topology)
    gro_text = _text_io.StringIO()
    parmed.gromacs.GromacsGroFile.write(structure, gro_text, precision=decimals)

    with atomic_output(top_path) as temporary:
        temporary.write_text(top_text)
    with atomic_output(gro_path) as temporary:
        temporary.write_text(gro_text.getvalue())
    return Path(gro_path), Path(top_path)


def _describe(atom) -> str:
    return f"{atom.residue.name}{atom.residue.id}:{atom.name} (atom {atom.index})"


def _add_constraints(text: str, constraints: dict[tuple[int, int], float], topology: app.Topology) -> str:
    """Add ``[ constraints ]`` to the molecule types of parmed's .top text.

    The global atom order is rebuilt from the text itself ([ molecules ] x [ atoms ]), as
    grompp does, and checked against ``topology``'s atom names.
    """
    blocks = re.split(r"(?m)^(?=\[ moleculetype \])", text)
    head, molecule_blocks = blocks[0], blocks[1:]
    tail = ""
    if molecule_blocks:  # [ system ] and [ molecules ] follow the last molecule type
        last = molecule_blocks[-1]
        cut = re.search(r"(?m)^\[ system \]", last)
        if cut:
            molecule_blocks[-1], tail = last[:cut.start()], last[cut.start():]
    names, atom_names = [], []
    for block in molecule_blocks:
        lines = [l.split(";")[0].split() for l in block.splitlines()]
        # preprocessor lines (parmed's water: #ifdef FLEXIBLE ... #else [ settles ] #endif) are no rows
        lines = [l for l in lines if l and not l[0].startswith("#")]
        names.append(lines[1][0])  # the line after the header
        section, atoms = None, []
        for words in lines:
            if words[0] == "[":
                section = words[1]
            elif section == "atoms":
                atoms.append(words[4])
        atom_names.append(atoms)
    order: list[tuple[int, int]] = []  # global atom -> (molecule type index, local index)
    in_molecules = False
    for line in tail.splitlines():
        words = line.split(";")[0].split()
        if not words:
            continue
        if words[0] == "[":
            in_molecules = words[1] == "molecules"
        elif in_molecules:
            k = names.index(words[0])
            for _ in range(int(words[1])):
                order.extend((k, local) for local in range(len(atom_names[k])))
    expected = [a.name for a in topology.atoms()]
    written = [atom_names[k][local] for k, local in order]
    if written != expected:
        raise InputError("the GROMACS topology would reorder the atoms (molecules interleaved in the topology)")
    # constraints of each molecule (by its first atom), in local indices
    instances: dict[int, set[tuple[int, int, float]]] = {index - local: set() for index, (_, local) in enumerate(order)}
    for (i, j), d in constraints.items():
        (ki, li), (kj, lj) = order[i], order[j]
        if ki != kj or i - li != j - lj:
            raise InputError(f"constraint between atoms {i} and {j} crosses molecules")
        instances[i - li].add((li, lj, round(d, 9)))
    per_type: list[set | None] = [None] * len(names)
    for start, rows in instances.items():
        k = order[start][0]
        if per_type[k] is None:
            per_type[k] = rows
        elif per_type[k] != rows:
            raise InputError(f"copies of molecule type {names[k]} have different constraints")
    out = [head]
    for block, extra in zip(molecule_blocks, per_type):
        if extra:
            rows = "".join(f"{i + 1:7d} {j + 1:6d}     1   {d:.9f}\n" for i, j, d in sorted(extra))
            block = block.rstrip("\n") + "\n\n[ constraints ]\n;    ai     aj funct         b0\n" + rows + "\n"
        out.append(block)
    return "".join(out) + tail


# --------------------------------------------------------------------------------------------
# Running GROMACS


def find_gmx(prefer_double: bool = False) -> str | None:
    """Path of the ``gmx`` program (``gmx_d`` first when ``prefer_double``), or None."""
    import shutil

    names = ("gmx_d", "gmx") if prefer_double else ("gmx", "gmx_d")
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def run_gmx(
    args: Sequence[str],
    cwd: str | os.PathLike,
    *,
    stdin: str | None = None,
    executable: str | None = None,
    timeout: float = 600.0,
) -> str:
    """Run one ``gmx`` tool (``run_gmx(["grompp", "-f", "md.mdp", ...], folder)``); return its stdout and stderr.

    Raises
    ------
    InputError
        If GROMACS is not installed, or the tool fails or times out; the message names the tool,
        the folder and ends with the tool's own error (GROMACS prints it last).
    """
    import subprocess

    program = executable or find_gmx()
    if program is None:
        raise InputError("GROMACS is not installed: no gmx on PATH (e.g. apt-get install gromacs)")
    command = [program, "-quiet", *[str(a) for a in args]]
    try:
        result = subprocess.run(command, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise InputError(f"gmx {args[0]} in {cwd} did not finish in {timeout:g} s") from exc
    output = result.stdout + result.stderr
    if result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise InputError(f"gmx {args[0]} failed in {cwd} (exit status {result.returncode}; "
                         f"{' '.join(command[2:])}):\n{tail}")
    return output


def read_energies(
    edr: str | os.PathLike, terms: Sequence[str], *, executable: str | None = None
) -> dict[str, np.ndarray]:
    """Energy terms of a GROMACS ``.edr`` file by name (``gmx energy``): {term: values per frame}, plus ``"Time (ps)"``.

    Raises
    ------
    InputError
        If the file lacks a term or ``gmx energy`` fails.
    """
    edr = Path(edr).resolve()
    xvg = edr.with_name(f".{edr.stem}.energies.xvg")
    try:
        run_gmx(["energy", "-f", str(edr), "-o", str(xvg)], edr.parent,
                stdin="\n".join(terms) + "\n\n", executable=executable)
        names, rows = ["Time (ps)"], []
        for line in xvg.read_text().splitlines():
            if line.startswith("@ s") and "legend" in line:
                names.append(line.split('"')[1])
            elif line and line[0] not in "#@":
                rows.append([float(v) for v in line.split()])
    finally:
        xvg.unlink(missing_ok=True)
    missing = [t for t in terms if t not in names]
    if missing:
        raise InputError(f"{edr} has no energy term {', '.join(map(repr, missing))} (it has {', '.join(names[1:])})")
    values = np.array(rows, dtype=float).reshape(-1, len(names))
    return {name: values[:, k] for k, name in enumerate(names)}


def mdrun_performance(log: str | os.PathLike) -> float:
    """ns/day that ``gmx mdrun`` reported at the end of its ``.log`` (``Performance:`` line)."""
    for line in reversed(Path(log).read_text().splitlines()):
        if line.startswith("Performance:"):
            return float(line.split()[1])
    raise InputError(f"{log}: no 'Performance:' line (did mdrun finish?)")


# --------------------------------------------------------------------------------------------
# A model's beads inside a larger CG system

# Residue names that name the same amino acid (protonation states, force-field spellings):
# a CG file written from one naming must match a model trained on the other.
_RESIDUE_ALIASES = {
    "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "HISD": "HIS",
    "HISE": "HIS", "HISH": "HIS", "CYX": "CYS", "CYM": "CYS", "ASH": "ASP", "ASPP": "ASP", "GLH": "GLU",
    "GLUP": "GLU", "LYN": "LYS", "LSN": "LYS",
}


def _residue_key(name: str) -> str:
    return _RESIDUE_ALIASES.get(name.upper(), name.upper())


class CGParticle(NamedTuple):
    """One particle of a CG structure or topology file, for matching and error messages."""

    resid: int
    resname: str
    name: str
    line: int | None


def read_cg_particles(path: str | os.PathLike, *, defines: dict[str, str] | None = None) -> list[CGParticle]:
    """Residue numbers and names and particle names of every particle of a CG system, in order.

    Parameters
    ----------
    path
        A ``.gro`` (first frame), ``.pdb`` (first model) or GROMACS ``.top`` (read with
        :func:`read_top`; ``defines`` as there). A ``.tpr`` is binary: convert it with
        ``gmx editconf -f run.tpr -o conf.gro``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"CG topology file {str(path)!r} does not exist")
    if suffix == ".top":
        return [CGParticle(a.resid, a.resname, a.name, None) for a in read_top(path, defines=defines).particles()]
    if suffix not in (".gro", ".pdb"):
        raise InputError(f"CG topology file {str(path)!r}: unsupported format {path.suffix!r}; supported: .gro, .pdb, .top"
                         + (" (convert a .tpr with gmx editconf -f run.tpr -o conf.gro)" if suffix == ".tpr" else ""))
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    particles = []
    if suffix == ".gro":
        try:
            n = int(lines[1])
        except (IndexError, ValueError):
            raise InputError(f"{path}:2: expected the number of atoms") from None
        if len(lines) < n + 2:
            raise InputError(f"{path}: {n} atoms announced, file has {len(lines) - 2} lines after the header")
        for k in range(n):
            line = lines[2 + k]
            try:
                particles.append(CGParticle(int(line[0:5]), line[5:10].strip(), line[10:15].strip(), k + 3))
            except ValueError:
                raise InputError(f"{path}:{k + 3}: cannot read residue number, residue and atom name from {line!r}") from None
        return particles
    for number, line in enumerate(lines, start=1):
        if line.startswith("ENDMDL"):
            break
        if line.startswith(("ATOM  ", "HETATM")):
            try:
                resid = int(line[22:26])
            except ValueError:
                raise InputError(f"{path}:{number}: cannot read the residue number from {line!r}") from None
            particles.append(CGParticle(resid, line[17:21].strip(), line[12:16].strip(), number))
    return particles


def find_model_beads(
    path: str | os.PathLike,
    mapping,
    *,
    defines: dict[str, str] | None = None,
    particles: Sequence[CGParticle] | None = None,
) -> np.ndarray:
    """Indices of a mapping's beads inside a larger CG system (e.g. a protein in Martini water with ions).

    The beads are found as one contiguous run of particles whose residue names and particle
    names are the mapping's beads, in its order, with residues starting and ending where the
    mapping's do (residue numbers may differ; HIS/HIE/HSD-style spellings are the same residue).

    Parameters
    ----------
    path
        The CG system's structure or topology: ``.gro``, ``.pdb`` or ``.top`` (see
        :func:`read_cg_particles`).
    mapping
        The :class:`~openmmbackmap.mapping.Mapping` of the model (``backmapper.mapping``).
    particles
        What :func:`read_cg_particles` returned for ``path``, if the caller has it already
        (``path`` then only names the file in messages).

    Returns
    -------
    numpy.ndarray
        The particle indices (0-based) of the beads, in the mapping's order.

    Raises
    ------
    InputError
        If no run of particles matches (the message names the closest candidate and the first
        particle that differs, with its line in the file), or more than one does.
    """
    if particles is None:
        particles = read_cg_particles(path, defines=defines)
    residues = list(mapping.topology.residues())
    wanted = [(_residue_key(residues[b.residue_index].name), b.name) for b in mapping.beads]
    wanted_residue = [b.residue_index for b in mapping.beads]
    have = [(_residue_key(p.resname), p.name) for p in particles]
    m, n = len(wanted), len(particles)

    def first_difference(start: int) -> int:
        """Index (in the model) of the first bead that does not fit at ``start``; m if all fit."""
        for k in range(m):
            if start + k >= n or have[start + k] != wanted[k]:
                return k
            if k and (wanted_residue[k] != wanted_residue[k - 1]) != (
                    (particles[start + k].resid, particles[start + k].resname)
                    != (particles[start + k - 1].resid, particles[start + k - 1].resname)):
                return k
        return m

    matches, best = [], (-1, 0)
    for start in range(n):
        if have[start] != wanted[0]:
            continue
        fit = first_difference(start)
        if fit == m:
            matches.append(start)
        elif fit > best[0]:
            best = (fit, start)
    if len(matches) == 1:
        return np.arange(matches[0], matches[0] + m)
    what = f"{m} beads of the model ({wanted[0][0]} {wanted[0][1]} ... {wanted[-1][0]} {wanted[-1][1]})"
    if matches:
        where = ", ".join(f"{s + 1}-{s + m}" for s in matches[:5])
        raise InputError(f"{path}: holds {len(matches)} copies of the {what}, at particles {where}; "
                         "backmap one copy: write a CG trajectory of it alone (gmx trjconv -n)")
    if best[0] < 0:
        raise InputError(f"{path}: none of its {n} particles is the model's first bead {wanted[0][1]} of residue "
                         f"{wanted[0][0]}; the CG system does not hold the {what}")
    fit, start = best
    if start + fit >= n:
        raise InputError(f"{path}: the closest match to the {what} starts at particle {start + 1} and runs past "
                         f"the end of the file after {fit} beads")
    p = particles[start + fit]
    line = f" (line {p.line})" if p.line else ""
    bead = mapping.beads[fit]
    residue = residues[bead.residue_index]
    raise InputError(
        f"{path}: no run of particles matches the {what}; the closest starts at particle {start + 1} and differs "
        f"at model bead {fit + 1} ({bead.name} of {residue.name}{residue.id}): the file has particle {start + fit + 1} "
        f"{p.name} of {p.resname}{p.resid}{line}"
    )
