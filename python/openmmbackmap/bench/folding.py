"""Folded or not: the folded-state definition used for chignolin (CLN025) data and benchmarks.

**Definition.** A frame is *folded* when the RMSD of its C-alpha atoms from those of the folded
reference structure, after optimal superposition of the C-alpha atoms, is at most
:data:`FOLDED_CA_RMSD` = 0.2 nm. The folded fraction of a trajectory is the fraction of its
frames that are folded. For CLN025 the reference is the bundled ``chignolin/cln025.pdb``,
which is built to the crystal structure's geometry (PDB 5AWL; see
examples/make_chignolin_structure.py).

Why this one:

- C-alpha RMSD from the folded structure is a standard folding coordinate of chignolin
  simulations, with the fraction of native contacts Q (below).
- It needs only the C-alpha atoms, which every representation in this project has: atomistic
  frames, backmapped frames and coarse-grained C-alpha (``ca`` mapping) frames. A folded
  fraction can thus be compared between a CG simulation, its backmapped trajectory and the
  atomistic reference with one definition.
- It separates the states of our amber99sbildn + OBC runs (HMR, 4 fs) from the bundled
  structure: at 300 K (2 ns) the C-alpha RMSD stays at 0.02-0.09 nm; at 400 K (2 ns) 94 %
  of the frames are below 0.15 nm and 98 % below 0.2 nm (maximum 0.29 nm); at 450 K the
  hairpin unfolds after 0.6 ns and then sits at 0.3-0.6 nm (Q about 0.1). The histogram at
  450 K has its minimum at 0.2-0.25 nm.

Caveat: the cutoff is loose enough to call a near-native hairpin with a different turn
folded. The mutated-ubiquitin hairpin this structure was folded from (another turn type and
no Asp3-Gly7 hydrogen bond) is 0.19 nm away; its Q is 0.48. Where such misfolded hairpins
matter, require a high Q as well, or lower the cutoff (0.15 nm still keeps 94 % of the
400 K native frames).

:func:`native_contacts_fraction` gives the complementary, alignment-free coordinate Q of
Best, Hummer and Eaton (PNAS 2013), defined on the fast-folding-protein simulations of
Lindorff-Larsen et al. (Science 2011), CLN025 among them: contacts are heavy-atom pairs of
residues more than three apart that lie within 0.45 nm in the reference, and Q is the mean
over them of ``1 / (1 + exp(beta * (r - lambda * r0)))`` with beta = 50 /nm and lambda = 1.8.
It needs heavy atoms, so it is for atomistic frames only. Atoms that a symmetry of their group
exchanges (the ring edges of Tyr and Phe, the oxygens of a carboxylate, Arg's NH1/NH2,
:data:`EQUIVALENT_ATOMS`) carry names that chemistry does not fix: a 180-degree ring flip
gives the same molecule with CE1 and CE2 trading places, and a simulation (or a backmapper)
keeps whichever naming it started with. Q therefore takes, frame by frame and residue by
residue, the naming of such atoms that forms more native contacts; without that a folded
chignolin whose Tyr2 ring is named the other way round lost 20 points of folded fraction.

All functions are pure: coordinates (frames, atoms, 3) in nm and a topology in, numbers out.

Examples
--------
>>> import numpy as np
>>> from openmmbackmap import io
>>> topology, folded = io.load_topology(io.bundled("chignolin/cln025.pdb"))
>>> folded_mask(folded[None], topology, folded).tolist()
[True]
>>> round(float(native_contacts_fraction(folded[None], topology, folded)[0]), 3)
1.0
>>> stretched = folded.copy()
>>> stretched[:, 0] *= 3.0                      # pull the strands apart along x
>>> folded_fraction(np.stack([folded, stretched]), topology, folded)
0.5
"""

from __future__ import annotations

import mdtraj
import numpy as np
import openmm.app as app

from openmmbackmap import geometry, io
from openmmbackmap.errors import InputError

__all__ = [
    "FOLDED_CA_RMSD",
    "ca_indices",
    "ca_rmsd",
    "folded_mask",
    "folded_fraction",
    "EQUIVALENT_ATOMS",
    "equivalent_atom_groups",
    "native_contacts",
    "native_contacts_fraction",
]

