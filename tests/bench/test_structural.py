"""Structural metrics on real structures: ideal on the reference itself, and each planted defect caught exactly.

References: the bundled alanine-dipeptide run (1,000 frames) and 1MJ5 with hydrogens
(CHARMM names, 4,593 atoms, 295 residues) from vermouth's martinize2 test data.
"""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from openmmbackmap import geometry, io
from openmmbackmap.bench import structural
from openmmbackmap.bench.structure import TopologyFeatures

from conftest import VERMOUTH_CASES


@pytest.fixture(scope="module")
def protein():
    """(features, positions (1, atoms, 3) nm) of 1MJ5 with hydrogens."""
    topology, positions = io.load_topology(VERMOUTH_CASES / "tier-1" / "1mj5-charmm" / "aa.pdb")
    return TopologyFeatures.from_topology(topology), positions[None].astype(np.float64)


def _indices(features, residue_name, atom_name):
    names = zip(features.residue_names, features.atom_names)
    return [i for i, pair in enumerate(names) if pair == (residue_name, atom_name)]


def _index(features, residue_name, atom_name, nth=0):
    return _indices(features, residue_name, atom_name)[nth]


def _neighbours(features, atom):
    return [int(b if a == atom else a) for a, b in features.bonds if atom in (a, b)]


