"""Distribution metrics on the real alanine-dipeptide run and on ubiquitin, with planted defects.

Each defect is made by an exact geometric operation on the real coordinates (stretch one bond
type, rotate about one bond), so we know which distributions it must change and which it must
leave alone.
"""

import mdtraj
import networkx as nx
import numpy as np
import pytest
import scipy.spatial.distance

from openmmbackmap.bench import accuracy, distributions
from openmmbackmap.bench.distributions import (
    ANGLE_BINS,
    BOND_BINS,
    CHI_BINS,
    DIHEDRAL_BINS,
    RAMACHANDRAN_BINS,
    basin_population_difference,
    basin_populations,
    chi_angles,
    chi_jsd,
    internal_coordinate_jsd,
    jensen_shannon,
    ramachandran,
    ramachandran_jsd,
)


def _index(features, residue, name):
    return next(i for i, (r, n) in enumerate(zip(features.residue_names, features.atom_names)) if r == residue and n == name)


def _side(features, fixed, moving):
    """Atoms on ``moving``'s side of the bond fixed-moving (the bond must not be in a ring)."""
    graph = nx.Graph([tuple(b) for b in features.bonds.tolist()])
    graph.remove_edge(fixed, moving)
    side = nx.node_connected_component(graph, moving)
    assert fixed not in side
    return np.array(sorted(side))


def _rotate_about_bond(xyz, fixed, moving, atoms, degrees):
    """Rotate ``atoms`` about the axis fixed -> moving by ``degrees`` (scalar or per frame), right-handed."""
    xyz = np.array(xyz, dtype=np.float64)
    theta = np.radians(np.broadcast_to(np.asarray(degrees, dtype=np.float64), (len(xyz),)))[:, None, None]
    axis = xyz[:, moving] - xyz[:, fixed]
    k = (axis / np.linalg.norm(axis, axis=-1, keepdims=True))[:, None, :]
    v = xyz[:, atoms] - xyz[:, moving][:, None]
    rotated = v * np.cos(theta) + np.cross(k, v) * np.sin(theta) + k * (v * k).sum(-1, keepdims=True) * (1 - np.cos(theta))
    xyz[:, atoms] = rotated + xyz[:, moving][:, None]
    return xyz


def _all_values(report):
    return [v for key in ("bonds", "angles", "dihedrals") for v in report[key].values()]


# -- the divergence itself -----------------------------------------------------------------------


def test_jensen_shannon_agrees_with_scipy_and_is_bounded():
    rng = np.random.default_rng(1)
    p, q = rng.normal(0.0, 30.0, 5000), rng.normal(20.0, 40.0, 3000)
    p_hist = np.histogram(p, DIHEDRAL_BINS)[0]
    q_hist = np.histogram(np.clip(q, -180, 180), DIHEDRAL_BINS)[0]
    expected = scipy.spatial.distance.jensenshannon(p_hist, q_hist, base=2) ** 2
    assert jensen_shannon(p, np.clip(q, -180, 180), DIHEDRAL_BINS) == pytest.approx(expected, rel=1e-12)
    # symmetric; 0 for the same samples; exactly 1 for disjoint support (no pseudo-count)
    assert jensen_shannon(p, q, DIHEDRAL_BINS) == pytest.approx(jensen_shannon(q, p, DIHEDRAL_BINS), abs=1e-15)
    assert jensen_shannon(p, p, DIHEDRAL_BINS) == 0.0
    assert jensen_shannon([0.100, 0.101], [0.150], BOND_BINS) == 1.0
    # values beyond the bins land in the outermost bins instead of vanishing
    assert jensen_shannon([0.5], [0.2395], BOND_BINS) == 0.0
    assert jensen_shannon([0.5], [0.10], BOND_BINS) == 1.0
    # two-dimensional samples on a pair of bin edges
    assert jensen_shannon(np.c_[p, p], np.c_[p, p[::-1]], RAMACHANDRAN_BINS) > 0.0
    assert np.isnan(jensen_shannon([], [1.0], ANGLE_BINS))
    with pytest.raises(ValueError):
        jensen_shannon([np.nan], [1.0], ANGLE_BINS)


def test_bins_are_the_documented_fixed_grids():
    assert (BOND_BINS[0], BOND_BINS[-1], len(BOND_BINS) - 1) == (0.08, 0.24, 160)
    assert np.allclose(np.diff(BOND_BINS), 0.001)
    assert np.allclose(np.diff(ANGLE_BINS), 1.0) and (ANGLE_BINS[0], ANGLE_BINS[-1]) == (0.0, 180.0)
    assert np.allclose(np.diff(DIHEDRAL_BINS), 5.0) and (DIHEDRAL_BINS[0], DIHEDRAL_BINS[-1]) == (-180.0, 180.0)
    assert [len(b) - 1 for b in RAMACHANDRAN_BINS] == [36, 36]
    assert CHI_BINS is DIHEDRAL_BINS


# -- the real trajectory ----------------------------------------------------------------------


