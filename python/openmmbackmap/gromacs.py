"""GROMACS Martini topologies as OpenMM Systems.

:func:`read_top` reads a GROMACS topology (``.top`` with its ``#include`` files) the way
``gmx grompp`` does for the subset of GROMACS that Martini 2/3 models use, and
:meth:`GromacsTopology.create_system` turns it into an :class:`openmm.System` with Martini's
non-bonded treatment as run by GROMACS with the Verlet cut-off scheme:

* Lennard-Jones from the per-type-pair C6/C12 table (``[ nonbond_params ]`` or the combination
  rule), shifted to zero at the cut-off (``vdw-modifier = potential-shift``);
* reaction-field Coulomb with ``epsilon_r`` and ``epsilon_rf`` (0 means infinity), shifted to
  zero at the cut-off as GROMACS does, including GROMACS's reaction-field terms for excluded pairs
  within the cut-off and its self term (both matter for the energy, the first for forces);
* exclusions from ``[ exclusions ]`` and from the bond graph up to ``nrexcl`` bonds.

Supported directives: ``defaults`` (2 to 5 fields), ``atomtypes``, ``nonbond_params``,
``moleculetype``, ``atoms``, ``bonds`` (1, 6), ``constraints`` (1, 2), ``angles`` (1, 2, 10),
``dihedrals`` (1, 2, 4, 9, 11), ``exclusions``, ``position_restraints`` (1),
``virtual_sitesn`` (1, 2, 3), ``system``, ``molecules``; preprocessor ``#include``,
``#define`` (with substitution of defined words), ``#undef``, ``#ifdef``, ``#ifndef``,
``#else``, ``#endif``. Everything else raises :class:`~openmmbackmap.errors.InputError`
naming the file, the line and the directive; nothing is skipped silently.

Units are GROMACS's (nm, kJ/mol, degrees in the files, radians inside OpenMM), which are
OpenMM's.

Examples
--------
>>> top = read_top("topol.top", include_dirs=["ff/"])          # doctest: +SKIP
>>> positions, box = read_gro("conf.gro")                     # doctest: +SKIP
>>> system = top.create_system(box)                           # doctest: +SKIP
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

from openmmbackmap.errors import InputError

#: GROMACS 2022's 1/(4 pi eps0) in kJ mol^-1 nm e^-2 (``ONE_4PI_EPS0``); OpenMM's differs by 1e-8.
ONE_4PI_EPS0 = 138.935458

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
    "angles", "dihedrals", "exclusions", "position_restraints", "virtual_sitesn", "system",
    "molecules",
}
# Directives that belong to a molecule type.
_MOLECULE_DIRECTIVES = {
    "atoms", "bonds", "constraints", "angles", "dihedrals", "exclusions", "position_restraints",
    "virtual_sitesn",
}
# Number of atoms, and parameter counts, per (directive, function type).
_INTERACTIONS = {
    ("bonds", 1): (2, 2),
    ("bonds", 6): (2, 2),
    ("constraints", 1): (2, 1),
    ("constraints", 2): (2, 1),
    ("angles", 1): (3, 2),
    ("angles", 2): (3, 2),
    ("angles", 10): (3, 2),
    ("dihedrals", 1): (4, 3),
    ("dihedrals", 2): (4, 2),
    ("dihedrals", 4): (4, 3),
    ("dihedrals", 9): (4, 3),
    ("dihedrals", 11): (4, 6),
    ("position_restraints", 1): (1, 3),
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
class MoleculeType:
    name: str
    nrexcl: int
    where: Where
    atoms: list[Atom] = field(default_factory=list)
    interactions: list[Interaction] = field(default_factory=list)
    exclusions: list[tuple[int, ...]] = field(default_factory=list)
    #: (site, function type, atoms, weights) from [ virtual_sitesn ].
    virtual_sites: list[tuple[int, int, tuple[int, ...], tuple[float, ...] | None, Where]] = field(
        default_factory=list
    )

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
        cutoff: float = 1.1,
        epsilon_r: float = 15.0,
        epsilon_rf: float = 0.0,
        split_nonbonded: bool = False,
        restraint_positions=None,
    ) -> openmm.System:
        """An OpenMM System equivalent to GROMACS's Martini setup (Verlet, potential-shift).

        Parameters
        ----------
        box_vectors
            Periodic box in nm: 3 lengths, 3x3 vectors, or None for no periodicity (cut-off
            without periodic images).
        cutoff
            ``rvdw`` = ``rcoulomb`` in nm (Martini: 1.1).
        epsilon_r, epsilon_rf
            Reaction field dielectric constants; ``epsilon_rf = 0`` means infinity (Martini).
        split_nonbonded
            Put LJ and Coulomb in separate forces (and force groups) for term-by-term checks;
            by default one CustomNonbondedForce computes both, which is faster.
        restraint_positions
            Reference positions (nm, one per particle) of ``[ position_restraints ]``; needed
            when the topology has active position restraints (GROMACS's ``-r`` file).

        Force groups follow :data:`FORCE_GROUPS`; the combined non-bonded force is in the
        ``"LJ (SR)"`` group.
        """
        particles = self.particles()
        n = len(particles)
        system = openmm.System()
        for atom in particles:
            system.addParticle(atom.mass)
        periodic = box_vectors is not None
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
        self._add_nonbonded(system, particles, forces, periodic, cutoff, epsilon_r, epsilon_rf, split_nonbonded)
        for f in forces.values():
            system.addForce(f)
        return system

    def _add_virtual_sites(self, system: openmm.System) -> None:
        for offset, moltype in self._expanded():
            for site, func, atoms, weights, where in moltype.virtual_sites:
                idx = [offset + i for i in atoms]
                if func == 1:
                    w = np.full(len(idx), 1.0 / len(idx))
                elif func == 2:
                    masses = np.array([moltype.atoms[i].mass for i in atoms])
                    if masses.sum() <= 0:
                        raise where.error("centre-of-mass virtual site built from massless particles")
                    w = masses / masses.sum()
                else:
                    w = np.asarray(weights, dtype=float)
                    w = w / w.sum()
                system.setParticleMass(offset + site, 0.0)
                if len(idx) == 1:
                    raise where.error("a virtual site built from one particle is not supported")
                if len(idx) == 2:
                    vs = openmm.TwoParticleAverageSite(*idx, *w)
                elif len(idx) == 3:
                    vs = openmm.ThreeParticleAverageSite(*idx, *w)
                else:
                    # Origin = weighted average; local position 0, so the axes only need to be
                    # well defined (non-collinear constructing particles).
                    xw = [0.0] * len(idx)
                    yw = [0.0] * len(idx)
                    xw[0], xw[1] = -1.0, 1.0
                    yw[0], yw[2] = -1.0, 1.0
                    vs = openmm.LocalCoordinatesSite(idx, list(w), xw, yw, openmm.Vec3(0, 0, 0))
                system.setVirtualSite(offset + site, vs)

    def _add_nonbonded(self, system, particles, forces, periodic, cutoff, epsilon_r, epsilon_rf, split):
        types = sorted({a.type for a in particles})
        index = {t: i for i, t in enumerate(types)}
        nt = len(types)
        c6 = np.zeros((nt, nt))
        c12 = np.zeros((nt, nt))
        for i, ti in enumerate(types):
            for j, tj in enumerate(types):
                c6[i, j], c12[i, j] = self._c6_c12(ti, tj)
        if epsilon_r == 0:
            raise InputError("epsilon_r = 0 (infinity) is not supported")
        rc = cutoff
        if epsilon_rf == 0:
            k_rf = 1.0 / (2.0 * rc**3)
        else:
            k_rf = (epsilon_rf - epsilon_r) / (2.0 * epsilon_rf + epsilon_r) / rc**3
        c_rf = 1.0 / rc + k_rf * rc**2
        f_el = ONE_4PI_EPS0 / epsilon_r
        charges = [a.charge for a in particles]
        charged = any(q != 0 for q in charges)

        lj_expr = (
            "C12(t1, t2)*(ir6*ir6 - {irc12!r}) - C6(t1, t2)*(ir6 - {irc6!r}); ir6 = 1/r^6"
        ).format(irc12=rc**-12, irc6=rc**-6)
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
        for offset, moltype in self._expanded():
            excluded.extend((offset + i, offset + j) for i, j in sorted(moltype.excluded_pairs()))
        for f in built:
            for i, j in excluded:
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


def _nm(values):
    try:
        import openmm.unit as unit

        if unit.is_quantity(values):
            return values.value_in_unit(unit.nanometer)
    except ImportError:  # pragma: no cover
        pass
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
            nparams = spec[1]
            params = words[natoms + 1:]
            if not params:
                raise where.error(
                    "parameters from [ *types ] directives are not supported; give them on the line"
                )
            if len(params) != nparams:
                raise where.error(f"function type {func} needs {nparams} parameters, found {len(params)}")
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
                atoms, weights = tuple(_atom_index(w, current, where) for w in rest), None
            elif func == 3:
                if len(rest) % 2:
                    raise where.error("function type 3 needs (atom weight) pairs")
                atoms = tuple(_atom_index(w, current, where) for w in rest[::2])
                weights = tuple(_float(w, where, "weight") for w in rest[1::2])
            else:
                raise where.error(f"function type {func} is not supported (supported: [1, 2, 3])")
            current.virtual_sites.append((site, func, atoms, weights, where))
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


def _atom_index(word: str, moltype: MoleculeType, where: Where) -> int:
    nr = _int(word, where, "atom number")
    if not 1 <= nr <= len(moltype.atoms):
        raise where.error(
            f"atom {nr} is not in molecule type {moltype.name!r} ({len(moltype.atoms)} atoms so far)"
        )
    return nr - 1


# --------------------------------------------------------------------------------------------
# .gro files


def read_gro(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(positions (n, 3) nm, box vectors (3, 3) nm) of the first frame of a .gro file."""
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
    positions = np.empty((n, 3))
    for k in range(n):
        line = lines[2 + k]
        try:
            positions[k] = [float(line[20:28]), float(line[28:36]), float(line[36:44])]
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


def write_gro(path: str | os.PathLike, topology: GromacsTopology, positions, box, title: str = "") -> None:
    """Write a .gro file for ``topology`` (names from its [ atoms ]); positions and box in nm."""
    positions = np.asarray(_nm(positions), dtype=float)
    box = np.asarray(_nm(box), dtype=float)
    if box.shape == (3,):
        box = np.diag(box)
    atoms = topology.particles()
    if len(atoms) != len(positions):
        raise InputError(f"{len(positions)} positions for {len(atoms)} particles")
    out = [title or topology.title or "written by openmm-backmap", f"{len(atoms):5d}"]
    for k, (atom, xyz) in enumerate(zip(atoms, positions), start=1):
        out.append(
            f"{atom.resid % 100000:5d}{atom.resname[:5]:<5s}{atom.name[:5]:>5s}{k % 100000:5d}"
            f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}"
        )
    diag = [box[0, 0], box[1, 1], box[2, 2]]
    off = [box[0, 1], box[0, 2], box[1, 0], box[1, 2], box[2, 0], box[2, 1]]
    out.append(" ".join(f"{v:10.5f}" for v in (diag + off if any(off) else diag)))
    Path(path).write_text("\n".join(out) + "\n")
