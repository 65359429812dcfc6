"""Custom mappings from files: residue templates (YAML/JSON), GROMACS .ndx groups, Martini .map files."""

import json
import textwrap

import numpy as np
import openmm.unit as unit
import pytest

from openmmbackmap import MappingError
from openmmbackmap.mapping import Mapping


def _masses(topology):
    return np.array([a.element.mass.value_in_unit(unit.dalton) for a in topology.atoms()])


def _atom_index(topology, residue, name):
    return next(a.index for a in topology.atoms() if a.residue.name == residue and a.name == name)


TEMPLATE = textwrap.dedent(
    """
    weighting: mass
    residues:
      ACE:
        CAP1: [CH3, C, O, "!H1", "!H2", "!H3"]
      ALA:
        BB: [N, H, CA, HA, C, O]
        SC1: [CB, HB1, HB2, HB3]
      NME:
        CAP2: [N, H, {name: C, weight: 0.5}, "!H1", "!H2", "!H3"]
    """
)


def test_yaml_template_with_excluded_and_weighted_atoms(tmp_path, ala2):
    topology, xyz = ala2
    path = tmp_path / "ala2.yaml"
    path.write_text(TEMPLATE)
    mapping = Mapping.load(path, topology)
    assert [b.name for b in mapping.beads] == ["CAP1", "BB", "SC1", "CAP2"]
    masses = _masses(topology)
    cap2 = mapping.beads[3]
    index = {n: _atom_index(topology, "NME", n) for n in ("N", "H", "C", "H1")}
    expected_weights = {index["N"]: masses[index["N"]], index["H"]: masses[index["H"]],
                        index["C"]: 0.5 * masses[index["C"]], index["H1"]: 0.0}
    weights = dict(zip(cap2.atom_indices, cap2.weights))
    for atom, weight in expected_weights.items():
        assert weights[atom] == pytest.approx(weight)
    # "!" atoms belong to the bead without moving it
    moved = xyz[:2].copy()
    moved[:, index["H1"]] += 1.0
    np.testing.assert_allclose(mapping.map(moved), mapping.map(xyz[:2]), atol=1e-6)


def test_json_template_with_geometric_weights(tmp_path, ala2):
    topology, xyz = ala2
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"weighting": "geometric", "skip": ["ACE", "NME"],
                                "residues": {"ALA": {"BB": ["N", "CA", "C"]}}}))
    mapping = Mapping.load(path, topology)
    idx = [_atom_index(topology, "ALA", n) for n in ("N", "CA", "C")]
    np.testing.assert_allclose(mapping.map(xyz)[:, 0], xyz[:, idx].mean(axis=1), atol=1e-6)


def test_template_errors_name_file_residue_and_atom(tmp_path, ala2):
    topology, _ = ala2
    missing_atom = tmp_path / "missing_atom.yaml"
    missing_atom.write_text(TEMPLATE.replace("[CB, HB1", "[CB, HB9, HB1"))
    with pytest.raises(MappingError, match=r"missing_atom.yaml: bead SC1 of ALA names atom HB9, which residue ALA 2"):
        Mapping.load(missing_atom, topology)
    missing_residue = tmp_path / "missing_residue.yaml"
    missing_residue.write_text("residues:\n  ALA:\n    BB: [CA]\n")
    with pytest.raises(MappingError, match=r"missing_residue.yaml: no entry for residue ACE 1"):
        Mapping.load(missing_residue, topology)
    broken = tmp_path / "broken.yaml"
    broken.write_text("residues: [unclosed\n")
    with pytest.raises(MappingError, match="(?s)broken.yaml' cannot be parsed.*line 1"):
        Mapping.load(broken, topology)
    with pytest.raises(MappingError, match="give the atomistic topology too"):
        Mapping.load(missing_atom)
    with pytest.raises(MappingError, match="does not exist"):
        Mapping.load(tmp_path / "nowhere.yaml", topology)


def test_gromacs_index_groups_become_mass_weighted_beads(tmp_path, ala2):
    topology, xyz = ala2
    path = tmp_path / "beads.ndx"
    path.write_text("[ head ]\n 1  2  3  4\n 5 6\n[ tail ]\n17 18 19 20 21 22\n")
    mapping = Mapping.load(path, topology)
    assert [b.name for b in mapping.beads] == ["head", "tail"]
    masses = _masses(topology)
    idx = np.arange(6)
    expected = (xyz[:, idx] * masses[idx, None]).sum(1) / masses[idx].sum()
    np.testing.assert_allclose(mapping.map(xyz)[:, 0], expected, atol=1e-5)
    bad = tmp_path / "bad.ndx"
    bad.write_text("[ head ]\n1 2\n3 99\n")
    with pytest.raises(MappingError, match=r"bad.ndx, line 3: atom 99 is outside the topology \(1..22\)"):
        Mapping.load(bad, topology)


def test_user_martini_map_file_matches_the_atoms_by_name(tmp_path, ala2):
    topology, xyz = ala2
    path = tmp_path / "ala.map"
    path.write_text(textwrap.dedent(
        """
        [ molecule ]
        ALA
        [ martini ]
        BB SC1
        [ atoms ]
            1     N    BB
            2     H    BB
            3    CA    BB SC1
            4    HA    !BB
            5    CB   SC1
            6     C    BB
            7     O    BB
        """
    ))
    mapping = Mapping.load(path, topology)
    assert [b.name for b in mapping.beads] == ["BB", "SC1"]
    masses = _masses(topology)
    ca, cb = _atom_index(topology, "ALA", "CA"), _atom_index(topology, "ALA", "CB")
    expected = (0.5 * masses[ca] * xyz[:, ca] + masses[cb] * xyz[:, cb]) / (0.5 * masses[ca] + masses[cb])
    np.testing.assert_allclose(mapping.map(xyz)[:, 1], expected, atol=1e-5)
    assert mapping.bead_bonds.tolist() == [[0, 1]]  # CA is shared, so BB and SC1 are bonded
