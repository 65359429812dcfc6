"""Mappings from atomistic structures to coarse-grained (CG) beads.

A :class:`Mapping` is an atomistic :class:`openmm.app.Topology` plus a list of
:class:`Bead` objects. Each bead belongs to one residue and lists the indices of its atoms
and their weights; the bead sits at the weighted centre of its atoms. An atom listed with
weight zero belongs to the bead (it is reconstructed with it) but does not move its centre,
as ``!`` atoms in Martini ``.map`` files. An atom may belong to several beads.

Mapping a trajectory is one sparse matrix product applied to every frame, so a whole
trajectory maps at once.

Examples
--------
>>> from openmmbackmap import io
>>> from openmmbackmap.mapping import Mapping
>>> topology, positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
>>> mapping = Mapping.from_scheme(topology, "backbone")
>>> [bead.name for bead in mapping.beads]
['C', 'N', 'CA', 'C', 'N']
>>> mapping.map(positions).shape
(5, 3)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import openmm.app as app
import openmm.unit as unit
import scipy.sparse
import scipy.sparse.csgraph

from openmmbackmap import io
from openmmbackmap.errors import MappingError

#: Identifies the canonical serialisation; bump the version when its meaning changes.
FORMAT = "openmm-backmap/mapping"
FORMAT_VERSION = 1

#: Frames per block in Mapping.map (measured fastest on a 3,000-atom protein: benchmarks/bench_mapping.py).
_FRAMES_PER_BLOCK = 256

#: How a weighting named in a scheme or file turns an atom into a number.
WEIGHTINGS = ("mass", "geometric")


@dataclass(frozen=True)
class Bead:
    """One CG bead.

    Attributes
    ----------
    name
        Bead name (``BB``, ``SC1``, ``CA``...); becomes the atom name in the CG topology.
    residue_index
        Index (``Residue.index``) of the atomistic residue the bead belongs to.
    atom_indices
        Indices of the atomistic atoms that belong to the bead.
    weights
        Weight of each atom in the bead centre (same order as ``atom_indices``); zero for
        atoms that belong to the bead without moving its centre. Not normalised.
    """

    name: str
    residue_index: int
    atom_indices: tuple[int, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "atom_indices", tuple(int(i) for i in self.atom_indices))
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))


class Mapping:
    """An atomistic topology and the CG beads built from it.

    Parameters
    ----------
    topology
        The atomistic topology.
    beads
        The beads, in CG particle order.
    scheme
        Label of how the beads were made (``"ca"``, ``"martini3"``, a file name...); kept
        for provenance, not part of the fingerprint.

    Raises
    ------
    MappingError
        If a bead is empty, names an atom or residue outside the topology, has a negative
        weight or weights that sum to zero.
    """

    def __init__(self, topology: app.Topology, beads: Sequence[Bead], scheme: str = "custom"):
        self.topology = topology
        self.beads = tuple(beads)
        self.scheme = scheme
        self._validate()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_scheme(cls, topology: app.Topology, scheme: str, **options) -> "Mapping":
        """Build a mapping with a builtin scheme (see :func:`builtin_schemes`).

        Parameters
        ----------
        topology
            The atomistic topology.
        scheme
            A name from :func:`builtin_schemes`.
        **options
            Passed to the scheme (the Martini schemes take ``from_ff``).
        """
        try:
            build = _SCHEMES[scheme]
        except KeyError:
            raise MappingError(
                f"unknown mapping scheme {scheme!r}; builtin schemes: {', '.join(builtin_schemes())}"
            ) from None
        beads = build(topology, **options)
        if not beads:
            raise MappingError(f"scheme {scheme!r} makes no bead from this topology")
        return cls(topology, beads, scheme=scheme)

    @classmethod
    def load(cls, path: str | os.PathLike, topology: app.Topology | None = None) -> "Mapping":
        """Read a mapping file: canonical JSON/YAML, a residue-template YAML/JSON, or a GROMACS .ndx.

        A canonical file (written by :meth:`save`) carries its own topology; when
        ``topology`` is given as well, the two must match. Template and index files need
        ``topology``.

        The template format names beads per residue name; ``!`` before an atom name keeps
        the atom in the bead with weight zero, as in Martini ``.map`` files, and an atom
        may be given as ``{name: CZ, weight: 0.5}``::

            weighting: mass          # or geometric
            residues:
              ALA:
                BB: [N, H, CA, "!HA", C, O]
                SC1: [CB, HB1, HB2, HB3]
        """
        from openmmbackmap import mapping_files  # file parsers live beside, one job each

        return mapping_files.load_mapping(path, topology)

    # ------------------------------------------------------------------ basic properties

    @property
    def n_atoms(self) -> int:
        """Number of atomistic atoms."""
        return self.topology.getNumAtoms()

    @property
    def n_beads(self) -> int:
        """Number of CG beads."""
        return len(self.beads)

    @cached_property
    def matrix(self) -> scipy.sparse.csr_matrix:
        """The (beads, atoms) sparse matrix of normalised weights: ``cg = matrix @ xyz``."""
        rows, cols, values = [], [], []
        for b, bead in enumerate(self.beads):
            weights = np.asarray(bead.weights)
            rows.extend([b] * len(weights))
            cols.extend(bead.atom_indices)
            values.extend(weights / weights.sum())
        matrix = scipy.sparse.csr_matrix(
            (values, (rows, cols)), shape=(self.n_beads, self.n_atoms), dtype=np.float64
        )
        matrix.eliminate_zeros()
        return matrix

    @cached_property
    def _operators(self) -> dict:
        """``kron(matrix, I3)`` per dtype: acts on a frame flattened to (atoms * 3,) without a transpose."""
        operator = scipy.sparse.kron(self.matrix, scipy.sparse.identity(3), format="csr")
        return {np.dtype(np.float64): operator, np.dtype(np.float32): operator.astype(np.float32)}

    @cached_property
    def atom_owner(self) -> np.ndarray:
        """For each atom, the index of the bead it is reconstructed with.

        An atom in one bead belongs to it; an atom in several beads to the first with a
        non-zero weight; an atom in no bead (as side chains under the ``ca`` scheme) to
        the bead closest along the bond graph, so each residue's atoms fall to its beads.
        Atoms with no bonded path to any bead get -1.
        """
        owner = np.full(self.n_atoms, -1, dtype=np.int64)
        for b, bead in enumerate(self.beads):
            for atom, weight in zip(bead.atom_indices, bead.weights):
                if owner[atom] < 0 and weight > 0:
                    owner[atom] = b
        for b, bead in enumerate(self.beads):  # atoms present only with weight zero
            for atom in bead.atom_indices:
                if owner[atom] < 0:
                    owner[atom] = b
        unowned = owner < 0
        if unowned.any():
            seeds = np.flatnonzero(~unowned)
            graph = self._atom_graph()
            distances, _, sources = scipy.sparse.csgraph.dijkstra(
                graph, directed=False, indices=seeds, unweighted=True, min_only=True,
                return_predecessors=True,
            )
            reachable = unowned & np.isfinite(distances)
            owner[reachable] = owner[sources[reachable]]
        return owner

    def _atom_graph(self) -> scipy.sparse.csr_matrix:
        bonds = np.array([[a.index, b.index] for a, b in self.topology.bonds()], dtype=np.int64)
        if len(bonds) == 0:
            return scipy.sparse.csr_matrix((self.n_atoms, self.n_atoms))
        ones = np.ones(len(bonds))
        return scipy.sparse.csr_matrix(
            (ones, (bonds[:, 0], bonds[:, 1])), shape=(self.n_atoms, self.n_atoms)
        )

    @cached_property
    def bead_bonds(self) -> np.ndarray:
        """Pairs of bonded beads, shape (bonds, 2), sorted.

        Two beads are bonded when an atomistic bond joins atoms they own (see
        :attr:`atom_owner`) or when they share an atom with non-zero weight in both.
        """
        owner = self.atom_owner
        pairs = set()
        for a, b in self.topology.bonds():
            i, j = owner[a.index], owner[b.index]
            if i >= 0 and j >= 0 and i != j:
                pairs.add((min(i, j), max(i, j)))
        members: dict[int, list[int]] = {}
        for b, bead in enumerate(self.beads):
            for atom, weight in zip(bead.atom_indices, bead.weights):
                if weight > 0:
                    members.setdefault(atom, []).append(b)
        for beads in members.values():
            for x in range(len(beads)):
                for y in range(x + 1, len(beads)):
                    if beads[x] != beads[y]:
                        pairs.add((min(beads[x], beads[y]), max(beads[x], beads[y])))
        return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)

    @cached_property
    def bead_masses(self) -> np.ndarray:
        """Mass of each bead in dalton: the masses of the atoms it owns (see :attr:`atom_owner`).

        An atom with non-zero weight in several beads is shared equally between them, so the
        beads' masses add up to the mass of the atoms they cover.
        """
        atom_masses = _atom_masses(self.topology)
        masses = np.zeros(self.n_beads)
        shared: dict[int, list[int]] = {}
        for b, bead in enumerate(self.beads):
            for atom, weight in zip(bead.atom_indices, bead.weights):
                if weight > 0:
                    shared.setdefault(atom, []).append(b)
        for atom, owner in enumerate(self.atom_owner):
            if atom in shared:
                for b in shared[atom]:
                    masses[b] += atom_masses[atom] / len(shared[atom])
            elif owner >= 0:
                masses[owner] += atom_masses[atom]
        return masses

    @cached_property
    def cg_topology(self) -> app.Topology:
        """An OpenMM topology of the beads: one residue per mapped residue, bonds from :attr:`bead_bonds`.

        Beads have no element. Chain ids, residue names and ids are those of the atomistic
        topology.
        """
        cg = app.Topology()
        residues = list(self.topology.residues())
        cg_atoms: dict[int, app.topology.Atom] = {}
        # Beads keep their given order; residues and chains appear as their first bead does.
        chain_of: dict[int, app.topology.Chain] = {}
        residue_of: dict[int, app.topology.Residue] = {}
        for b, bead in enumerate(self.beads):
            residue = residues[bead.residue_index]
            if residue.chain.index not in chain_of:
                chain_of[residue.chain.index] = cg.addChain(residue.chain.id)
            if residue.index not in residue_of:
                residue_of[residue.index] = cg.addResidue(
                    residue.name, chain_of[residue.chain.index], residue.id, residue.insertionCode
                )
            cg_atoms[b] = cg.addAtom(bead.name, None, residue_of[residue.index])
        for i, j in self.bead_bonds:
            cg.addBond(cg_atoms[int(i)], cg_atoms[int(j)])
        if self.topology.getPeriodicBoxVectors() is not None:
            cg.setPeriodicBoxVectors(self.topology.getPeriodicBoxVectors())
        return cg

    # ------------------------------------------------------------------ mapping coordinates

    def map(self, xyz, unitcell_vectors=None) -> np.ndarray:
        """Map atomistic coordinates to bead coordinates.

        Parameters
        ----------
        xyz
            Coordinates in nm, shape (frames, atoms, 3) or (atoms, 3); an
            ``openmm.unit.Quantity`` is converted.
        unitcell_vectors
            Box vectors in nm, shape (frames, 3, 3) or (3, 3). When given, molecules split
            by periodic boundaries are made whole first (bead centres of split molecules
            would otherwise land between the images).

        Returns
        -------
        numpy.ndarray
            Bead coordinates in nm, shape (frames, beads, 3) or (beads, 3); float32 input
            stays float32.

        Raises
        ------
        MappingError
            If the atom count differs from the mapping's topology or a coordinate is not finite.
        """
        if isinstance(xyz, unit.Quantity):
            xyz = xyz.value_in_unit(unit.nanometer)
        xyz = np.ascontiguousarray(xyz)
        if xyz.dtype not in (np.float32, np.float64):
            xyz = xyz.astype(np.float64)
        single = xyz.ndim == 2
        if single:
            xyz = xyz[None]
        if xyz.ndim != 3 or xyz.shape[2] != 3:
            raise MappingError(f"coordinates must have shape (frames, atoms, 3); got {xyz.shape}")
        if xyz.shape[1] != self.n_atoms:
            raise MappingError(
                f"coordinates have {xyz.shape[1]} atoms but the mapping's topology has {self.n_atoms}"
            )
        try:
            io.check_finite(xyz, self.topology, "coordinates")
        except Exception as exc:
            raise MappingError(str(exc)) from None
        if unitcell_vectors is not None:
            if isinstance(unitcell_vectors, unit.Quantity):
                unitcell_vectors = unitcell_vectors.value_in_unit(unit.nanometer)
            xyz = io.make_molecules_whole(xyz, np.asarray(unitcell_vectors), self.topology).astype(
                xyz.dtype
            )
        operator = self._operators[xyz.dtype]
        frames = len(xyz)
        flat = xyz.reshape(frames, self.n_atoms * 3)
        cg = np.empty((frames, self.n_beads, 3), dtype=xyz.dtype)
        # The same sparse product for every frame, applied to blocks of frames: a block stays in
        # cache, which makes it about 4x faster than one product over a transposed trajectory.
        for start in range(0, frames, _FRAMES_PER_BLOCK):
            block = flat[start : start + _FRAMES_PER_BLOCK]
            cg[start : start + len(block)] = (operator @ block.T).T.reshape(len(block), self.n_beads, 3)
        return cg[0] if single else cg

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict:
        """Canonical plain-data form: format, scheme, fingerprint, topology and beads."""
        content = self._content()
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "scheme": self.scheme,
            "fingerprint": _fingerprint(content),
            **content,
        }

    def _content(self) -> dict:
        return {
            "topology": io.topology_to_dict(self.topology),
            "beads": [
                {
                    "name": bead.name,
                    "residue": bead.residue_index,
                    "atoms": list(bead.atom_indices),
                    # rounded so that the JSON, and with it the fingerprint, is stable
                    "weights": [round(w, 9) for w in bead.weights],
                }
                for bead in self.beads
            ],
        }

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of the topology and beads (scheme label excluded)."""
        return _fingerprint(self._content())

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no whitespace): the same mapping gives the same bytes."""
        return canonical_json(self.to_dict())

    def save(self, path: str | os.PathLike) -> Path:
        """Write the mapping as canonical JSON (.json) or YAML (.yaml/.yml), atomically."""
        path = Path(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(self.to_dict(), sort_keys=True)
        elif path.suffix.lower() == ".json":
            text = self.to_json() + "\n"
        else:
            raise MappingError(f"cannot save mapping to {str(path)!r}: use .json, .yaml or .yml")
        with io.atomic_output(path) as temporary:
            temporary.write_text(text)
        return path

    @classmethod
    def from_dict(cls, data: dict, topology: app.Topology | None = None, source: str = "mapping") -> "Mapping":
        """Rebuild a mapping from :meth:`to_dict` output, checking its fingerprint.

        Parameters
        ----------
        data
            The canonical form.
        topology
            If given, it must match the stored topology (same residues, atoms and bonds);
            the mapping then uses this object.
        source
            Name used in error messages (usually the file name).
        """
        if data.get("format") != FORMAT:
            raise MappingError(f"{source}: not an openmm-backmap mapping (format {data.get('format')!r})")
        if data.get("version") != FORMAT_VERSION:
            raise MappingError(
                f"{source}: mapping format version {data.get('version')} is not supported "
                f"(this package reads version {FORMAT_VERSION})"
            )
        content = {"topology": data["topology"], "beads": data["beads"]}
        if _fingerprint(content) != data.get("fingerprint"):
            raise MappingError(
                f"{source}: fingerprint does not match the content; the file was edited or damaged"
            )
        if topology is None:
            topology = io.topology_from_dict(data["topology"])
        else:
            check_same_topology(data["topology"], topology, source)
        beads = [
            Bead(b["name"], b["residue"], tuple(b["atoms"]), tuple(b["weights"])) for b in data["beads"]
        ]
        return cls(topology, beads, scheme=data.get("scheme", "custom"))

    # ------------------------------------------------------------------ checks

    def _validate(self) -> None:
        n_atoms, n_residues = self.n_atoms, self.topology.getNumResidues()
        for b, bead in enumerate(self.beads):
            where = f"bead {b} ({bead.name})"
            if not bead.atom_indices:
                raise MappingError(f"{where} has no atoms")
            if len(bead.atom_indices) != len(bead.weights):
                raise MappingError(f"{where} has {len(bead.atom_indices)} atoms but {len(bead.weights)} weights")
            if not 0 <= bead.residue_index < n_residues:
                raise MappingError(f"{where} names residue index {bead.residue_index}; the topology has {n_residues}")
            bad = [i for i in bead.atom_indices if not 0 <= i < n_atoms]
            if bad:
                raise MappingError(f"{where} names atom index {bad[0]}; the topology has {n_atoms} atoms")
            if len(set(bead.atom_indices)) != len(bead.atom_indices):
                raise MappingError(f"{where} lists an atom twice")
            weights = np.asarray(bead.weights)
            if not np.isfinite(weights).all() or (weights < 0).any():
                raise MappingError(f"{where} has a negative or non-finite weight")
            if weights.sum() <= 0:
                raise MappingError(f"{where} has weights that sum to zero: its centre is undefined")

    def __repr__(self) -> str:
        return (
            f"<Mapping {self.scheme!r}: {self.n_atoms} atoms -> {self.n_beads} beads, "
            f"fingerprint {self.fingerprint[:12]}>"
        )


# ---------------------------------------------------------------------- helpers


def canonical_json(data: dict) -> str:
    """JSON with sorted keys and no whitespace, the form that fingerprints hash."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _fingerprint(content: dict) -> str:
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def check_same_topology(stored: dict, topology: app.Topology, source: str) -> None:
    """Raise :class:`MappingError` naming the first residue or atom where ``topology`` differs from ``stored``."""
    given = io.topology_to_dict(topology)
    stored_residues = [(c["id"], r) for c in stored["chains"] for r in c["residues"]]
    given_residues = [(c["id"], r) for c in given["chains"] for r in c["residues"]]
    if len(stored_residues) != len(given_residues):
        raise MappingError(
            f"{source}: made for a topology with {len(stored_residues)} residues; this one has {len(given_residues)}"
        )
    for index, ((_, a), (chain, b)) in enumerate(zip(stored_residues, given_residues)):
        label = f"residue {b['name']} {b['id']} (index {index}, chain {chain!r})"
        if a["name"] != b["name"]:
            raise MappingError(f"{source}: {label} is {a['name']} in the mapping's topology")
        if a["atoms"] != b["atoms"]:
            names_a, names_b = [x[0] for x in a["atoms"]], [x[0] for x in b["atoms"]]
            missing = [n for n in names_a if n not in names_b]
            extra = [n for n in names_b if n not in names_a]
            detail = (
                f"missing atoms {missing}" if missing else f"extra atoms {extra}" if extra else "atoms in another order"
            )
            raise MappingError(f"{source}: {label} differs from the mapping's topology: {detail}")
    if stored["bonds"] != given["bonds"]:
        raise MappingError(f"{source}: the bonds differ from those of the mapping's topology")


