"""Structural validity of backmapped frames: bonds, clashes and stereochemistry.

Every function takes coordinates in nm, shape (frames, atoms, 3) (a single (atoms, 3) structure
is read as one frame), and the :class:`~openmmbackmap.bench.structure.TopologyFeatures` of the
topology they share with the reference. Scores are averaged over frames, so trajectories of any
length compare; the clash and stereochemistry counts take any coordinates, so the same number
is reported for the reference itself (a crystal structure has a few clashes of its own).

Tables and thresholds
---------------------
- Covalent radii (:data:`COVALENT_RADII_NM`): Cordero et al., *Dalton Trans.* 2008, 2832
  (the source mdtraj uses; carbon is the sp3 value). Two atoms are bonded by distance when
  closer than 1.2 x the sum of their radii (:data:`BOND_FACTOR`).
- Van der Waals radii (:data:`VDW_RADII_NM`): Bondi, *J. Phys. Chem.* 1964, 68, 441.
- Elements absent from a table (metal ions, virtual sites) are left out of the metrics that
  use it: a metal ion's coordination distances are neither covalent bonds nor clashes.
- Clashes count heavy atoms only (hydrogens are placed least reliably and many tools write
  none), in pairs more than three bonds apart.

Examples
--------
>>> from openmmbackmap import io
>>> from openmmbackmap.bench.structure import TopologyFeatures
>>> topology, positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
>>> features = TopologyFeatures.from_topology(topology)
>>> bond_score(positions, positions, features), graph_edit_ratio(positions, features)
(1.0, 0.0)
>>> chirality_errors(positions, positions, features)["total"], cis_peptides(positions, features)["total"]
(0, 0)
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from openmmbackmap import geometry
from openmmbackmap.bench.structure import CIS_ALLOWED, TopologyFeatures

#: Covalent radii in nm (Cordero et al. 2008; C is sp3). Elements not listed are never bonded by distance.
COVALENT_RADII_NM = {
    "H": 0.031, "C": 0.076, "N": 0.071, "O": 0.066, "F": 0.057, "P": 0.107, "S": 0.105,
    "Cl": 0.102, "Se": 0.120, "Br": 0.120, "I": 0.139,
}
#: A pair is bonded by distance when closer than this times the sum of covalent radii.
BOND_FACTOR = 1.2
#: Van der Waals radii in nm (Bondi 1964). Elements not listed take no part in clash counts.
VDW_RADII_NM = {
    "H": 0.120, "C": 0.170, "N": 0.155, "O": 0.152, "F": 0.147, "P": 0.180, "S": 0.180,
    "Cl": 0.175, "Se": 0.190, "Br": 0.185, "I": 0.198,
}
#: Bonds at most this long (nm) are found near rings by a neighbour search; longer ones
#: (only in broken frames) are tested against every ring, so no piercing is ever missed.
_SHORT_BOND_NM = 0.4


def _frames(xyz: np.ndarray, features: TopologyFeatures) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim == 2:
        xyz = xyz[None]
    if xyz.ndim != 3 or xyz.shape[1:] != (features.n_atoms, 3):
        raise ValueError(
            f"coordinates of shape {xyz.shape} do not fit {features.n_atoms} atoms: expected (frames, {features.n_atoms}, 3)"
        )
    return xyz


def _radii(features: TopologyFeatures, table: dict[str, float]) -> np.ndarray:
    """Per-atom radius from ``table``, NaN for elements not in it."""
    return np.array([table.get(e, np.nan) for e in features.elements])


def _atom_labels(features: TopologyFeatures, atoms: np.ndarray) -> list[str]:
    """``"RES id:ATOM"`` for each atom, with the residue name and id of the topology."""
    residues = list(features.topology.residues())
    labels = []
    for atom in atoms:
        residue = residues[features.residue_index[atom]]
        labels.append(f"{residue.name} {residue.id}:{features.atom_names[atom]}")
    return labels


# ----------------------------------------------------------------------------------------------
# Bonds
# ----------------------------------------------------------------------------------------------


def _bond_errors(candidate: np.ndarray, reference: np.ndarray, features: TopologyFeatures) -> np.ndarray:
    """Relative deviation |d - d_ref| / d_ref, shape (frames, bonds)."""
    candidate = _frames(candidate, features)
    reference = _frames(reference, features)
    ideal = geometry.distances(reference, features.bonds).mean(axis=0)
    return np.abs(geometry.distances(candidate, features.bonds) - ideal) / ideal


def bond_score(candidate: np.ndarray, reference: np.ndarray, features: TopologyFeatures, tolerance: float = 0.1) -> float:
    """Fraction of (frame, bond) pairs whose length is within ``tolerance`` of the reference length.

    Parameters
    ----------
    candidate, reference
        Coordinates in nm, (frames, atoms, 3). Each bond's reference length is its mean over
        the reference frames.
    features
        The shared topology's features; its bonds are scored.
    tolerance
        Relative tolerance: a bond passes when ``|d - d_ref| <= tolerance * d_ref``
        (0.1 = within 10 %).

    Returns
    -------
    float
        In [0, 1]; ideal 1. NaN for a topology without bonds.
    """
    errors = _bond_errors(candidate, reference, features)
    return float(np.mean(errors <= tolerance)) if errors.size else float("nan")


def bond_score_auc(
    candidate: np.ndarray, reference: np.ndarray, features: TopologyFeatures, max_tolerance: float = 0.2
) -> float:
    """Area under :func:`bond_score` as a function of tolerance on [0, ``max_tolerance``], normalised to [0, 1].

    The integral is exact, not sampled on a grid: :func:`bond_score` is a step function of the
    tolerance (the empirical distribution of the relative errors e), and its normalised area
    is ``mean(max(0, 1 - e / max_tolerance))``, which is the limit of the mean of
    ``bond_score(tolerance)`` over an ever finer uniform grid on [0, ``max_tolerance``]. It
    rewards bonds that are close to the reference length, not only within a threshold.

    Parameters
    ----------
    candidate, reference
        Coordinates in nm, (frames, atoms, 3).
    features
        The shared topology's features.
    max_tolerance
        Upper end of the relative tolerance range (0.2 = 20 %).

    Returns
    -------
    float
        In [0, 1]; ideal 1 (every bond exactly at its reference length). A reference scored
        against itself comes close to 1 but not to 1: its bonds vibrate about their mean.
    """
    errors = _bond_errors(candidate, reference, features)
    if not errors.size:
        return float("nan")
    return float(np.mean(np.clip(1.0 - errors / max_tolerance, 0.0, 1.0)))


def graph_edit_ratio(candidate: np.ndarray, features: TopologyFeatures) -> float:
    """How far the bond graph read off the distances is from the topology's: (missing + extra) / bonds.

    In each frame two atoms are bonded when their distance is below ``BOND_FACTOR`` (1.2) x the
    sum of their covalent radii (:data:`COVALENT_RADII_NM`, Cordero 2008). A topology bond that
    is not found is *missing*; a pair found that is not a topology bond is *extra*. Pairs are
    searched with a k-d tree, so large systems scale. Atoms of elements without a covalent
    radius (ions, virtual sites) and their bonds are left out.

    Parameters
    ----------
    candidate
        Coordinates in nm, (frames, atoms, 3).
    features
        Its topology's features.

    Returns
    -------
    float
        Mean over frames of (missing + extra) / number of topology bonds; ideal 0. NaN for a
        topology without bonds.
    """
    xyz = _frames(candidate, features)
    radii = _radii(features, COVALENT_RADII_NM)
    known = np.flatnonzero(~np.isnan(radii))
    bonds = features.bonds[~np.isnan(radii[features.bonds]).any(axis=1)]
    if not len(bonds):
        return float("nan")
    bond_cutoff = BOND_FACTOR * radii[bonds].sum(axis=1)
    # A topology bond is found exactly when it is shorter than its cutoff; then every found pair
    # that is not a found topology bond is extra: extra = found - (bonds - missing).
    missing = (geometry.distances(xyz, bonds) >= bond_cutoff).sum(axis=1)
    known_radii = radii[known]
    search = BOND_FACTOR * 2.0 * known_radii.max()
    found = np.empty(len(xyz), dtype=np.int64)
    for f, frame in enumerate(xyz[:, known]):
        pairs = cKDTree(frame).query_pairs(search, output_type="ndarray")
        d = np.linalg.norm(frame[pairs[:, 0]] - frame[pairs[:, 1]], axis=1)
        found[f] = np.count_nonzero(d < BOND_FACTOR * (known_radii[pairs[:, 0]] + known_radii[pairs[:, 1]]))
    extra = found - (len(bonds) - missing)
    return float(np.mean((missing + extra) / len(bonds)))


# ----------------------------------------------------------------------------------------------
# Clashes
# ----------------------------------------------------------------------------------------------


def _clash_atoms(features: TopologyFeatures) -> np.ndarray:
    """Heavy atoms with a van der Waals radius: the atoms clash metrics look at."""
    return np.flatnonzero(features.heavy & ~np.isnan(_radii(features, VDW_RADII_NM)))


def _nonbonded_contacts(
    xyz: np.ndarray, features: TopologyFeatures, atoms: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (frame, i, j, distance) with i < j among ``atoms`` closer than ``cutoff`` nm and more than three bonds apart.

    One k-d tree per frame finds the close pairs; the pairs within three bonds are removed in
    one vectorised look-up of sorted pair keys.
    """
    n = features.n_atoms
    frames, firsts, seconds = [], [], []
    for f, frame in enumerate(xyz[:, atoms]):
        pairs = cKDTree(frame).query_pairs(cutoff, output_type="ndarray")
        frames.append(np.full(len(pairs), f, dtype=np.int64))
        firsts.append(pairs[:, 0])
        seconds.append(pairs[:, 1])
    frame_of = np.concatenate(frames) if frames else np.empty(0, dtype=np.int64)
    i = atoms[np.concatenate(firsts)] if firsts else np.empty(0, dtype=np.int64)
    j = atoms[np.concatenate(seconds)] if seconds else np.empty(0, dtype=np.int64)
    i, j = np.minimum(i, j), np.maximum(i, j)
    near = features.within_three_bonds.tocoo()
    excluded = np.unique(near.row.astype(np.int64) * n + near.col)
    keys = i * n + j
    position = np.clip(np.searchsorted(excluded, keys), 0, max(len(excluded) - 1, 0))
    keep = excluded[position] != keys if len(excluded) else np.ones(len(keys), dtype=bool)
    frame_of, i, j = frame_of[keep], i[keep], j[keep]
    distance = np.linalg.norm(xyz[frame_of, i] - xyz[frame_of, j], axis=1)
    inside = distance < cutoff
    return frame_of[inside], i[inside], j[inside], distance[inside]