#: Atom names a symmetry of their group exchanges, per residue name (swapped together); a
#: C-terminal residue's O and OXT are exchanged as well.
EQUIVALENT_ATOMS = {
    "TYR": (("CD1", "CD2"), ("CE1", "CE2"), ("HD1", "HD2"), ("HE1", "HE2")),
    "PHE": (("CD1", "CD2"), ("CE1", "CE2"), ("HD1", "HD2"), ("HE1", "HE2")),
    "ASP": (("OD1", "OD2"),),
    "GLU": (("OE1", "OE2"),),
    "ARG": (("NH1", "NH2"), ("HH11", "HH21"), ("HH12", "HH22")),
}

#: C-alpha RMSD (nm) from the folded reference at or below which a frame counts as folded.
FOLDED_CA_RMSD = 0.2


def _frames(xyz: np.ndarray, n_atoms: int, what: str) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim == 2:
        xyz = xyz[None]
    if xyz.ndim != 3 or xyz.shape[1:] != (n_atoms, 3):
        raise InputError(f"{what} has shape {xyz.shape}; expected (frames, {n_atoms}, 3) for this topology")
    return xyz


def ca_indices(topology: app.Topology | mdtraj.Topology) -> np.ndarray:
    """Indices of the particles named ``CA``: C-alpha atoms, or the beads of a ``ca`` CG mapping.

    Raises
    ------
    InputError
        If there are fewer than three (no RMSD after superposition can tell folded from not).
    """
    top = io.to_mdtraj_topology(topology)
    indices = np.array([atom.index for atom in top.atoms if atom.name == "CA"], dtype=np.int64)
    if len(indices) < 3:
        raise InputError(f"the topology has {len(indices)} particles named CA; at least 3 are needed")
    return indices


def ca_rmsd(
    xyz: np.ndarray, topology: app.Topology | mdtraj.Topology, reference_xyz: np.ndarray
) -> np.ndarray:
    """C-alpha RMSD (nm) of each frame from the reference, after superposing the C-alpha atoms.

    Parameters
    ----------
    xyz
        (frames, atoms, 3) or (atoms, 3), nm.
    topology
        Topology of ``xyz`` and ``reference_xyz`` (OpenMM or mdtraj; atomistic or C-alpha CG).
    reference_xyz
        (atoms, 3) or (1, atoms, 3): the folded structure, nm.

    Returns
    -------
    numpy.ndarray
        (frames,) RMSD in nm; 0 for the reference itself.
    """
    ca = ca_indices(topology)
    n_atoms = io.to_mdtraj_topology(topology).n_atoms
    xyz = _frames(xyz, n_atoms, "xyz")
    reference = _frames(reference_xyz, n_atoms, "reference_xyz")
    if len(reference) != 1:
        raise InputError(f"reference_xyz must be one frame, got {len(reference)}")
    return geometry.aligned_rmsd(xyz[:, ca], reference[:, ca])


def folded_mask(
    xyz: np.ndarray,
    topology: app.Topology | mdtraj.Topology,
    reference_xyz: np.ndarray,
    cutoff: float = FOLDED_CA_RMSD,
) -> np.ndarray:
    """Which frames are folded: C-alpha RMSD from the folded reference at most ``cutoff`` nm.

    Parameters
    ----------
    xyz, topology, reference_xyz
        As for :func:`ca_rmsd`.
    cutoff
        nm; :data:`FOLDED_CA_RMSD` (0.2 nm) by default, the definition used for CLN025.

    Returns
    -------
    numpy.ndarray
        (frames,) booleans.
    """
    return ca_rmsd(xyz, topology, reference_xyz) <= cutoff


def folded_fraction(
    xyz: np.ndarray,
    topology: app.Topology | mdtraj.Topology,
    reference_xyz: np.ndarray,
    cutoff: float = FOLDED_CA_RMSD,
) -> float:
    """Fraction of frames that :func:`folded_mask` calls folded (ideal: the reference data's value).

    Raises
    ------
    InputError
        If ``xyz`` has no frames.
    """
    mask = folded_mask(xyz, topology, reference_xyz, cutoff)
    if mask.size == 0:
        raise InputError("no frames: the folded fraction of an empty trajectory is undefined")
    return float(mask.mean())


