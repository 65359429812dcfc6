"""Distribution metrics: does a backmapped ensemble have the reference's internal-coordinate,
Ramachandran and side-chain rotamer distributions?

These metrics compare *ensembles*, not frames: the order of frames does not matter and the
candidate and reference may have different numbers of frames. (Frame-by-frame accuracy is in
:mod:`openmmbackmap.bench.accuracy`.) Every distribution is a histogram on fixed bins (module
constants below), so numbers are comparable between models, runs and papers, and two
histograms are compared by their Jensen-Shannon divergence in bits: 0 for identical
histograms, 1 for histograms with disjoint support.

Sampling noise gives a floor: two halves of the same reference run do not reach 0. On the
bundled 1 ns alanine-dipeptide run (first vs second 500 frames; ``tests/bench/test_distributions.py``)
the mean JSD over types is 0.007 bits for bonds, 0.018 for angles, 0.042 for dihedrals, and
0.19 bits for the 36 x 36 Ramachandran map (1296 bins for 500 frames: a 2-D map needs far more
frames than a 1-D histogram), and basin populations differ by 3 percentage points. A
candidate is only distinguishable from the reference above such a floor, so report the floor
of the reference at the candidate's frame count next to the candidate's score.

Examples
--------
>>> import numpy as np
>>> jensen_shannon(np.array([0.1, 0.1]), np.array([0.1, 0.1]), BOND_BINS)
0.0
>>> jensen_shannon(np.array([0.10]), np.array([0.15]), BOND_BINS)
1.0
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import mdtraj
import numpy as np
import openmm.app as app

from openmmbackmap import geometry
from openmmbackmap.bench.structure import TopologyFeatures

#: Bond-length bin edges, nm: 0.08 to 0.24 nm in 0.001 nm bins (160 bins). The range covers
#: every covalent bond in biomolecules, from O-H (0.096 nm) and C-H (0.109 nm) to S-S
#: (0.204 nm); 0.001 nm is about a third of the thermal spread of a flexible C-C bond at
#: 300 K (about 0.003 nm) and the precision of an XTC file. Lengths outside the range are
#: counted in the first or last bin, so a broken bond still counts as different.
BOND_BINS = np.linspace(0.08, 0.24, 161)
#: Bond-angle bin edges, degrees: 0 to 180 in 1 degree bins.
ANGLE_BINS = np.linspace(0.0, 180.0, 181)
#: Dihedral bin edges, degrees: -180 to 180 in 5 degree bins (72 bins). The bins tile the
#: circle exactly (their outer edges are the same angle), so the histogram is periodic.
DIHEDRAL_BINS = np.linspace(-180.0, 180.0, 73)
#: Ramachandran (phi, psi) bin edges, degrees: a 36 x 36 map of 10 degree bins, periodic in both.
RAMACHANDRAN_BINS = (np.linspace(-180.0, 180.0, 37), np.linspace(-180.0, 180.0, 37))
#: Side-chain chi bin edges, degrees: as :data:`DIHEDRAL_BINS`.
CHI_BINS = DIHEDRAL_BINS

#: Ramachandran basins, in the order of the per-residue populations: the ABEGO torsion bins of
#: Koga et al. (Nature 491, 222 (2012)) at their coarsest level, with G and E (phi >= 0)
#: merged into alpha_L. Definition in :func:`basin_populations`.
BASINS = ("beta", "alpha_R", "alpha_L")

#: Values histogrammed per block of frames, to bound memory on large systems.
_BLOCK_VALUES = 4_000_000


# -- Jensen-Shannon divergence ----------------------------------------------------------------


def _bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value; values outside the edges go to the first/last bin, the last edge is inside."""
    index = np.searchsorted(edges, values, side="right") - 1
    return np.clip(index, 0, len(edges) - 2)