def severe_clash_percentage(xyz: np.ndarray, features: TopologyFeatures, cutoff_nm: float = 0.12) -> float:
    """Percentage of residues with at least one severe clash, mean over frames.

    A severe clash is a pair of heavy atoms more than three bonds apart (outside
    ``features.within_three_bonds``) closer than ``cutoff_nm`` (1.2 A: no two such atoms are
    ever that close in a physical structure). Both residues of the pair count (once per frame
    however many clashes they have).

    Parameters
    ----------
    xyz
        Coordinates in nm, (frames, atoms, 3): a candidate or the reference.
    features
        Its topology's features.
    cutoff_nm
        Distance below which a pair is a severe clash, nm.

    Returns
    -------
    float
        Percentage (0 to 100) of the residues that have heavy atoms; ideal 0. NaN without
        heavy atoms.
    """
    xyz = _frames(xyz, features)
    atoms = _clash_atoms(features)
    n_residues = len(np.unique(features.residue_index[atoms]))
    if not n_residues:
        return float("nan")
    frame_of, i, j, _ = _nonbonded_contacts(xyz, features, atoms, cutoff_nm)
    n_res_total = int(features.residue_index.max()) + 1
    keys = frame_of * n_res_total
    keys = np.concatenate([keys + features.residue_index[i], keys + features.residue_index[j]])
    return float(100.0 * len(np.unique(keys)) / (len(xyz) * n_residues))


