"""Mapping: builtin schemes, the sparse product, CG topology, serialisation, fingerprints, PBC."""

import json

import numpy as np
import openmm.unit as unit
import pytest

from openmmbackmap import MappingError
from openmmbackmap.mapping import Bead, Mapping, builtin_schemes


def _residue_names(mapping):
    residues = list(mapping.topology.residues())
    return [residues[bead.residue_index].name for bead in mapping.beads]


def test_backbone_scheme_on_alanine_dipeptide_is_the_five_heavy_backbone_atoms(ala2):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "backbone")
    atoms = list(topology.atoms())
    assert [atoms[b.atom_indices[0]].name for b in mapping.beads] == ["C", "N", "CA", "C", "N"]
    assert _residue_names(mapping) == ["ACE", "ALA", "ALA", "ALA", "NME"]
    cg = mapping.map(xyz)
    indices = [b.atom_indices[0] for b in mapping.beads]
    np.testing.assert_array_equal(cg, xyz[:, indices])
    # a chain of bonded beads: C(ACE)-N-CA-C-N(NME)
    assert mapping.bead_bonds.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]


def test_ca_scheme_on_ubiquitin_chains_consecutive_residues(ubiquitin):
    topology, positions = ubiquitin
    mapping = Mapping.from_scheme(topology, "ca")
    assert mapping.n_beads == 76
    assert mapping.bead_bonds.tolist() == [[i, i + 1] for i in range(75)]
    # every atom is reconstructed with its own residue's bead
    atoms = list(topology.atoms())
    owner_residues = [mapping.beads[o].residue_index for o in mapping.atom_owner]
    assert owner_residues == [a.residue.index for a in atoms]
    # bead masses are residue masses
    residue_mass = [sum(a.element.mass.value_in_unit(unit.dalton) for a in r.atoms()) for r in topology.residues()]
    np.testing.assert_allclose(mapping.bead_masses, residue_mass)


def test_residue_com_is_the_mass_weighted_centre(ala2):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "residue_com")
    assert _residue_names(mapping) == ["ACE", "ALA", "NME"]
    masses = np.array([a.element.mass.value_in_unit(unit.dalton) for a in topology.atoms()])
    for bead, centre in zip(mapping.beads, np.moveaxis(mapping.map(xyz.astype(np.float64)), 1, 0)):
        idx = list(bead.atom_indices)
        expected = (xyz[:, idx].astype(np.float64) * masses[idx, None]).sum(1) / masses[idx].sum()
        np.testing.assert_allclose(centre, expected, atol=1e-9)
    assert mapping.bead_masses.sum() == pytest.approx(masses.sum())


def test_heavy_com_keeps_hydrogens_as_members_without_weight(ala2):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "heavy_com")
    atoms = list(topology.atoms())
    for bead in mapping.beads:
        for index, weight in zip(bead.atom_indices, bead.weights):
            assert (weight == 0) == (atoms[index].element.symbol == "H")
    moved = xyz.copy()
    hydrogens = [a.index for a in atoms if a.element.symbol == "H"]
    moved[:, hydrogens] += 0.3  # moving hydrogens must not move heavy-atom centres
    np.testing.assert_allclose(mapping.map(moved), mapping.map(xyz), atol=1e-6)


def test_map_is_one_product_equal_to_a_frame_loop_and_keeps_shapes_and_dtype(ala2):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "residue_com")
    cg = mapping.map(xyz)
    assert cg.shape == (len(xyz), 3, 3) and cg.dtype == np.float32
    loop = np.stack([mapping.matrix @ frame.astype(np.float64) for frame in xyz])
    np.testing.assert_allclose(cg, loop, atol=1e-5)
    single = mapping.map(xyz[0].astype(np.float64))
    assert single.shape == (3, 3) and single.dtype == np.float64
    quantity = mapping.map(unit.Quantity(xyz[0] * 10.0, unit.angstrom))
    np.testing.assert_allclose(quantity, single, atol=1e-5)


