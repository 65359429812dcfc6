"""Martini schemes reproduce martinize2's own CG coordinates shipped in vermouth's test data."""

import copy

import numpy as np
import openmm.app as app
import openmm.unit as unit
import pytest
import vermouth

from openmmbackmap import MappingError, io
from openmmbackmap.martini_mapping import read_map_file
from openmmbackmap.mapping import Mapping

from conftest import VERMOUTH_CASES

# (case folder, our scheme, options): each martinize2 run used the force field named.
CASES = [
    ("tier-1/1UBQ", "martini3", {}),  # martini3001, heavy atoms only, crystal waters ignored
    ("tier-1/lysozyme_prot", "martini3", {}),  # protonated ASPP/GLUP residues (no OpenMM template)
    ("tier-1/1mj5-charmm", "martini3", {}),  # 4,600 atoms with hydrogens, CHARMM names
    ("tier-1/1mj5", "martini3", {"from_ff": "amber"}),  # the same protein with AMBER names (HID/HIE)
    ("tier-0/mini-protein1_betasheet", "martini22", {}),  # Martini 2.2 with hydrogens
    ("tier-0/mini-protein3_trp-cage", "elnedyn22", {}),  # ElNeDyn 2.2: backbone bead on the C-alpha
    ("tier-1/bpti", "elnedyn22", {}),  # disulfide bridges, a protonated ASP50
]


@pytest.mark.parametrize("case, scheme, options", CASES, ids=[c[0].split("/")[1] for c in CASES])
def test_martini_beads_match_martinize2(case, scheme, options):
    topology, positions = io.load_topology(VERMOUTH_CASES / case / "aa.pdb")
    mapping = Mapping.from_scheme(topology, scheme, **options)
    reference, reference_positions = io.load_topology(VERMOUTH_CASES / case / "martinize2" / "cg.pdb")
    assert [a.name for a in reference.atoms()] == [b.name for b in mapping.beads]  # martinize2's bead order
    deviation = np.linalg.norm(mapping.map(positions) - reference_positions, axis=1)
    assert deviation.max() < 0.01, f"worst bead {int(deviation.argmax())}: {deviation.max():.4f} nm"


def _lipid_from_map_file(name: str):
    """A one-residue topology with the atoms of vermouth's Martini 2.2 .map file for a lipid."""
    path = next((VERMOUTH_CASES.parent.parent.parent / "data" / "mappings").rglob(f"{name.lower()}.charmm36.map"))
    molecule, beads, weights = read_map_file(path)
    topology = app.Topology()
    residue = topology.addResidue(molecule, topology.addChain("M"))
    names = list(dict.fromkeys(atom for bead in weights.values() for atom in bead))
    for atom in names:
        topology.addAtom(atom, app.Element.getBySymbol(atom[0]), residue)
    return topology, names, beads, weights


def test_martini22_lipid_beads_follow_the_map_file_weights():
    topology, names, bead_names, weights = _lipid_from_map_file("POPC")
    mapping = Mapping.from_scheme(topology, "martini22")
    assert [b.name for b in mapping.beads] == bead_names[: mapping.n_beads] == ["NC3", "PO4", "GL1", "GL2", "C1A", "D2A", "C3A", "C4A", "C1B", "C2B", "C3B", "C4B"]
    rng = np.random.default_rng(3)
    xyz = rng.normal(size=(len(names), 3))
    cg = mapping.map(xyz)
    masses = np.array([app.Element.getBySymbol(n[0]).mass.value_in_unit(unit.dalton) for n in names])
    # NC3 by hand: C12 and its hydrogens count 3/4 for NC3 (listed "NC3 NC3 NC3 PO4"), the rest fully
    members = weights["NC3"]
    assert members["C12"] == pytest.approx(0.75)
    idx = [names.index(a) for a in members]
    w = np.array(list(members.values())) * masses[idx]
    np.testing.assert_allclose(cg[0], (w[:, None] * xyz[idx]).sum(0) / w.sum(), atol=1e-9)


def test_lipid_missing_an_atom_is_named():
    topology, names, *_ = _lipid_from_map_file("POPC")
    modeller = app.Modeller(topology, np.zeros((len(names), 3)) * unit.nanometer)
    modeller.delete([a for a in modeller.topology.atoms() if a.name == "C12"])
    with pytest.raises(MappingError, match=r"names atom C12, which residue POPC"):
        Mapping.from_scheme(modeller.topology, "martini22")


def test_residue_without_martini_mapping_is_an_error_naming_it(ubiquitin):
    topology = copy.deepcopy(ubiquitin[0])  # never rename residues of the shared fixture
    list(topology.residues())[5].name = "XYZ"
    with pytest.raises(MappingError, match=r"no martini3001 mapping for residue XYZ 6 \(index 5, chain 'A'\)"):
        Mapping.from_scheme(topology, "martini3")


def test_water_and_ions_are_left_to_martini_solvent():
    topology, _ = io.load_topology(VERMOUTH_CASES / "tier-1" / "1UBQ" / "aa.pdb")
    mapping = Mapping.from_scheme(topology, "martini3")
    names = {r.name for r in topology.residues()}
    assert "HOH" in names and mapping.n_beads == 166
    assert vermouth.__version__