def clashscore(xyz: np.ndarray, features: TopologyFeatures, overlap_nm: float = 0.04) -> float:
    """MolProbity-like clashscore on heavy atoms: serious overlaps per 1,000 atoms, mean over frames.

    A pair of heavy atoms more than three bonds apart clashes when its van der Waals overlap,
    ``r_i + r_j - distance`` with Bondi radii (:data:`VDW_RADII_NM`: C 1.70, N 1.55, O 1.52,
    S 1.80 A), is at least ``overlap_nm`` (MolProbity's 0.4 A). Unlike MolProbity no
    hydrogens are added and hydrogen bonds get no allowance, so well-refined structures score
    above zero (crystal 1MJ5: 10, mostly O(i)...C(i+1) contacts and N/O hydrogen bonds at
    2.5-2.8 A): compare a candidate with its reference, not with MolProbity's scale.

    Parameters
    ----------
    xyz
        Coordinates in nm, (frames, atoms, 3): a candidate or the reference.
    features
        Its topology's features.
    overlap_nm
        Smallest overlap that counts as a clash, nm.

    Returns
    -------
    float
        Clashing pairs per 1,000 heavy atoms (the atoms scored, so the number does not depend on
        whether a tool writes hydrogens), mean over frames; ideal 0. NaN without heavy atoms.
    """
    xyz = _frames(xyz, features)
    atoms = _clash_atoms(features)
    radii = _radii(features, VDW_RADII_NM)
    if not len(atoms):
        return float("nan")
    cutoff = 2.0 * radii[atoms].max() - overlap_nm
    if cutoff <= 0.0:
        return 0.0
    _, i, j, distance = _nonbonded_contacts(xyz, features, atoms, cutoff)
    clashes = np.count_nonzero(radii[i] + radii[j] - distance >= overlap_nm)
    return float(1000.0 * clashes / (len(xyz) * len(atoms)))