def test_reference_against_itself_is_zero(ala2, features):
    topology, xyz = ala2
    report = internal_coordinate_jsd(xyz, xyz, features)
    assert len(report["bonds"]) == 21 and len(report["angles"]) > 30 and len(report["dihedrals"]) > 30
    assert all(v == 0.0 for v in _all_values(report))
    assert report["mean_bonds"] == report["mean_angles"] == report["mean_dihedrals"] == 0.0
    assert ramachandran_jsd(xyz, xyz, topology) == {"residues": {"ALA2": 0.0}, "mean": 0.0}
    assert basin_population_difference(xyz, xyz, topology) == 0.0


def test_ramachandran_matches_mdtraj_and_basins_partition(ala2):
    topology, xyz = ala2
    angles = ramachandran(xyz, topology)
    trajectory = mdtraj.Trajectory(xyz, mdtraj.Topology.from_openmm(topology))
    assert angles.residues == ("ALA2",)
    assert np.allclose(angles.phi[:, 0], np.degrees(mdtraj.compute_phi(trajectory)[1][:, 0]), atol=1e-3)
    assert np.allclose(angles.psi[:, 0], np.degrees(mdtraj.compute_psi(trajectory)[1][:, 0]), atol=1e-3)
    populations = basin_populations(xyz, topology)
    assert sum(populations["all"].values()) == pytest.approx(1.0)
    # amber99sb-ildn/OBC at 300 K: beta/C7eq/PII dominate, alpha_R is populated, alpha_L is not
    assert populations["residues"]["ALA2"]["beta"] > 0.6
    assert populations["residues"]["ALA2"]["alpha_R"] > 0.15
    assert populations["residues"]["ALA2"]["alpha_L"] == 0.0


def test_time_halves_give_the_statistical_floor(ala2, features):
    """First 500 ps against last 500 ps of the same run: what sampling noise alone gives."""
    topology, xyz = ala2
    report = internal_coordinate_jsd(xyz[:500], xyz[500:], features)
    rama = ramachandran_jsd(xyz[:500], xyz[500:], topology)["mean"]
    basins = basin_population_difference(xyz[:500], xyz[500:], topology)
    print(
        f"\nfloor (first vs second half): bonds {report['mean_bonds']:.4f} (max {max(report['bonds'].values()):.4f}), "
        f"angles {report['mean_angles']:.4f} (max {max(report['angles'].values()):.4f}), "
        f"dihedrals {report['mean_dihedrals']:.4f} (max {max(report['dihedrals'].values()):.4f}), "
        f"Ramachandran {rama:.4f} bits, basins {basins:.1f} points"
    )
    assert 0.0 < report["mean_bonds"] < 0.02 and max(report["bonds"].values()) < 0.05
    assert 0.0 < report["mean_angles"] < 0.04 and max(report["angles"].values()) < 0.06
    assert 0.0 < report["mean_dihedrals"] < 0.08 and max(report["dihedrals"].values()) < 0.15
    assert 0.0 < rama < 0.3
    assert basins < 8.0


@pytest.mark.parametrize("label, fixed, moving", [("ALA:CA-CB", ("ALA", "CA"), ("ALA", "CB")), ("ACE/ALA:C-N", ("ACE", "C"), ("ALA", "N"))])
def test_stretched_bond_type_is_the_only_one_flagged(ala2, features, label, fixed, moving):
    """Move one side of a bond along the bond by 5 % of its length: only that bond length changes."""
    topology, xyz = ala2
    i, j = _index(features, *fixed), _index(features, *moving)
    candidate = np.array(xyz, dtype=np.float64)
    shift = 0.05 * (candidate[:, j] - candidate[:, i])
    candidate[:, _side(features, i, j)] += shift[:, None]
    report = internal_coordinate_jsd(candidate, xyz, features)
    floor = internal_coordinate_jsd(xyz[:500], xyz[500:], features)["bonds"][label]
    print(f"\n5 % stretched {label}: JSD {report['bonds'][label]:.3f} (floor {floor:.4f})")
    assert report["bonds"][label] > 0.5 and report["bonds"][label] > 20 * floor
    # other types unchanged up to float32 rounding (geometry uses mdtraj's float32 kernels):
    # a rare bin-edge crossing, three orders of magnitude below the stretched type
    assert all(v < 1e-3 for name, v in report["bonds"].items() if name != label)
    # bond directions are unchanged, so angles and dihedrals keep their distributions
    assert report["mean_angles"] < 1e-3 and report["mean_dihedrals"] < 1e-3
    assert basin_population_difference(candidate, xyz, topology) == 0.0