def _atom_masses(topology: app.Topology) -> np.ndarray:
    return np.array(
        [
            atom.element.mass.value_in_unit(unit.dalton) if atom.element is not None else 0.0
            for atom in topology.atoms()
        ]
    )


def atom_weights(topology: app.Topology, atom_indices: Iterable[int], weighting: str) -> tuple[float, ...]:
    """Weights of atoms under a named weighting: ``"mass"`` or ``"geometric"`` (all one).

    Raises
    ------
    MappingError
        For an unknown weighting, or mass weighting of an atom without element.
    """
    atom_indices = list(atom_indices)
    if weighting == "geometric":
        return tuple(1.0 for _ in atom_indices)
    if weighting != "mass":
        raise MappingError(f"unknown weighting {weighting!r}; use one of {', '.join(WEIGHTINGS)} or explicit weights")
    masses = _atom_masses(topology)
    weights = tuple(float(masses[i]) for i in atom_indices)
    for i, w in zip(atom_indices, weights):
        if w <= 0:
            raise MappingError(f"mass weighting: {io.describe_atom(topology, i)} has no element, so no mass")
    return weights


# ---------------------------------------------------------------------- builtin schemes

#: Backbone atoms by residue: caps contribute their single backbone atom.
_CAP_BACKBONE = {"ACE": ("C",), "NME": ("N",), "NMA": ("N",), "NHE": ("N",), "NH2": ("N",)}
_PROTEIN_BACKBONE = ("N", "CA", "C")