def test_map_rejects_wrong_atom_count_and_nan_naming_the_atom(ala2):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "ca")
    with pytest.raises(MappingError, match="21 atoms but the mapping's topology has 22"):
        mapping.map(xyz[:, :21])
    bad = xyz[:3].copy()
    bad[2, 8, 1] = np.nan
    with pytest.raises(MappingError, match=r"frame 2 .* atom CA \(index 8\) of residue ALA 2"):
        mapping.map(bad)


def test_molecules_split_by_the_box_are_made_whole_before_mapping(ala2):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "residue_com")
    box = np.diag([2.0, 2.0, 2.0]).astype(np.float32)
    whole = xyz[:5] + 1.0  # inside the box
    wrapped = whole.copy()
    wrapped[:, 10:] -= box[0]  # part of the molecule jumps to the neighbouring image
    expected = mapping.map(whole)
    np.testing.assert_allclose(mapping.map(wrapped, unitcell_vectors=box), expected, atol=1e-5)
    # without the box the split molecule maps to nonsense: the test above is not vacuous
    assert np.abs(mapping.map(wrapped) - expected).max() > 0.1


def test_cg_topology_mirrors_residues_and_bonds(ubiquitin):
    topology, _ = ubiquitin
    mapping = Mapping.from_scheme(topology, "martini3")
    cg = mapping.cg_topology
    assert cg.getNumAtoms() == mapping.n_beads
    assert cg.getNumResidues() == topology.getNumResidues()
    assert [r.name for r in cg.residues()] == [r.name for r in topology.residues()]
    assert cg.getNumBonds() == len(mapping.bead_bonds)
    assert [a.name for a in cg.atoms()][:4] == ["BB", "SC1", "BB", "SC1"]  # MET, GLN


def test_serialisation_round_trips_and_fingerprint_is_content(tmp_path, ala2):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "heavy_com")
    for name in ("m.json", "m.yaml"):
        path = mapping.save(tmp_path / name)
        loaded = Mapping.load(path)
        assert loaded.fingerprint == mapping.fingerprint
        assert loaded.to_json() == mapping.to_json()
        np.testing.assert_allclose(loaded.map(xyz), mapping.map(xyz))
        assert Mapping.load(path, topology).topology is topology
    # the same content built again gives the same bytes; different content another fingerprint
    assert Mapping.from_scheme(topology, "heavy_com").to_json() == mapping.to_json()
    assert Mapping.from_scheme(topology, "residue_com").fingerprint != mapping.fingerprint


def test_edited_file_and_foreign_topology_are_refused(tmp_path, ala2, ubiquitin):
    topology, _ = ala2
    path = Mapping.from_scheme(topology, "ca").save(tmp_path / "ca.json")
    data = json.loads(path.read_text())
    data["beads"][0]["weights"] = [2.0]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    with pytest.raises(MappingError, match="fingerprint does not match"):
        Mapping.load(edited)
    with pytest.raises(MappingError, match="made for a topology with 3 residues; this one has 76"):
        Mapping.load(path, ubiquitin[0])


def test_invalid_beads_are_rejected(ala2):
    topology, _ = ala2
    with pytest.raises(MappingError, match="bead 0 \\(X\\) has no atoms"):
        Mapping(topology, [Bead("X", 0, (), ())])
    with pytest.raises(MappingError, match="names atom index 99"):
        Mapping(topology, [Bead("X", 0, (99,), (1.0,))])
    with pytest.raises(MappingError, match="sum to zero"):
        Mapping(topology, [Bead("X", 0, (1,), (0.0,))])
    with pytest.raises(MappingError, match="negative"):
        Mapping(topology, [Bead("X", 0, (1, 2), (1.0, -1.0))])


def test_unknown_scheme_lists_the_builtin_ones(ala2):
    with pytest.raises(MappingError, match="unknown mapping scheme 'martini4'.*backbone"):
        Mapping.from_scheme(ala2[0], "martini4")
    assert {"ca", "backbone", "residue_com", "heavy_com", "martini3", "martini22"} <= set(builtin_schemes())