# ----------------------------------------------------------------------------------------------
# Stereochemistry
# ----------------------------------------------------------------------------------------------


def chirality_errors(candidate: np.ndarray, reference: np.ndarray, features: TopologyFeatures) -> dict:
    """Chiral centres whose handedness differs from the reference's.

    Handedness is the sign of :func:`openmmbackmap.geometry.signed_volumes` of each row of
    ``features.chiral_centres`` (CA of every amino acid but glycine, CB of THR and ILE, ...).
    The reference handedness is the majority sign over the reference frames; a candidate
    centre with the other sign, or a flat one (volume exactly 0), is an error.

    Parameters
    ----------
    candidate, reference
        Coordinates in nm, (frames, atoms, 3).
    features
        The shared topology's features.

    Returns
    -------
    dict
        ``per_frame_mean``: wrong centres per candidate frame (ideal 0);
        ``frames_with_error``: fraction of frames with at least one (ideal 0);
        ``total``: wrong (frame, centre) pairs; ``by_centre``: labels ``"RES id:ATOM"``
        (residue name and id from the topology) of the centres wrong in any frame, in
        topology order (ideal empty).
    """
    candidate = _frames(candidate, features)
    reference = _frames(reference, features)
    centres = features.chiral_centres
    if not len(centres):
        return {"per_frame_mean": 0.0, "frames_with_error": 0.0, "total": 0, "by_centre": []}
    reference_volumes = geometry.signed_volumes(reference, centres)
    handedness = np.sign(np.sign(reference_volumes).sum(axis=0))
    tied = handedness == 0
    handedness[tied] = np.sign(reference_volumes[:, tied].mean(axis=0))
    wrong = np.sign(geometry.signed_volumes(candidate, centres)) != handedness
    return {
        "per_frame_mean": float(wrong.sum(axis=1).mean()),
        "frames_with_error": float(wrong.any(axis=1).mean()),
        "total": int(wrong.sum()),
        "by_centre": _atom_labels(features, centres[wrong.any(axis=0), 0]),
    }


