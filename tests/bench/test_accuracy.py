"""Accuracy metrics (paired RMSD, chi1 accuracy, diversity) on the real alanine-dipeptide run
and ubiquitin, with planted defects of known size."""

import networkx as nx
import numpy as np
import openmm.app as app
import pytest
from openmm.app import element

from openmmbackmap.bench.accuracy import (
    backbone_heavy_atoms,
    best_of_n_rmsd,
    chi1_accuracy,
    diversity,
    heavy_atom_rmsd,
    side_chain_heavy_atoms,
)
from openmmbackmap.bench.distributions import chi_indices
from openmmbackmap.bench.structure import TopologyFeatures


def _random_rotations(n, rng):
    q = rng.normal(size=(n, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    ).transpose(2, 0, 1)


def _rotate_about_bond(xyz, fixed, moving, atoms, degrees):
    """Rotate ``atoms`` about the axis fixed -> moving by ``degrees``, right-handed."""
    xyz = np.array(xyz, dtype=np.float64)
    theta = np.radians(degrees)
    k = xyz[:, moving] - xyz[:, fixed]
    k = (k / np.linalg.norm(k, axis=-1, keepdims=True))[:, None, :]
    v = xyz[:, atoms] - xyz[:, moving][:, None]
    rotated = v * np.cos(theta) + np.cross(k, v) * np.sin(theta) + k * (v * k).sum(-1, keepdims=True) * (1 - np.cos(theta))
    xyz[:, atoms] = rotated + xyz[:, moving][:, None]
    return xyz


# -- atom selections ------------------------------------------------------------------------------


def test_backbone_and_side_chain_selections(features, ubiquitin_features):
    names = [features.atom_names[i] for i in backbone_heavy_atoms(features)]
    assert names == ["CH3", "C", "O", "N", "CA", "C", "O", "N", "C"]  # ACE, ALA, NME heavy backbone
    assert [features.atom_names[i] for i in side_chain_heavy_atoms(features)] == ["CB"]
    # 1UBQ: N CA C O of 76 residues and the C-terminal OXT; every other heavy atom is side chain
    assert len(backbone_heavy_atoms(ubiquitin_features)) == 76 * 4 + 1
    assert len(backbone_heavy_atoms(ubiquitin_features)) + len(side_chain_heavy_atoms(ubiquitin_features)) == 602


# -- paired RMSD ----------------------------------------------------------------------------------


def test_reference_against_itself_is_exactly_zero(ala2, features):
    _, xyz = ala2
    rmsd = heavy_atom_rmsd(xyz, xyz, features)
    assert rmsd["backbone"].shape == rmsd["side_chain"].shape == (1000,)
    assert rmsd["mean_backbone"] == rmsd["mean_side_chain"] == rmsd["mean_heavy"] == 0.0


def test_rigid_motion_is_fitted_away(ala2, features):
    _, xyz = ala2
    rng = np.random.default_rng(3)
    moved = np.einsum("fij,faj->fai", _random_rotations(len(xyz), rng), xyz.astype(np.float64))
    moved += rng.uniform(-5.0, 5.0, size=(len(xyz), 1, 3))
    rmsd = heavy_atom_rmsd(moved, xyz, features)
    assert max(rmsd["backbone"].max(), rmsd["side_chain"].max(), rmsd["heavy"].max()) < 1e-6


def test_mirror_image_is_not_fitted(ala2, features):
    _, xyz = ala2
    mirror = xyz * np.array([-1.0, 1.0, 1.0])
    rmsd = heavy_atom_rmsd(mirror, xyz, features)
    print(f"\nmirror image: backbone {rmsd['mean_backbone']:.3f} nm, side chain {rmsd['mean_side_chain']:.3f} nm")
    # D-alanine: CB ends up on the other side of the backbone
    assert rmsd["mean_backbone"] > 0.05 and rmsd["mean_side_chain"] > 0.2
    assert rmsd["backbone"].min() > 0.01


def test_fit_is_on_the_backbone_and_side_chains_are_scored_after_it(ala2, features):
    """Noise on side-chain atoms only: the backbone fit ignores it and the side-chain RMSD is its size."""
    _, xyz = ala2
    sigma = 0.02
    candidate = xyz.astype(np.float64)
    side = side_chain_heavy_atoms(features)
    candidate[:, side] += np.random.default_rng(4).normal(0.0, sigma, size=(len(xyz), len(side), 3))
    rmsd = heavy_atom_rmsd(candidate, xyz, features)
    assert rmsd["mean_backbone"] < 1e-6
    assert np.sqrt(np.mean(rmsd["side_chain"] ** 2)) == pytest.approx(sigma * np.sqrt(3), rel=0.05)


def test_molecule_without_backbone_is_fitted_on_all_heavy_atoms():
    topology = app.Topology()
    residue = topology.addResidue("LIG", topology.addChain())
    atoms = [topology.addAtom(f"C{k}", element.carbon, residue) for k in range(6)]
    for a, b in zip(atoms, atoms[1:]):
        topology.addBond(a, b)
    features = TopologyFeatures.from_topology(topology)
    rng = np.random.default_rng(5)
    reference = rng.normal(size=(3, 6, 3))
    moved = np.einsum("fij,faj->fai", _random_rotations(3, rng), reference) + 1.0
    rmsd = heavy_atom_rmsd(moved, reference, features)
    assert len(backbone_heavy_atoms(features)) == 0
    assert rmsd["mean_backbone"] < 1e-9 and np.isnan(rmsd["mean_side_chain"])


def test_single_reference_frame_is_paired_with_every_frame(ala2, features):
    _, xyz = ala2
    one = heavy_atom_rmsd(xyz[:5], xyz[0], features)["backbone"]
    assert one[0] == 0.0 and np.all(one[1:] > 0.0)
    with pytest.raises(ValueError):
        heavy_atom_rmsd(xyz[:5], xyz[:4], features)


def test_best_of_n_picks_the_right_sample(ala2, features):
    """Samples: the reference itself and a time-shuffled copy. Best of 2 is 0, the mean is half the shuffled RMSD."""
    _, xyz = ala2
    shuffled = xyz[np.random.default_rng(6).permutation(len(xyz))]
    result = best_of_n_rmsd(np.stack([shuffled, xyz]), xyz, features)
    paired = heavy_atom_rmsd(shuffled, xyz, features)
    assert result["backbone"].shape == (2, 1000)
    assert result["best_backbone"] == result["best_side_chain"] == result["best_heavy"] == 0.0
    for key in ("backbone", "side_chain", "heavy"):
        assert result[f"mean_{key}"] == pytest.approx(0.5 * paired[f"mean_{key}"], rel=1e-12)


# -- chi1 accuracy (ubiquitin) --------------------------------------------------------------------


def _rotate_chi1(xyz, features, degrees):
    """Rotate every side chain that is not a ring closed on the backbone (not PRO) about CA-CB."""
    graph = nx.Graph([tuple(b) for b in features.bonds.tolist()])
    rotated = 0
    for label, rows in chi_indices(features).items():
        if not label.endswith(":chi1") or label.startswith("PRO"):
            continue
        for _, ca, cb, _ in rows.tolist():
            cut = graph.copy()
            cut.remove_edge(ca, cb)
            xyz = _rotate_about_bond(xyz, ca, cb, np.array(sorted(nx.node_connected_component(cut, cb))), degrees)
            rotated += 1
    return xyz, rotated


def test_chi1_accuracy(ubiquitin, ubiquitin_features):
    topology, positions = ubiquitin
    xyz = positions[None]
    assert chi1_accuracy(xyz, xyz, topology) == 1.0
    n_chi1 = sum(len(r) for k, r in chi_indices(topology).items() if k.endswith(":chi1"))
    # within tolerance (the periodic difference also handles chi1 near +-180), then outside it
    for degrees, expected_wrong in ((35.0, 0), (-35.0, 0), (45.0, None), (180.0, None)):
        candidate, rotated = _rotate_chi1(xyz, ubiquitin_features, degrees)
        wrong = rotated if expected_wrong is None else expected_wrong
        assert chi1_accuracy(candidate, xyz, topology) == pytest.approx(1.0 - wrong / n_chi1)
    assert rotated == n_chi1 - 3  # ubiquitin's three prolines stay
    candidate, _ = _rotate_chi1(xyz, ubiquitin_features, 45.0)
    assert chi1_accuracy(candidate, xyz, topology, tolerance_deg=50.0) == 1.0


def test_chi1_accuracy_is_nan_without_chi1(ala2):
    topology, xyz = ala2
    assert np.isnan(chi1_accuracy(xyz, xyz, topology))


# -- diversity ------------------------------------------------------------------------------------


def test_diversity_of_identical_samples_is_one(ala2, features):
    """A deterministic model: n identical samples (here the frames 100 ps later) give DIV = 1 exactly."""
    _, xyz = ala2
    sample = np.roll(xyz, -100, axis=0)
    result = diversity(np.stack([sample] * 4), xyz, features)
    assert result["div"] == 1.0 and result["rmsd_between_samples"] == 0.0
    assert result["rmsd_to_reference"] > 0.03


def test_diversity_of_samples_as_spread_as_the_reference_is_about_zero(ala2, features):
    """Samples = the reference frames 100-500 ps later: each sample and the reference are
    exchangeable draws from the same ensemble, so <RMSD between samples> ~ <RMSD to reference>."""
    _, xyz = ala2
    samples = np.stack([np.roll(xyz, -100 * k, axis=0) for k in range(1, 6)])
    result = diversity(samples, xyz, features)
    print(
        f"\nDIV, samples from other times: {result['div']:.4f} (between samples {result['rmsd_between_samples']:.4f} nm, "
        f"to reference {result['rmsd_to_reference']:.4f} nm)"
    )
    assert abs(result["div"]) < 0.05


def test_diversity_of_noise_around_the_reference_is_negative(ala2, features):
    """Independent isotropic noise around the reference: samples are sqrt(2) farther from each other than from it."""
    _, xyz = ala2
    rng = np.random.default_rng(7)
    samples = xyz[None].astype(np.float64) + rng.normal(0.0, 0.01, size=(4, *xyz.shape))
    result = diversity(samples, xyz, features)
    assert result["div"] == pytest.approx(1 - np.sqrt(2), abs=0.05)
    assert np.isnan(diversity(np.stack([xyz, xyz]), xyz, features)["div"])  # every sample is the reference
    with pytest.raises(ValueError):
        diversity(xyz[None], xyz, features)