def test_phi_flipped_to_alpha_l_in_30_percent_of_frames(ala2, features):
    """Rotate the C-terminal side about N-CA so that phi = +60 degrees in 300 random frames."""
    topology, xyz = ala2
    n, ca = _index(features, "ALA", "N"), _index(features, "ALA", "CA")
    flipped = np.random.default_rng(0).choice(len(xyz), size=300, replace=False)
    phi = ramachandran(xyz, topology).phi[:, 0]
    turn = np.zeros(len(xyz))
    turn[flipped] = 60.0 - phi[flipped]
    candidate = _rotate_about_bond(xyz, n, ca, _side(features, n, ca), turn)
    angles = ramachandran(candidate, topology)
    # float32 dihedrals (mdtraj's kernel) are good to about 1e-5 rad, i.e. 1e-3 degrees
    assert np.allclose(angles.phi[flipped, 0], 60.0, atol=1e-3)
    assert np.allclose(angles.psi[:, 0], ramachandran(xyz, topology).psi[:, 0], atol=1e-3)  # psi untouched
    assert basin_populations(candidate, topology)["all"]["alpha_L"] == pytest.approx(0.3)
    assert basin_population_difference(candidate, xyz, topology) == pytest.approx(30.0, abs=1e-9)
    # 30 % of the mass moved to bins the reference never visits. With 1000 frames the 36 x 36
    # map's sampling floor (about 0.19 bits between time halves) is as large as this shift, so
    # the basin populations (floor about 3 points) are the sensitive metric for it.
    rama = ramachandran_jsd(candidate, xyz, topology)["mean"]
    print(f"\nphi flipped in 30 % of frames: Ramachandran JSD {rama:.3f}")
    assert rama > 0.15
    # a rotation about a bond keeps every bond length and angle
    report = internal_coordinate_jsd(candidate, xyz, features)
    assert max(report["bonds"].values()) < 1e-3 and max(report["angles"].values()) < 1e-3
    assert report["dihedrals"]["ACE/ALA:C-N-CA-C"] > 0.15  # phi itself


def test_time_shuffled_frames_have_the_distributions_but_not_the_accuracy(ala2, features):
    """The same ensemble in the wrong order: distribution metrics are blind to it, paired RMSD is not."""
    topology, xyz = ala2
    shuffled = xyz[np.random.default_rng(2).permutation(len(xyz))]
    report = internal_coordinate_jsd(shuffled, xyz, features)
    assert all(v == 0.0 for v in _all_values(report))
    assert ramachandran_jsd(shuffled, xyz, topology)["mean"] == 0.0
    assert basin_population_difference(shuffled, xyz, topology) == 0.0
    rmsd = accuracy.heavy_atom_rmsd(shuffled, xyz, features)
    assert rmsd["mean_backbone"] > 0.03 and rmsd["mean_heavy"] > 0.03


def test_frame_counts_may_differ_but_atoms_must_match(ala2, features):
    _, xyz = ala2
    assert internal_coordinate_jsd(xyz[:10], xyz, features)["mean_bonds"] > 0.0
    with pytest.raises(ValueError):
        internal_coordinate_jsd(xyz[:, :21], xyz, features)


# -- side chains (ubiquitin: 1UBQ heavy atoms) ----------------------------------------------------


def test_chi_angles_match_mdtraj(ubiquitin):
    topology, positions = ubiquitin
    chis = chi_angles(positions[None], topology)
    trajectory = mdtraj.Trajectory(positions[None], mdtraj.Topology.from_openmm(topology))
    chi1 = np.sort(np.concatenate([v[0] for k, v in chis.items() if k.endswith(":chi1")]))
    assert np.allclose(chi1, np.sort(np.degrees(mdtraj.compute_chi1(trajectory)[1][0])), atol=1e-3)
    assert chis["LEU:chi1"].shape == (1, 9) and chis["LYS:chi4"].shape == (1, 7)


def test_chi_jsd_flags_the_rotated_residue_type_only(ubiquitin, ubiquitin_features):
    topology, positions = ubiquitin
    xyz = positions[None]
    same = chi_jsd(xyz, xyz, topology)
    assert same["mean"] == 0.0 and len(same["types"]) == 36
    candidate = xyz.astype(np.float64)
    leucines = sorted({int(r) for r, name in zip(ubiquitin_features.residue_index, ubiquitin_features.residue_names) if name == "LEU"})
    for residue in leucines:
        atoms = {n: i for i, (r, n) in enumerate(zip(ubiquitin_features.residue_index, ubiquitin_features.atom_names)) if r == residue}
        candidate = _rotate_about_bond(candidate, atoms["CA"], atoms["CB"], _side(ubiquitin_features, atoms["CA"], atoms["CB"]), 120.0)
    report = chi_jsd(candidate, xyz, topology)["types"]
    # every leucine moved 120 degrees (pooled over the 9 leucines, some land where another was)
    assert report["LEU:chi1"] > 0.5
    assert all(v == 0.0 for k, v in report.items() if k != "LEU:chi1")
    # the backbone is untouched
    assert ramachandran_jsd(candidate, xyz, topology)["mean"] == 0.0
    assert len(ramachandran(xyz, topology).residues) == 74  # 76 residues less the two termini


def test_dipeptide_has_no_chi(ala2):
    topology, xyz = ala2
    report = chi_jsd(xyz, xyz, topology)
    assert report["types"] == {} and np.isnan(report["mean"])
    assert distributions.chi_indices(topology) == {}
