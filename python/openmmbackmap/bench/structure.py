"""What the metrics need to know about a topology, computed once: bonds, angles, dihedrals,
chiral centres, peptide bonds, rings and bond-graph separations.

Everything here depends on the topology only (never on coordinates), so one
:class:`TopologyFeatures` serves every frame and every candidate scored on that topology.

Examples
--------
>>> from openmmbackmap import io
>>> from openmmbackmap.bench.structure import TopologyFeatures
>>> topology, _ = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
>>> features = TopologyFeatures.from_topology(topology)
>>> len(features.bonds), [features.atom_names[i] for i in features.chiral_centres[0]]
(21, ['CA', 'C', 'CB', 'N'])
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import networkx as nx
import numpy as np
import openmm.app as app
import scipy.sparse
import scipy.sparse.csgraph

#: Residues whose peptide bond to the previous residue may be cis without being an error.
CIS_ALLOWED = frozenset({"PRO", "HYP"})


@dataclass(frozen=True, eq=False)
class TopologyFeatures:
    """Index lists and labels derived from one topology.

    Attributes
    ----------
    topology
        The topology they were derived from.
    atom_names, residue_names, elements
        Per atom; ``residue_names[i]`` is the name of atom i's residue.
    residue_index
        Per atom, the index of its residue.
    heavy
        Per atom, True unless hydrogen.
    bonds
        (n, 2) bonded atom pairs, from the topology.
    angles
        (n, 3) bonded triplets i-j-k (j in the middle).
    dihedrals
        (n, 4) proper dihedrals i-j-k-l along bonds.
    chiral_centres
        (n, 4) rows (centre, a, b, c): atoms with four bonded neighbours whose four branches
        differ (compared as element-labelled graphs), with three of the neighbours, heavy
        atoms first, then by name. The sign of :func:`openmmbackmap.geometry.signed_volumes`
        of a row is the centre's handedness, comparable between files whatever their atom order.
    omegas
        (n, 4) CA(i)-C(i)-N(i+1)-CA(i+1) of every peptide bond.
    omega_residues
        For each omega, the name of residue i+1 (a proline may be cis).
    rings
        Rings of 5 or 6 atoms in the bond graph (aromatic side chains, proline), as index arrays.
    """

    topology: app.Topology
    atom_names: tuple[str, ...]
    residue_names: tuple[str, ...]
    elements: tuple[str, ...]
    residue_index: np.ndarray
    heavy: np.ndarray
    bonds: np.ndarray
    angles: np.ndarray
    dihedrals: np.ndarray
    chiral_centres: np.ndarray
    omegas: np.ndarray
    omega_residues: tuple[str, ...]
    rings: tuple[np.ndarray, ...]

    @classmethod
    def from_topology(cls, topology: app.Topology) -> "TopologyFeatures":
        """Derive every feature from ``topology`` (which must have its bonds)."""
        atoms = list(topology.atoms())
        graph = nx.Graph()
        graph.add_nodes_from(range(len(atoms)))
        bonds = np.array(sorted(sorted((a.index, b.index)) for a, b in topology.bonds()), dtype=np.int64).reshape(-1, 2)
        graph.add_edges_from((int(i), int(j)) for i, j in bonds)
        elements = tuple(a.element.symbol if a.element is not None else "" for a in atoms)
        nx.set_node_attributes(graph, dict(enumerate(elements)), "element")
        return cls(
            topology=topology,
            atom_names=tuple(a.name for a in atoms),
            residue_names=tuple(a.residue.name for a in atoms),
            elements=elements,
            residue_index=np.array([a.residue.index for a in atoms], dtype=np.int64),
            heavy=np.array([e != "H" for e in elements]),
            bonds=bonds,
            angles=_angles(graph),
            dihedrals=_dihedrals(graph, bonds),
            chiral_centres=_chiral_centres(graph, elements, tuple(a.name for a in atoms)),
            omegas=_omegas(topology)[0],
            omega_residues=_omegas(topology)[1],
            rings=_rings(graph),
        )

    def with_chiral_centres_from(self, full: "TopologyFeatures", kept: np.ndarray) -> "TopologyFeatures":
        """These features with the chiral centres of ``full``, the topology they were cut from.

        A topology without hydrogens has no atom with four bonded neighbours, so it would show
        no chiral centre at all; the full topology's centres (heavy neighbours first) are kept
        wherever the centre and its three listed neighbours survive the cut.

        Parameters
        ----------
        full
            Features of the complete topology.
        kept
            For each atom of this topology, its index in the full one.
        """
        position = {int(old): new for new, old in enumerate(np.asarray(kept))}
        rows = [[position[int(i)] for i in row] for row in full.chiral_centres if all(int(i) in position for i in row)]
        return replace(self, chiral_centres=np.array(rows, dtype=np.int64).reshape(-1, 4))

    @property
    def n_atoms(self) -> int:
        return len(self.atom_names)

    @cached_property
    def within_three_bonds(self) -> scipy.sparse.csr_matrix:
        """Boolean sparse (atoms, atoms) matrix: True where two atoms are at most 3 bonds apart (or equal).

        Clash metrics count only pairs *outside* it (non-bonded beyond 1-4). Built from powers
        of the sparse adjacency matrix, so it stays small for large proteins.
        """
        n = self.n_atoms
        adjacency = scipy.sparse.csr_matrix(
            (np.ones(len(self.bonds)), (self.bonds[:, 0], self.bonds[:, 1])), shape=(n, n)
        )
        adjacency = ((adjacency + adjacency.T) > 0).astype(np.int32)
        reach = scipy.sparse.identity(n, dtype=np.int32, format="csr")
        step = reach
        for _ in range(3):
            step = step @ adjacency
            reach = reach + step
        return (reach > 0).tocsr()

    def labels(self, indices: np.ndarray) -> list[str]:
        """A type label for each bond/angle/dihedral row: residue name and atom names, e.g. ``ALA:N-CA-C``.

        Rows of the same label are pooled when distributions are compared; terminal and
        cross-residue terms carry both residue names.
        """
        out = []
        for row in np.asarray(indices).reshape(len(indices), -1):
            residues = list(dict.fromkeys(self.residue_names[i] for i in row))
            out.append("/".join(residues) + ":" + "-".join(self.atom_names[i] for i in row))
        return out


def _rings(graph: nx.Graph) -> tuple[np.ndarray, ...]:
    # Chordless cycles are the rings themselves (an indole gives its 5- and 6-ring, not the 9-cycle).
    cycles = nx.chordless_cycles(graph, length_bound=6)
    return tuple(sorted((np.array(sorted(c)) for c in cycles if len(c) in (5, 6)), key=lambda r: r.tolist()))


def _angles(graph: nx.Graph) -> np.ndarray:
    rows = []
    for centre in graph.nodes:
        neighbours = sorted(graph.neighbors(centre))
        for x in range(len(neighbours)):
            for y in range(x + 1, len(neighbours)):
                rows.append((neighbours[x], centre, neighbours[y]))
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def _dihedrals(graph: nx.Graph, bonds: np.ndarray) -> np.ndarray:
    rows = []
    for j, k in bonds:
        for i in sorted(graph.neighbors(j)):
            if i == k:
                continue
            for l in sorted(graph.neighbors(k)):
                if l != j and l != i:
                    rows.append((i, j, k, l))
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def _branch_signature(graph: nx.Graph, centre: int, neighbour: int, depth: int = 6) -> str:
    """Element-labelled hash of the branch of ``centre`` that starts at ``neighbour``."""
    lengths = nx.single_source_shortest_path_length(graph.subgraph(n for n in graph if n != centre), neighbour, cutoff=depth)
    branch = graph.subgraph(lengths).copy()
    nx.set_node_attributes(branch, {n: f"{graph.nodes[n]['element']}{'*' if n == neighbour else ''}" for n in branch}, "label")
    return nx.weisfeiler_lehman_graph_hash(branch, node_attr="label", iterations=depth)


def _chiral_centres(graph: nx.Graph, elements: tuple[str, ...], names: tuple[str, ...]) -> np.ndarray:
    rows = []
    for centre in graph.nodes:
        neighbours = list(graph.neighbors(centre))
        if len(neighbours) != 4 or elements[centre] in ("H", ""):
            continue
        signatures = [_branch_signature(graph, centre, n) for n in neighbours]
        if len(set(signatures)) < 4:
            continue
        # Heavy neighbours first (they are placed most reliably), then by name, so that the sign
        # means the same handedness in any file whatever its atom order.
        neighbours.sort(key=lambda n: (elements[n] == "H", names[n], n))
        rows.append((centre, *neighbours[:3]))
    return np.array(sorted(rows), dtype=np.int64).reshape(-1, 4)


def _omegas(topology: app.Topology) -> tuple[np.ndarray, tuple[str, ...]]:
    rows, names = [], []
    for a, b in topology.bonds():
        if a.name == "N" and b.name == "C":
            a, b = b, a
        if not (a.name == "C" and b.name == "N") or a.residue is b.residue:
            continue
        ca_before = next((x for x in a.residue.atoms() if x.name in ("CA", "CH3")), None)
        ca_after = next((x for x in b.residue.atoms() if x.name in ("CA", "CH3", "C") and x is not b), None)
        if ca_before is None or ca_after is None:
            continue
        rows.append((ca_before.index, a.index, b.index, ca_after.index))
        names.append(b.residue.name)
    order = np.argsort([r[1] for r in rows]) if rows else []
    return (np.array([rows[i] for i in order], dtype=np.int64).reshape(-1, 4), tuple(names[i] for i in order))