def cis_peptides(xyz: np.ndarray, features: TopologyFeatures) -> dict:
    """Cis peptide bonds: omega (CA-C-N-CA, ``features.omegas``) with |omega| < 90 degrees.

    A cis bond before a proline (``structure.CIS_ALLOWED``: the residue after the bond is PRO
    or HYP) occurs in native proteins (about 5 % of them) and is counted apart, not as an error.

    Parameters
    ----------
    xyz
        Coordinates in nm, (frames, atoms, 3): a candidate or the reference.
    features
        Its topology's features.

    Returns
    -------
    dict
        ``per_frame_mean`` and ``total``: non-proline cis bonds per frame and over all frames
        (ideal 0); ``frames_with_error``: fraction of frames with one; ``proline_per_frame_mean``
        and ``proline_total``: the same for cis bonds before a proline (compare with the
        reference).
    """
    xyz = _frames(xyz, features)
    cis = np.abs(geometry.dihedrals(xyz, features.omegas)) < np.pi / 2
    proline = np.array([name in CIS_ALLOWED for name in features.omega_residues], dtype=bool)
    errors = cis[:, ~proline]
    return {
        "per_frame_mean": float(errors.sum(axis=1).mean()),
        "frames_with_error": float(errors.any(axis=1).mean()),
        "total": int(errors.sum()),
        "proline_per_frame_mean": float(cis[:, proline].sum(axis=1).mean()),
        "proline_total": int(cis[:, proline].sum()),
    }


