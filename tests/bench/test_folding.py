"""The folded-state definition on the bundled CLN025 structure, and on chains opened from it by
rotating backbone dihedrals (the hairpin without its turn, a fully extended chain)."""

import networkx as nx
import numpy as np
import pytest

from openmmbackmap import io
from openmmbackmap.bench.folding import (
    FOLDED_CA_RMSD,
    ca_rmsd,
    folded_fraction,
    folded_mask,
    native_contacts,
    native_contacts_fraction,
)
from openmmbackmap.errors import InputError
from openmmbackmap.geometry import dihedrals
from openmmbackmap.mapping import Mapping


@pytest.fixture(scope="module")
def cln025():
    return io.load_topology(io.bundled("chignolin/cln025.pdb"))


def _atom(topology, residue_id, name):
    return next(a.index for a in topology.atoms() if a.residue.id == str(residue_id) and a.name == name)


def _set_dihedral(topology, xyz, quadruplet, degrees):
    """Rotate everything on the far side of the middle bond so that the dihedral becomes ``degrees``."""
    graph = nx.Graph([(a.index, b.index) for a, b in topology.bonds()])
    b, c = quadruplet[1], quadruplet[2]
    graph.remove_edge(b, c)
    moving = np.array(sorted(nx.node_connected_component(graph, c)))
    current = float(dihedrals(xyz[None], np.array([quadruplet]))[0, 0])
    angle = np.radians(degrees) - current
    axis = (xyz[c] - xyz[b]) / np.linalg.norm(xyz[c] - xyz[b])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k  # Rodrigues
    out = xyz.copy()
    out[moving] = (xyz[moving] - xyz[c]) @ rotation.T + xyz[c]
    return out


def _phi(topology, residue):
    return [_atom(topology, residue - 1, "C"), _atom(topology, residue, "N"), _atom(topology, residue, "CA"),
            _atom(topology, residue, "C")]


def _psi(topology, residue):
    return [_atom(topology, residue, "N"), _atom(topology, residue, "CA"), _atom(topology, residue, "C"),
            _atom(topology, residue + 1, "N")]


@pytest.fixture(scope="module")
def opened(cln025):
    """The hairpin with Gly7's psi turned from its native ~15 degrees to 180: the turn is undone."""
    topology, folded = cln025
    return _set_dihedral(topology, folded, _psi(topology, 7), 180.0)


@pytest.fixture(scope="module")
def extended(cln025):
    """Every phi -140 and psi 135 degrees (beta strand), prolines' phi kept."""
    topology, xyz = cln025
    for residue in range(1, 11):
        if residue > 1 and residue != 4:
            xyz = _set_dihedral(topology, xyz, _phi(topology, residue), -140.0)
        if residue < 10:
            xyz = _set_dihedral(topology, xyz, _psi(topology, residue), 135.0)
    return xyz


def test_the_dihedral_helper_sets_the_angle_and_keeps_bonds(cln025, opened):
    topology, folded = cln025
    psi = float(dihedrals(opened[None], np.array([_psi(topology, 7)]))[0, 0])
    assert np.cos(psi) == pytest.approx(-1.0, abs=1e-6)
    bonds = np.array([(a.index, b.index) for a, b in topology.bonds()])
    lengths = lambda x: np.linalg.norm(x[bonds[:, 0]] - x[bonds[:, 1]], axis=1)  # noqa: E731
    np.testing.assert_allclose(lengths(opened), lengths(folded), atol=1e-9)


def test_the_folded_structure_is_folded(cln025):
    topology, folded = cln025
    assert ca_rmsd(folded, topology, folded)[0] == pytest.approx(0.0, abs=1e-6)
    assert folded_mask(folded[None], topology, folded).tolist() == [True]
    assert native_contacts_fraction(folded, topology, folded)[0] > 0.99


def test_rigid_motion_keeps_it_folded(cln025):
    topology, folded = cln025
    theta = 1.1
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    moved = folded @ rotation.T + np.array([3.0, -2.0, 1.0])
    assert ca_rmsd(moved, topology, folded)[0] == pytest.approx(0.0, abs=1e-6)
    assert native_contacts_fraction(moved, topology, folded)[0] > 0.99


def test_opened_and_extended_chains_are_not_folded(cln025, opened, extended):
    topology, folded = cln025
    rmsd = ca_rmsd(np.stack([opened, extended]), topology, folded)
    assert rmsd[0] > 0.25 and rmsd[1] > 0.5, rmsd
    assert not folded_mask(np.stack([opened, extended]), topology, folded).any()
    q = native_contacts_fraction(np.stack([folded, opened, extended]), topology, folded)
    assert q[0] > 0.99 and q[1] < 0.3 and q[2] < 0.1, q