def _rotate(points, origin, axis, angle):
    """Rotate points (frames, n, 3) about the line origin + s * axis (frames, 3) by angle (frames,) (Rodrigues)."""
    k = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    v = points - origin[:, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    k = k[:, None]
    rotated = v * cos + np.cross(k, v) * sin + k * (k * v).sum(-1, keepdims=True) * (1 - cos)
    return rotated + origin[:, None]


# --- the reference scored against itself ----------------------------------------------------


def test_ala2_trajectory_scores_ideal_against_itself(ala2, features):
    xyz, features = ala2[1], features
    assert structural.bond_score(xyz, xyz, features) == 1.0
    assert 0.9 < structural.bond_score_auc(xyz, xyz, features) < 1.0  # bonds vibrate about their mean
    assert structural.graph_edit_ratio(xyz, features) == 0.0
    assert structural.severe_clash_percentage(xyz, features) == 0.0
    assert structural.clashscore(xyz, features) < 1.0  # a few thermal contacts in 1,000 frames
    no_errors = {"per_frame_mean": 0.0, "frames_with_error": 0.0, "total": 0, "by_centre": []}
    assert structural.chirality_errors(xyz, xyz, features) == no_errors
    assert structural.cis_peptides(xyz, features)["total"] == 0
    assert structural.ring_piercing(xyz, features)["total"] == 0


def test_crystal_structure_baseline(protein):
    features, xyz = protein
    assert structural.bond_score(xyz, xyz, features) == 1.0
    assert structural.bond_score_auc(xyz, xyz, features) == 1.0  # one frame: every bond at its reference length
    assert structural.graph_edit_ratio(xyz, features) == 0.0
    assert structural.severe_clash_percentage(xyz, features) == 0.0
    assert structural.chirality_errors(xyz, xyz, features)["total"] == 0
    cis = structural.cis_peptides(xyz, features)
    assert (cis["total"], cis["proline_total"]) == (0, 4)  # 1MJ5 has four cis prolines
    assert structural.ring_piercing(xyz, features)["total"] == 0


def test_wrong_atom_count_is_an_error(ala2, features):
    with pytest.raises(ValueError, match="22 atoms"):
        structural.clashscore(ala2[1][:, :21], features)


# --- bonds -----------------------------------------------------------------------------------


def test_stretched_bond_lowers_bond_scores_by_the_expected_fraction(ala2, features):
    reference, features = ala2[1], features
    ca, ha = _index(features, "ALA", "CA"), _index(features, "ALA", "HA")  # HA has no other bond
    frames = np.arange(0, 1000, 100)
    candidate = reference.astype(np.float64)
    direction = candidate[frames, ha] - candidate[frames, ca]
    candidate[frames, ha] += 0.05 * direction / np.linalg.norm(direction, axis=1, keepdims=True)  # 0.109 -> 0.159 nm

    expected = len(frames) / (len(reference) * len(features.bonds))
    assert structural.bond_score(candidate, reference, features) == pytest.approx(1.0 - expected, abs=1e-12)
    assert structural.bond_score(candidate, reference, features, tolerance=0.5) == 1.0  # a 46 % stretch passes at 50 %
    auc = structural.bond_score_auc(reference, reference, features)
    assert structural.bond_score_auc(candidate, reference, features) < auc
    # The C-H bond is no longer found from distances: one missing bond in each of those frames.
    assert structural.graph_edit_ratio(candidate, features) == pytest.approx(expected, abs=1e-12)


def test_graph_edit_ratio_counts_missing_and_extra_bonds(protein):
    features, xyz = protein
    hydrogen = _index(features, "ALA", "HA", 0)  # bonded to its CA only
    oxygen, carbon = _index(features, "LEU", "O", 20), _index(features, "LEU", "C", 20)  # a distant carbonyl
    outward = xyz[0, oxygen] - xyz[0, carbon]
    moved = xyz.copy()
    moved[0, hydrogen] = xyz[0, oxygen] + 0.1 * outward / np.linalg.norm(outward)  # an O-H "bond" of 0.1 nm
    # CA-HA missing, O-HA extra: two edits.
    assert structural.graph_edit_ratio(moved, features) == pytest.approx(2 / len(features.bonds))
    assert structural.graph_edit_ratio(np.concatenate([xyz, moved]), features) == pytest.approx(1 / len(features.bonds))


# --- clashes ---------------------------------------------------------------------------------


def _brute_force_clashes(xyz, features, overlap):
    """Dense all-pairs count of clashing heavy-atom pairs, independent of the k-d tree search."""
    radii = np.array([structural.VDW_RADII_NM[e] for e in features.elements])
    heavy = np.flatnonzero(features.heavy)
    d = cdist(xyz[heavy], xyz[heavy])
    near = features.within_three_bonds.toarray()[np.ix_(heavy, heavy)]
    clash = (radii[heavy, None] + radii[None, heavy] - d >= overlap) & ~near
    return np.argwhere(np.triu(clash, 1)), heavy


def test_overlapping_atoms_raise_both_clash_scores_by_one_residue_pair(protein):
    features, xyz = protein
    moved_atom, target = _index(features, "LYS", "NZ", 1), _index(features, "LYS", "NZ", 3)
    parent = _index(features, "LYS", "CE", 3)
    outward = xyz[0, target] - xyz[0, parent]
    moved = xyz.copy()
    moved[0, moved_atom] = xyz[0, target] + 0.05 * outward / np.linalg.norm(outward)  # 0.5 A from NZ, beyond its CE

    n_residues = len(np.unique(features.residue_index[features.heavy]))
    before, after = structural.severe_clash_percentage(xyz, features), structural.severe_clash_percentage(moved, features)
    assert after - before == pytest.approx(100.0 * 2 / n_residues)

    # Exact clashscore: the k-d tree search agrees with a dense all-pairs count, before and after.
    pairs_before, heavy = _brute_force_clashes(xyz[0], features, 0.04)
    pairs_after, _ = _brute_force_clashes(moved[0], features, 0.04)
    per_pair = 1000.0 / len(heavy)
    assert structural.clashscore(xyz, features) == pytest.approx(len(pairs_before) * per_pair)
    assert structural.clashscore(moved, features) == pytest.approx(len(pairs_after) * per_pair)
    # ... and every new clash is between the two lysines (NZ with the other NZ and its CE).
    new = {tuple(p) for p in heavy[pairs_after].tolist()} - {tuple(p) for p in heavy[pairs_before].tolist()}
    assert new == {tuple(sorted((moved_atom, target))), tuple(sorted((moved_atom, parent)))}
    residues = {features.residue_index[a] for pair in new for a in pair}
    assert residues == {features.residue_index[moved_atom], features.residue_index[target]}
    assert structural.clashscore(moved, features) - structural.clashscore(xyz, features) == pytest.approx(2 * per_pair)


def test_clash_scores_average_over_frames(protein):
    features, xyz = protein
    moved = xyz.copy()
    moved[0, _index(features, "LYS", "NZ", 0)] = xyz[0, _index(features, "LYS", "NZ", 3)] + 0.01
    frames = np.concatenate([xyz, moved, xyz, xyz])
    single = structural.severe_clash_percentage(moved, features)
    assert structural.severe_clash_percentage(frames, features) == pytest.approx(single / 4)


# --- stereochemistry -------------------------------------------------------------------------


def test_mirrored_side_chain_flips_exactly_those_frames(ala2, features):
    reference, features = ala2[1], features
    n, ca, c = (_index(features, "ALA", name) for name in ("N", "CA", "C"))
    side = [_index(features, "ALA", name) for name in ("CB", "HB1", "HB2", "HB3", "HA")]
    frames = np.array([3, 50, 51, 999])
    candidate = reference.astype(np.float64)
    normal = np.cross(candidate[frames, n] - candidate[frames, ca], candidate[frames, c] - candidate[frames, ca])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    height = ((candidate[frames][:, side] - candidate[frames, ca][:, None]) * normal[:, None]).sum(-1)
    candidate[frames[:, None], side] -= 2 * height[..., None] * normal[:, None]  # reflect through the N-CA-C plane

    result = structural.chirality_errors(candidate, reference, features)
    assert result == {"per_frame_mean": 4 / 1000, "frames_with_error": 4 / 1000, "total": 4, "by_centre": ["ALA 2:CA"]}
    assert structural.bond_score(candidate, reference, features) == 1.0  # invisible to bond lengths


def test_mirror_image_flips_every_chiral_centre(protein):
    features, xyz = protein
    mirror = xyz * np.array([-1.0, 1.0, 1.0])
    result = structural.chirality_errors(mirror, xyz, features)
    residues = list(features.topology.residues())
    expected = {f"{r.name} {r.id}:CA" for r in residues if r.name != "GLY"}
    expected |= {f"{r.name} {r.id}:CB" for r in residues if r.name in ("THR", "ILE")}
    assert result["total"] == len(features.chiral_centres) == len(expected) == 300
    assert set(result["by_centre"]) == expected and result["frames_with_error"] == 1.0
    # A mirror image keeps every distance: bonds and clashes cannot see it.
    assert structural.bond_score(mirror, xyz, features) == 1.0
    assert structural.clashscore(mirror, features) == pytest.approx(structural.clashscore(xyz, features))


def test_cis_peptide_is_counted(ala2, features):
    reference, features = ala2[1], features
    omega = features.omegas[features.omega_residues.index("NME")]  # ALA CA, C, NME N, CH3
    nme = [i for i, r in enumerate(features.residue_names) if r == "NME"]
    frames = np.arange(10, 1000, 50)
    candidate = reference.astype(np.float64)

    angle = -geometry.dihedrals(candidate[frames], omega)[:, 0]  # bring omega to 0
    c, n = candidate[frames, omega[1]], candidate[frames, omega[2]]
    candidate[frames[:, None], nme] = _rotate(candidate[frames][:, nme], c, n - c, angle)
    assert np.allclose(geometry.dihedrals(candidate[frames], omega), 0.0, atol=1e-6)

    result = structural.cis_peptides(candidate, features)
    assert result["total"] == len(frames) and result["per_frame_mean"] == len(frames) / 1000
    assert result["frames_with_error"] == len(frames) / 1000 and result["proline_total"] == 0
    assert structural.bond_score(candidate, reference, features) == 1.0  # a rotation about the bond keeps lengths
    assert structural.chirality_errors(candidate, reference, features)["total"] == 0


def test_cis_proline_is_not_an_error(protein):
    features, xyz = protein

    omegas = geometry.dihedrals(xyz, features.omegas)[0]
    bond = next(k for k, name in enumerate(features.omega_residues) if name == "PRO" and abs(omegas[k]) > np.pi / 2)
    _, c, n, _ = features.omegas[bond]
    downstream = np.flatnonzero(features.residue_index >= features.residue_index[n])  # one chain
    moved = xyz.copy()
    moved[:, downstream] = _rotate(xyz[:, downstream], xyz[:, c], xyz[:, n] - xyz[:, c], np.array([-omegas[bond]]))
    result = structural.cis_peptides(moved, features)
    assert (result["total"], result["proline_total"], result["proline_per_frame_mean"]) == (0, 5, 5.0)


# --- ring piercing ---------------------------------------------------------------------------


def _ring_frame(xyz, ring):
    centroid = xyz[0, ring].mean(axis=0)
    _, _, vt = np.linalg.svd(xyz[0, ring] - centroid)
    return centroid, vt[2], vt[0]  # centre, normal, an in-plane direction


@pytest.mark.parametrize(
    "carbon_height, hydrogen_height, offset, expected",
    [
        (0.07, -0.04, 0.0, 1),  # a C-H bond through the centre, perpendicular to the ring
        (0.07, -0.04, 0.08, 1),  # off centre, still inside the ring (radius 0.14 nm)
        (0.30, -0.30, 0.0, 1),  # a 0.6 nm broken bond: found by the all-rings path for long bonds
        (0.07, -0.04, 0.25, 0),  # beside the ring
        (0.20, 0.09, 0.0, 0),  # above the ring
    ],
)
def test_bond_through_phenylalanine_ring(protein, carbon_height, hydrogen_height, offset, expected):
    features, xyz = protein
    ring = next(r for r in features.rings if features.residue_names[r[0]] == "PHE")
    centroid, normal, in_plane = _ring_frame(xyz, ring)
    # The nearest methyl carbon of another residue and one of its hydrogens.
    carbon = min(_indices(features, "LEU", "CD1"), key=lambda i: np.linalg.norm(xyz[0, i] - centroid))  # 0.51 nm away
    hydrogen = next(a for a in _neighbours(features, carbon) if features.elements[a] == "H")
    if (xyz[0, carbon] - centroid) @ normal < 0:
        normal = -normal  # the carbon stays on its own side, its other bonds away from the ring
    moved = xyz.copy()
    moved[0, carbon] = centroid + offset * in_plane + carbon_height * normal
    moved[0, hydrogen] = centroid + offset * in_plane + hydrogen_height * normal
    assert structural.ring_piercing(xyz, features)["total"] == 0
    result = structural.ring_piercing(np.concatenate([xyz, moved]), features)
    assert result == {"per_frame_mean": expected / 2, "frames_with_error": expected / 2, "total": expected}


def test_bond_through_proline_ring(protein):
    features, xyz = protein
    ring = next(r for r in features.rings if features.residue_names[r[0]] == "PRO" and len(r) == 5)
    centroid, normal, _ = _ring_frame(xyz, ring)
    # A C-H bond of a residue far from this proline, moved whole: its carbon's other bonds stretch
    # back to where they were, from the carbon's own side of the ring.
    far = np.flatnonzero(np.linalg.norm(xyz[0] - centroid, axis=1) > 1.5)
    carbon = next(a for a in far if features.elements[a] == "C" and "H" in [features.elements[b] for b in _neighbours(features, a)])
    hydrogen = next(a for a in _neighbours(features, carbon) if features.elements[a] == "H")
    if (xyz[0, carbon] - centroid) @ normal < 0:
        normal = -normal
    moved = xyz.copy()
    moved[0, carbon] = centroid + 0.07 * normal
    moved[0, hydrogen] = centroid - 0.04 * normal
    assert structural.ring_piercing(moved, features)["total"] == 1