def _is_hydrogen(atom: app.topology.Atom) -> bool:
    return atom.element is not None and atom.element.symbol == "H"


def _scheme_ca(topology: app.Topology) -> list[Bead]:
    beads = []
    for residue in topology.residues():
        for atom in residue.atoms():
            if atom.name == "CA" and not (atom.element is not None and atom.element.symbol == "Ca"):
                beads.append(Bead("CA", residue.index, (atom.index,), (1.0,)))
    return beads


def _scheme_backbone(topology: app.Topology) -> list[Bead]:
    beads = []
    for residue in topology.residues():
        names = {atom.name: atom for atom in residue.atoms()}
        wanted = _CAP_BACKBONE.get(residue.name)
        if wanted is None:
            wanted = _PROTEIN_BACKBONE if all(n in names for n in _PROTEIN_BACKBONE) else ()
        for name in wanted:
            if name in names:
                beads.append(Bead(name, residue.index, (names[name].index,), (1.0,)))
    return beads


def _scheme_residue_com(topology: app.Topology) -> list[Bead]:
    beads = []
    for residue in topology.residues():
        indices = [atom.index for atom in residue.atoms()]
        beads.append(Bead("COM", residue.index, tuple(indices), atom_weights(topology, indices, "mass")))
    return beads


def _scheme_heavy_com(topology: app.Topology) -> list[Bead]:
    beads = []
    masses = _atom_masses(topology)
    for residue in topology.residues():
        atoms = list(residue.atoms())
        heavy = [a for a in atoms if not _is_hydrogen(a)]
        if not heavy:
            continue  # nothing heavy to centre on (a lone proton); skip rather than divide by zero
        # Hydrogens stay members with weight zero: they are rebuilt with their residue's bead.
        weights = tuple(0.0 if _is_hydrogen(a) else float(masses[a.index]) for a in atoms)
        beads.append(Bead("HCOM", residue.index, tuple(a.index for a in atoms), weights))
    return beads