def native_contacts(
    topology: app.Topology | mdtraj.Topology,
    reference_xyz: np.ndarray,
    cutoff: float = 0.45,
    min_residue_separation: int = 4,
) -> np.ndarray:
    """Heavy-atom pairs in contact in the reference: (contacts, 2) atom indices.

    Pairs of heavy atoms whose residues are at least ``min_residue_separation`` apart (more
    than three, as Best, Hummer and Eaton) and closer than ``cutoff`` nm in ``reference_xyz``.

    Raises
    ------
    InputError
        If the reference has no such contact (a CG topology without elements, or a chain too
        short or too open to have any).
    """
    top = io.to_mdtraj_topology(topology)
    reference = _frames(reference_xyz, top.n_atoms, "reference_xyz")[:1]
    # particles without an element (CG beads) become mdtraj's "virtual" element: not heavy atoms
    heavy = [a for a in top.atoms if a.element not in (None, mdtraj.element.virtual, mdtraj.element.hydrogen)]
    pairs = np.array(
        [
            (a.index, b.index)
            for k, a in enumerate(heavy)
            for b in heavy[k + 1:]
            if abs(a.residue.index - b.residue.index) >= min_residue_separation
        ],
        dtype=np.int64,
    ).reshape(-1, 2)
    if len(pairs):
        pairs = pairs[geometry.distances(reference, pairs)[0] < cutoff]
    if not len(pairs):
        raise InputError("the reference has no native heavy-atom contacts (heavy atoms with elements needed)")
    return pairs


def equivalent_atom_groups(topology: app.Topology | mdtraj.Topology) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per residue with equivalent atoms (:data:`EQUIVALENT_ATOMS`), the atom indices exchanged: (first, second).

    Examples
    --------
    >>> from openmmbackmap import io
    >>> topology, _ = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    >>> [len(first) for first, _ in equivalent_atom_groups(topology)]   # Tyr1, Tyr2, Asp3, Glu5, Tyr10 (+ O/OXT)
    [4, 4, 1, 1, 5]
    """
    top = io.to_mdtraj_topology(topology)
    groups = []
    for residue in top.residues:
        names = {atom.name: atom.index for atom in residue.atoms}
        pairs = [pair for pair in EQUIVALENT_ATOMS.get(residue.name, ()) if pair[0] in names and pair[1] in names]
        if "OXT" in names and "O" in names:
            pairs.append(("O", "OXT"))
        if pairs:
            groups.append((np.array([names[a] for a, _ in pairs]), np.array([names[b] for _, b in pairs])))
    return groups


def native_contacts_fraction(
    xyz: np.ndarray,
    topology: app.Topology | mdtraj.Topology,
    reference_xyz: np.ndarray,
    beta: float = 50.0,
    lambda_: float = 1.8,
    symmetric: bool = True,
) -> np.ndarray:
    """Fraction of native contacts Q per frame (Best, Hummer and Eaton 2013), between 0 and 1.

    Parameters
    ----------
    xyz, topology, reference_xyz
        As for :func:`ca_rmsd`; the topology must have heavy atoms with elements.
    beta
        Smoothing, 1/nm (5 per angstrom).
    lambda_
        Tolerance factor on the native distance (1.8 for all-atom models).
    symmetric
        Name equivalent atoms (:func:`equivalent_atom_groups`) in each frame, residue by
        residue, the way that forms more native contacts (False: as the frames name them).

    Returns
    -------
    numpy.ndarray
        (frames,) Q; close to 1 for the reference itself (each native contact contributes
        ``1 / (1 + exp(beta * (1 - lambda_) * r0))``, nearly 1), near 0 for an open chain.
    """
    top = io.to_mdtraj_topology(topology)
    xyz = _frames(xyz, top.n_atoms, "xyz")
    reference = _frames(reference_xyz, top.n_atoms, "reference_xyz")[:1]
    pairs = native_contacts(top, reference)
    r0 = geometry.distances(reference, pairs)[0].astype(np.float64)

    def formed(frames: np.ndarray, which: np.ndarray) -> np.ndarray:
        r = geometry.distances(frames, pairs[which]).astype(np.float64)
        return 1.0 / (1.0 + np.exp(beta * (r - lambda_ * r0[which])))

    if symmetric:
        xyz = np.array(xyz, copy=True)
        for first, second in equivalent_atom_groups(top):
            touched = np.isin(pairs, np.concatenate([first, second])).any(axis=1)
            if not touched.any():
                continue
            swapped = xyz.copy()
            swapped[:, first], swapped[:, second] = xyz[:, second], xyz[:, first]
            better = formed(swapped, touched).sum(axis=1) > formed(xyz, touched).sum(axis=1)
            xyz[better] = swapped[better]
    return formed(xyz, np.ones(len(pairs), dtype=bool)).mean(axis=1)