def _ring_cycles(features: TopologyFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Ring atoms in cyclic order, padded to 6 with -1: (rings, 6) indices and a (rings, 6) validity mask."""
    neighbours: dict[int, set[int]] = {}
    for a, b in features.bonds:
        neighbours.setdefault(int(a), set()).add(int(b))
        neighbours.setdefault(int(b), set()).add(int(a))
    cycles = np.full((len(features.rings), 6), -1, dtype=np.int64)
    for r, ring in enumerate(features.rings):
        members = set(ring.tolist())
        order = [int(ring[0])]
        while len(order) < len(ring):
            step = sorted((neighbours[order[-1]] & members) - set(order))
            order.append(step[0])
        cycles[r, : len(order)] = order
    return cycles, cycles >= 0


def _segments_cross_triangles(
    start: np.ndarray, end: np.ndarray, v0: np.ndarray, v1: np.ndarray, v2: np.ndarray, tolerance: float = 1e-9
) -> np.ndarray:
    """Moller-Trumbore: does each segment start-end cross its triangle v0-v1-v2? Broadcasting arrays (..., 3)."""
    direction = end - start
    e1, e2 = v1 - v0, v2 - v0
    h = np.cross(direction, e2)
    a = (e1 * h).sum(-1)
    parallel = np.abs(a) < 1e-15
    inverse = 1.0 / np.where(parallel, 1.0, a)
    s = start - v0
    u = inverse * (s * h).sum(-1)
    q = np.cross(s, e1)
    v = inverse * (direction * q).sum(-1)
    t = inverse * (e2 * q).sum(-1)
    return ~parallel & (u >= -tolerance) & (v >= -tolerance) & (u + v <= 1.0 + tolerance) & (t >= 0.0) & (t <= 1.0)


def ring_piercing(xyz: np.ndarray, features: TopologyFeatures) -> dict:
    """Bonds that pass through a 5- or 6-membered ring (aromatic side chains, proline): "lassoed" rings.

    Each ring of ``features.rings`` is triangulated as a fan around its centroid (one
    triangle per ring bond, so a puckered proline ring gets a well-defined surface), and each
    topology bond not containing an atom of that ring is tested for crossing a triangle
    (Moller-Trumbore segment-triangle intersection). Only bonds that can reach the ring are
    tested: for bonds up to 0.4 nm long, those whose midpoint lies within the ring's
    circumradius + 0.2 nm of its centroid (k-d tree per frame); longer (broken) bonds are
    tested against every ring, so the search never misses a crossing.

    Parameters
    ----------
    xyz
        Coordinates in nm, (frames, atoms, 3): a candidate or the reference.
    features
        Its topology's features.

    Returns
    -------
    dict
        ``per_frame_mean`` and ``total``: (frame, ring, bond) crossings per frame and over all
        frames (a bond crossing two triangles of one ring counts once); ideal 0.
        ``frames_with_error``: fraction of frames with one.
    """
    xyz = _frames(xyz, features)
    n_frames = len(xyz)
    if not features.rings or not len(features.bonds):
        return {"per_frame_mean": 0.0, "frames_with_error": 0.0, "total": 0}
    cycles, valid = _ring_cycles(features)
    sizes = valid.sum(axis=1)
    following = np.where(np.arange(6)[None] + 1 < sizes[:, None], np.roll(cycles, -1, axis=1), cycles[:, :1])
    bonds = features.bonds

    # Candidate (frame, ring, bond) triples.
    frame_list, ring_list, bond_list = [], [], []
    n_rings = len(cycles)
    search = 0.5 * _SHORT_BOND_NM
    for f, frame in enumerate(xyz):
        ring_xyz = frame[cycles]
        centroids = (ring_xyz * valid[..., None]).sum(axis=1) / sizes[:, None]
        circumradius = np.where(valid, np.linalg.norm(ring_xyz - centroids[:, None], axis=-1), 0.0).max()
        starts, ends = frame[bonds[:, 0]], frame[bonds[:, 1]]
        half = 0.5 * np.linalg.norm(ends - starts, axis=1)
        short = np.flatnonzero(half <= search)
        near = cKDTree(0.5 * (starts + ends)[short]).query_ball_point(centroids, circumradius + search)
        rings_f = [np.full(len(h), r, dtype=np.int64) for r, h in enumerate(near)]
        bonds_f = [short[np.asarray(h, dtype=np.int64)] for h in near]
        long_bonds = np.flatnonzero(half > search)
        if len(long_bonds):
            rings_f.append(np.repeat(np.arange(n_rings), len(long_bonds)))
            bonds_f.append(np.tile(long_bonds, n_rings))
        ring_list.extend(rings_f)
        bond_list.extend(bonds_f)
        frame_list.append(np.full(sum(len(b) for b in bonds_f), f, dtype=np.int64))
    frame_of = np.concatenate(frame_list)
    ring_of = np.concatenate(ring_list)
    bond_of = np.concatenate(bond_list)
    # A bond sharing an atom with the ring (its own bonds, substituents) cannot pierce it.
    shares = (cycles[ring_of][:, :, None] == bonds[bond_of][:, None, :]).any(axis=(1, 2))
    frame_of, ring_of, bond_of = frame_of[~shares], ring_of[~shares], bond_of[~shares]

    pierced = np.zeros(len(frame_of), dtype=bool)
    chunk = 100_000
    for lo in range(0, len(frame_of), chunk):
        f, r, b = frame_of[lo : lo + chunk], ring_of[lo : lo + chunk], bond_of[lo : lo + chunk]
        ring_xyz = xyz[f[:, None], cycles[r]]
        mask = valid[r]
        centroids = (ring_xyz * mask[..., None]).sum(axis=1) / sizes[r][:, None]
        start = xyz[f, bonds[b, 0]][:, None]
        end = xyz[f, bonds[b, 1]][:, None]
        crosses = _segments_cross_triangles(start, end, centroids[:, None], ring_xyz, xyz[f[:, None], following[r]])
        pierced[lo : lo + chunk] = (crosses & mask).any(axis=1)
    per_frame = np.bincount(frame_of[pierced], minlength=n_frames)
    return {
        "per_frame_mean": float(per_frame.mean()),
        "frames_with_error": float((per_frame > 0).mean()),
        "total": int(per_frame.sum()),
    }