def _martini(force_field: str) -> Callable[..., list[Bead]]:
    def build(topology: app.Topology, from_ff: str | None = None) -> list[Bead]:
        from openmmbackmap.martini_mapping import martini_beads

        return martini_beads(topology, force_field, from_ff=from_ff)

    build.__doc__ = f"Martini beads as martinize2 places them for vermouth force field {force_field!r}."
    return build


_SCHEMES: dict[str, Callable[..., list[Bead]]] = {
    "ca": _scheme_ca,
    "backbone": _scheme_backbone,
    "residue_com": _scheme_residue_com,
    "heavy_com": _scheme_heavy_com,
    "martini3": _martini("martini3001"),
    "martini22": _martini("martini22"),
    "elnedyn22": _martini("elnedyn22"),
}

_SCHEME_HELP = {
    "ca": "one bead per residue on its C-alpha",
    "backbone": "heavy backbone atoms N, CA, C (ACE: C; NME: N)",
    "residue_com": "one bead per residue at its centre of mass",
    "heavy_com": "one bead per residue at the centre of mass of its heavy atoms",
    "martini3": "Martini 3 (vermouth martini3001 .map files, as martinize2)",
    "martini22": "Martini 2.2 (vermouth martini22 .map files, as martinize2; lipids included)",
    "elnedyn22": "Martini 2.2 with ElNeDyn (backbone bead on the C-alpha), as martinize2 -ff elnedyn22",
}


def builtin_schemes() -> dict[str, str]:
    """Names of the builtin mapping schemes with a one-line description of each."""
    return dict(_SCHEME_HELP)