def test_folded_fraction_counts_frames(cln025, opened, extended):
    topology, folded = cln025
    frames = np.stack([folded, opened, folded, extended])
    assert folded_fraction(frames, topology, folded) == 0.5
    # the cutoff is the boundary: a frame exactly at it is folded, just beyond it is not
    rmsd = float(ca_rmsd(opened, topology, folded)[0])
    assert folded_mask(opened, topology, folded, cutoff=rmsd + 1e-6).tolist() == [True]
    assert folded_mask(opened, topology, folded, cutoff=rmsd - 1e-6).tolist() == [False]


def test_small_thermal_noise_stays_folded_and_large_does_not(cln025):
    topology, folded = cln025
    rng = np.random.default_rng(7)
    small = folded + rng.normal(scale=0.03, size=(20, *folded.shape))  # ~0.05 nm RMSD
    large = folded + rng.normal(scale=0.3, size=(20, *folded.shape))   # ~0.5 nm RMSD
    assert folded_mask(small, topology, folded).all()
    assert not folded_mask(large, topology, folded).any()
    assert FOLDED_CA_RMSD == 0.2


def test_a_calpha_cg_trajectory_gives_the_atomistic_answer(cln025, opened, extended):
    topology, folded = cln025
    mapping = Mapping.from_scheme(topology, "ca")
    frames = np.stack([folded, opened, extended])
    cg = mapping.map(frames)
    cg_reference = mapping.map(folded[None])[0]
    np.testing.assert_allclose(ca_rmsd(cg, mapping.cg_topology, cg_reference),
                               ca_rmsd(frames, topology, folded), atol=1e-6)
    with pytest.raises(InputError, match="heavy atoms"):
        native_contacts(mapping.cg_topology, cg_reference)


def test_native_contacts_cross_the_hairpin(cln025):
    topology, folded = cln025
    residues = [a.residue.index for a in topology.atoms()]
    pairs = native_contacts(topology, folded)
    separations = {abs(residues[i] - residues[j]) for i, j in pairs}
    assert min(separations) >= 4 and len(pairs) > 20
    # Tyr2 and Trp9 side chains are packed in the folded structure
    tyr2, trp9 = ({a.index for a in topology.atoms() if a.residue.id == r and a.name not in ("N", "C", "O", "CA")}
                  for r in ("2", "9"))
    assert any((i in tyr2 and j in trp9) or (i in trp9 and j in tyr2) for i, j in pairs)


def test_bad_shapes_raise(cln025):
    topology, folded = cln025
    with pytest.raises(InputError, match="expected"):
        ca_rmsd(folded[:10], topology, folded)
    with pytest.raises(InputError, match="one frame"):
        ca_rmsd(folded, topology, np.stack([folded, folded]))
    with pytest.raises(InputError, match="no frames"):
        folded_fraction(np.zeros((0, *folded.shape)), topology, folded)


def test_equivalent_atoms_named_the_other_way_keep_the_native_contacts(cln025):
    """Frames of a 300 K run with Tyr2's ring edges (CD1/CD2, CE1/CE2 and their hydrogens) named the
    other way round are the same structures: Q must not change (named as given, it changes by up to
    0.02 per frame here), while a different chi1 still breaks contacts."""
    topology, folded = cln025
    frames = io.load_trajectory(io.bundled("chignolin/reference/cln025_000.xtc"), topology).xyz[::5]
    renamed = frames.copy()
    for a, b in (("CD1", "CD2"), ("CE1", "CE2"), ("HD1", "HD2"), ("HE1", "HE2")):
        i, j = _atom(topology, 2, a), _atom(topology, 2, b)
        renamed[:, [i, j]] = frames[:, [j, i]]
    as_named = native_contacts_fraction(renamed, topology, folded, symmetric=False)
    assert np.abs(as_named - native_contacts_fraction(frames, topology, folded, symmetric=False)).max() > 0.01
    np.testing.assert_allclose(native_contacts_fraction(renamed, topology, folded),
                               native_contacts_fraction(frames, topology, folded), atol=1e-12)
    chi1 = [_atom(topology, 2, name) for name in ("N", "CA", "CB", "CG")]
    rotated = _set_dihedral(topology, folded, chi1, float(np.degrees(dihedrals(folded[None], np.array([chi1]))[0, 0])) + 120.0)
    assert native_contacts_fraction(rotated, topology, folded)[0] < 0.95