def _jsd_from_counts(p_counts: np.ndarray, q_counts: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (bits) between histograms along the last axis; NaN where one is empty."""
    p_counts = np.asarray(p_counts, dtype=np.float64)
    q_counts = np.asarray(q_counts, dtype=np.float64)
    p_total = p_counts.sum(-1, keepdims=True)
    q_total = q_counts.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = p_counts / p_total
        q = q_counts / q_total
        m = 0.5 * (p + q)
        # 0 log 0 = 0; wherever p > 0, m >= p/2 > 0, so every logarithm is finite.
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(-1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(-1)
    jsd = np.clip(0.5 * (kl_p + kl_q), 0.0, 1.0)
    empty = (p_total[..., 0] == 0) | (q_total[..., 0] == 0)
    return np.where(empty, np.nan, jsd)


def jensen_shannon(
    p_samples: np.ndarray,
    q_samples: np.ndarray,
    bins: np.ndarray | Sequence[np.ndarray],
) -> float:
    """Jensen-Shannon divergence between two sample sets histogrammed on the same fixed bins.

    ``JSD(P, Q) = (KL(P || M) + KL(Q || M)) / 2`` with ``M = (P + Q) / 2`` and base-2
    logarithms, so the value is in bits and lies in [0, 1].

    No pseudo-count is added: a bin empty in one histogram but not the other is still finite
    in both KL terms because ``M`` is non-zero there (empty bins in P contribute ``0 log 0 = 0``).
    Without pseudo-counts identical histograms give exactly 0 and disjoint ones exactly 1, and
    the value does not depend on the number of bins that happen to be empty.

    Parameters
    ----------
    p_samples, q_samples
        Samples, shape (n,) for a 1-D histogram or (n, d) for a d-dimensional one (for
        example (frames, 2) phi/psi pairs). The two sets may have different sizes. Units must
        match ``bins``.
    bins
        Bin edges: one array for 1-D samples, a sequence of d arrays for (n, d) samples.
        Samples outside the edges are counted in the outermost bins (so none is lost), the
        last edge belongs to the last bin.

    Returns
    -------
    float
        JSD in bits. Ideal value 0 (same histogram); 1 means no bin in common. NaN when either
        sample set is empty.
    """
    p_samples = np.asarray(p_samples, dtype=np.float64)
    q_samples = np.asarray(q_samples, dtype=np.float64)
    if p_samples.ndim == 1:
        edges = [np.asarray(bins, dtype=np.float64)]
        p_samples, q_samples = p_samples.reshape(-1, 1), q_samples.reshape(-1, 1)
    else:
        edges = [np.asarray(b, dtype=np.float64) for b in bins]
        p_samples = p_samples.reshape(-1, len(edges))
        q_samples = q_samples.reshape(-1, len(edges))
    if any(e.ndim != 1 or len(e) < 2 or np.any(np.diff(e) <= 0) for e in edges):
        raise ValueError("bins must be increasing 1-D edge arrays, one per sample dimension")
    if not (np.isfinite(p_samples).all() and np.isfinite(q_samples).all()):
        raise ValueError("samples contain NaN or infinite values")
    shape = tuple(len(e) - 1 for e in edges)

    def counts(samples: np.ndarray) -> np.ndarray:
        index = tuple(_bin_index(samples[:, k], e) for k, e in enumerate(edges))
        return np.bincount(np.ravel_multi_index(index, shape), minlength=int(np.prod(shape)))

    return float(_jsd_from_counts(counts(p_samples), counts(q_samples)))


def _grouped_counts(
    xyz: np.ndarray,
    values: Callable[[np.ndarray], np.ndarray],
    group: np.ndarray,
    n_groups: int,
    n_bins: int,
) -> np.ndarray:
    """Histogram counts (n_groups, n_bins) of bin indices ``values(block)`` (frames, terms), pooled by ``group`` (terms,).

    Frames are processed in blocks, in float64 (so float32 and float64 copies of the same
    coordinates fall in the same bins), so that large systems need bounded memory.
    """
    counts = np.zeros(n_groups * n_bins, dtype=np.int64)
    block = max(1, _BLOCK_VALUES // max(1, len(group)))
    offset = np.asarray(group, dtype=np.int64) * n_bins
    for start in range(0, len(xyz), block):
        index = values(np.asarray(xyz[start : start + block], dtype=np.float64))
        counts += np.bincount((offset[None, :] + index).ravel(), minlength=n_groups * n_bins)
    return counts.reshape(n_groups, n_bins)


def _labelled_jsd(
    candidate: np.ndarray,
    reference: np.ndarray,
    labels: Sequence[str],
    binned: Callable[[np.ndarray], np.ndarray],
    n_bins: int,
) -> dict[str, float]:
    """JSD per label of the binned values of the terms, pooled over terms of the same label."""
    names, group = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    if len(names) == 0:
        return {}
    p = _grouped_counts(candidate, binned, group, len(names), n_bins)
    q = _grouped_counts(reference, binned, group, len(names), n_bins)
    return {str(name): float(value) for name, value in zip(names, _jsd_from_counts(p, q))}


def _mean(values: dict[str, float]) -> float:
    return float(np.mean(list(values.values()))) if values else float("nan")


def _check_pair(candidate: np.ndarray, reference: np.ndarray, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    candidate = np.asarray(candidate)
    reference = np.asarray(reference)
    for name, xyz in (("candidate", candidate), ("reference", reference)):
        if xyz.ndim != 3 or xyz.shape[1:] != (n_atoms, 3):
            raise ValueError(f"{name} has shape {xyz.shape}, expected (frames, {n_atoms}, 3)")
    return candidate, reference


# -- internal coordinates ---------------------------------------------------------------------


def internal_coordinate_jsd(
    candidate: np.ndarray,
    reference: np.ndarray,
    features: TopologyFeatures,
) -> dict[str, dict[str, float] | float]:
    """JSD between candidate and reference distributions of every bond, angle and dihedral type.

    Terms are pooled by type, :meth:`TopologyFeatures.labels` (e.g. every ``ALA:N-CA`` bond of a
    protein forms one distribution), and each type's candidate histogram is compared with the
    reference's on :data:`BOND_BINS` (nm), :data:`ANGLE_BINS` (degrees) or
    :data:`DIHEDRAL_BINS` (degrees, periodic).

    Parameters
    ----------
    candidate, reference
        Coordinates (frames, atoms, 3) in nm, on the topology of ``features``; the frame counts
        may differ (only distributions are compared).
    features
        Topology features of the shared topology.

    Returns
    -------
    dict
        ``"bonds"``, ``"angles"``, ``"dihedrals"``: {type label: JSD in bits};
        ``"mean_bonds"``, ``"mean_angles"``, ``"mean_dihedrals"``: the unweighted mean over
        types (each type counts once however many terms it pools, so a rare residue's
        geometry weighs as much as a common one's); NaN if there is no term of that kind.
        Ideal value 0 everywhere; compare with the sampling floor of the reference (module
        docstring).
    """
    candidate, reference = _check_pair(candidate, reference, features.n_atoms)
    bonds = _labelled_jsd(
        candidate, reference, features.labels(features.bonds),
        lambda x: _bin_index(geometry.distances(x, features.bonds), BOND_BINS), len(BOND_BINS) - 1,
    )
    angles = _labelled_jsd(
        candidate, reference, features.labels(features.angles),
        lambda x: _bin_index(np.degrees(geometry.angles(x, features.angles)), ANGLE_BINS), len(ANGLE_BINS) - 1,
    )
    dihedrals = _labelled_jsd(
        candidate, reference, features.labels(features.dihedrals),
        lambda x: _bin_index(np.degrees(geometry.dihedrals(x, features.dihedrals)), DIHEDRAL_BINS),
        len(DIHEDRAL_BINS) - 1,
    )
    return {
        "bonds": bonds,
        "angles": angles,
        "dihedrals": dihedrals,
        "mean_bonds": _mean(bonds),
        "mean_angles": _mean(angles),
        "mean_dihedrals": _mean(dihedrals),
    }


# -- backbone: Ramachandran -------------------------------------------------------------------


class Ramachandran(NamedTuple):
    """Backbone dihedrals of every residue that has both.

    Attributes
    ----------
    residues
        Residue labels, name and PDB number (``ALA2``; ``A:ALA2`` when there are several chains).
    residue_indices
        Topology index of each residue.
    phi, psi
        (frames, residues) in degrees, in (-180, 180].
    """

    residues: tuple[str, ...]
    residue_indices: np.ndarray
    phi: np.ndarray
    psi: np.ndarray


def _openmm_topology(topology: app.Topology | TopologyFeatures) -> app.Topology:
    return topology.topology if isinstance(topology, TopologyFeatures) else topology


def _mdtraj_indices(topology: app.Topology, compute: Callable) -> np.ndarray:
    """Atom quadruplets that an mdtraj ``compute_*`` dihedral function selects on ``topology``."""
    md_topology = mdtraj.Topology.from_openmm(topology)
    # The selection depends on the topology only; any non-degenerate coordinates will do.
    dummy = np.random.default_rng(0).normal(size=(1, md_topology.n_atoms, 3))
    return np.asarray(compute(mdtraj.Trajectory(dummy, md_topology))[0], dtype=np.int64).reshape(-1, 4)


def _residue_labels(topology: app.Topology) -> list[str]:
    chains = topology.getNumChains() > 1
    return [f"{r.chain.id}:{r.name}{r.id}" if chains else f"{r.name}{r.id}" for r in topology.residues()]


def _residue_of_atom(topology: app.Topology) -> np.ndarray:
    return np.array([a.residue.index for a in topology.atoms()], dtype=np.int64)


def ramachandran(xyz: np.ndarray, topology: app.Topology | TopologyFeatures) -> Ramachandran:
    """phi and psi of every residue that has both (mdtraj's definitions), in degrees.

    phi is C(i-1)-N-CA-C and psi N-CA-C-N(i+1), with the atoms mdtraj's ``compute_phi`` and
    ``compute_psi`` select (so ACE/NME caps give the dipeptide its phi and psi).

    Parameters
    ----------
    xyz
        (frames, atoms, 3) in nm.
    topology
        OpenMM topology, or the :class:`TopologyFeatures` of one.
    """
    topology = _openmm_topology(topology)
    xyz = np.asarray(xyz, dtype=np.float64)
    residue_of = _residue_of_atom(topology)
    phi_rows = _mdtraj_indices(topology, mdtraj.compute_phi)
    psi_rows = _mdtraj_indices(topology, mdtraj.compute_psi)
    # Both rows have the residue's CA third (phi) or second (psi).
    phi_by_residue = {int(residue_of[row[2]]): row for row in phi_rows}
    psi_by_residue = {int(residue_of[row[1]]): row for row in psi_rows}
    residues = np.array(sorted(set(phi_by_residue) & set(psi_by_residue)), dtype=np.int64)
    labels = _residue_labels(topology)
    phi = np.array([phi_by_residue[r] for r in residues], dtype=np.int64).reshape(-1, 4)
    psi = np.array([psi_by_residue[r] for r in residues], dtype=np.int64).reshape(-1, 4)
    return Ramachandran(
        residues=tuple(labels[r] for r in residues),
        residue_indices=residues,
        phi=np.degrees(geometry.dihedrals(xyz, phi)),
        psi=np.degrees(geometry.dihedrals(xyz, psi)),
    )


def ramachandran_jsd(
    candidate: np.ndarray,
    reference: np.ndarray,
    topology: app.Topology | TopologyFeatures,
) -> dict[str, dict[str, float] | float]:
    """JSD between candidate and reference 2-D (phi, psi) histograms, residue by residue.

    Each residue's phi/psi pairs are histogrammed on the periodic 36 x 36 map
    :data:`RAMACHANDRAN_BINS` (10 degree bins).

    Parameters
    ----------
    candidate, reference
        (frames, atoms, 3) in nm; frame counts may differ.
    topology
        Their shared topology (OpenMM, or its :class:`TopologyFeatures`).

    Returns
    -------
    dict
        ``"residues"``: {residue label: JSD in bits}; ``"mean"``: unweighted mean over
        residues (NaN if none has both phi and psi). Ideal value 0. A 36 x 36 map needs many
        frames: the sampling floor is higher than for 1-D distributions (module docstring).
    """
    c = ramachandran(candidate, topology)
    r = ramachandran(reference, topology)
    n = len(RAMACHANDRAN_BINS[0]) - 1

    def counts(angles: Ramachandran) -> np.ndarray:
        index = _bin_index(angles.phi, RAMACHANDRAN_BINS[0]) * n + _bin_index(angles.psi, RAMACHANDRAN_BINS[1])
        offset = np.arange(len(angles.residues)) * n * n
        return np.bincount((offset + index).ravel(), minlength=len(angles.residues) * n * n).reshape(-1, n * n)

    values = _jsd_from_counts(counts(c), counts(r)) if c.residues else np.zeros(0)
    per_residue = {label: float(v) for label, v in zip(c.residues, values)}
    return {"residues": per_residue, "mean": _mean(per_residue)}


def _basin_masks(phi: np.ndarray, psi: np.ndarray) -> dict[str, np.ndarray]:
    left = phi < 0.0
    helical = (psi >= -75.0) & (psi < 50.0)
    return {"beta": left & ~helical, "alpha_R": left & helical, "alpha_L": ~left}


def basin_index(phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Basin of each (phi, psi) pair (degrees) as an int: its position in :data:`BASINS`.

    The package's one definition of Ramachandran basins (see :func:`basin_populations`);
    the kinetics metrics use it for their state trajectories.
    """
    masks = _basin_masks(np.asarray(phi), np.asarray(psi))
    index = np.zeros(np.shape(phi), dtype=np.int64)
    for k, basin in enumerate(BASINS):
        index[masks[basin]] = k
    return index


def basin_populations(
    xyz: np.ndarray,
    topology: app.Topology | TopologyFeatures,
) -> dict[str, dict[str, float] | dict[str, dict[str, float]]]:
    """Fraction of frames in each Ramachandran basin, per residue and pooled.

    The basins partition the whole (phi, psi) torus, so the fractions add up to 1. They are
    the coarsest ABEGO bins (Koga et al., "Principles for designing ideal protein
    structures", Nature 491, 222 (2012); Rosetta's ``ABEGOManager::torsion2index_level1``),
    with G and E merged, angles in degrees:

    - ``beta`` (ABEGO "B"): phi < 0 and (psi >= 50 or psi < -75). Extended and polyproline
      II; for the alanine dipeptide also C5 and C7eq (phi, psi about -80, 80).
    - ``alpha_R`` (ABEGO "A"): phi < 0 and -75 <= psi < 50. Right-handed helix.
    - ``alpha_L`` (ABEGO "G" + "E"): phi >= 0. Left-handed helix and, for the dipeptide,
      C7ax; rare for L-amino acids other than glycine.

    Parameters
    ----------
    xyz
        (frames, atoms, 3) in nm.
    topology
        OpenMM topology, or its :class:`TopologyFeatures`.

    Returns
    -------
    dict
        ``"residues"``: {residue label: {basin: fraction}}; ``"all"``: {basin: fraction} over
        all (frame, residue) pairs.
    """
    angles = ramachandran(xyz, topology)
    masks = _basin_masks(angles.phi, angles.psi)
    per_residue = {
        label: {basin: float(masks[basin][:, k].mean()) for basin in BASINS}
        for k, label in enumerate(angles.residues)
    }
    pooled = {basin: float(masks[basin].mean()) if masks[basin].size else float("nan") for basin in BASINS}
    return {"residues": per_residue, "all": pooled}


def basin_population_difference(
    candidate: np.ndarray,
    reference: np.ndarray,
    topology: app.Topology | TopologyFeatures,
) -> float:
    """Largest absolute difference in basin population, in percentage points.

    The maximum over residues and :data:`BASINS` of ``100 * |p_candidate - p_reference|``
    (basins of :func:`basin_populations`). It bounds the pooled difference too, which is an
    average of per-residue differences.

    Returns
    -------
    float
        Percentage points, in [0, 100]; ideal value 0. NaN when no residue has phi and psi.
    """
    c = basin_populations(candidate, topology)["residues"]
    r = basin_populations(reference, topology)["residues"]
    differences = [abs(c[label][basin] - r[label][basin]) for label in r for basin in BASINS]
    return 100.0 * max(differences) if differences else float("nan")


# -- side chains: chi angles ------------------------------------------------------------------

_CHI_FUNCTIONS = (mdtraj.compute_chi1, mdtraj.compute_chi2, mdtraj.compute_chi3, mdtraj.compute_chi4)


def chi_indices(topology: app.Topology | TopologyFeatures) -> dict[str, np.ndarray]:
    """Atom quadruplets of side-chain dihedrals, grouped by type label ``RES:chiK``.

    The atoms are those of mdtraj's ``compute_chi1`` .. ``compute_chi4`` (e.g. N-CA-CB-CG for
    chi1, N-CA-CB-CG1 for VAL and ILE, N-CA-CB-OG1 for THR). Residue names as in the topology.
    """
    topology = _openmm_topology(topology)
    names = [a.residue.name for a in topology.atoms()]
    groups: dict[str, list[np.ndarray]] = {}
    for k, compute in enumerate(_CHI_FUNCTIONS, start=1):
        for row in _mdtraj_indices(topology, compute):
            groups.setdefault(f"{names[row[1]]}:chi{k}", []).append(row)
    return {label: np.array(rows, dtype=np.int64) for label, rows in sorted(groups.items())}


def chi_angles(xyz: np.ndarray, topology: app.Topology | TopologyFeatures) -> dict[str, np.ndarray]:
    """Side-chain dihedrals chi1..chi4 per residue type, in degrees.

    Parameters
    ----------
    xyz
        (frames, atoms, 3) in nm.
    topology
        OpenMM topology, or its :class:`TopologyFeatures`.

    Returns
    -------
    dict
        {``"RES:chiK"``: (frames, residues of that type having chiK) in degrees, in (-180, 180]},
        for the labels of :func:`chi_indices`; empty for a molecule without side-chain dihedrals
        (the alanine dipeptide has none).
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    return {label: np.degrees(geometry.dihedrals(xyz, rows)) for label, rows in chi_indices(topology).items()}


def chi_jsd(
    candidate: np.ndarray,
    reference: np.ndarray,
    topology: app.Topology | TopologyFeatures,
) -> dict[str, dict[str, float] | float]:
    """JSD between candidate and reference chi distributions, per residue type and chi.

    All residues of a type are pooled (``LEU:chi1`` is one distribution), histogrammed on the
    periodic :data:`CHI_BINS`.

    Returns
    -------
    dict
        ``"types"``: {``"RES:chiK"``: JSD in bits}; ``"mean"``: unweighted mean over types
        (NaN when there is none). Ideal value 0.
    """
    c = chi_angles(candidate, topology)
    r = chi_angles(reference, topology)
    per_type = {label: jensen_shannon(c[label].ravel(), r[label].ravel(), CHI_BINS) for label in r}
    return {"types": per_type, "mean": _mean(per_type)}
