"""Candidate atoms are matched to the reference by residue and atom name, spellings normalised."""

import copy

import numpy as np
import openmm.app as app
import pytest

from openmmbackmap import InputError
from openmmbackmap.bench.matching import match_atoms


def _charmm_spelled_copy(topology: app.Topology, order: list[int]) -> app.Topology:
    """The same molecule with CHARMM spellings (HN, HB1-3 renumbered, NME HN) and atoms in another order."""
    atoms = list(topology.atoms())
    renamed = {"H": "HN", "HB1": "HB3", "HB3": "HB1"}
    copy = app.Topology()
    chain = copy.addChain("X")
    new_atoms = {}
    for residue in topology.residues():
        new_residue = copy.addResidue("NMA" if residue.name == "NME" else residue.name, chain)
        for index in [i for i in order if atoms[i].residue is residue]:
            atom = atoms[index]
            new_atoms[index] = copy.addAtom(renamed.get(atom.name, atom.name), atom.element, new_residue)
    for a, b in topology.bonds():
        copy.addBond(new_atoms[a.index], new_atoms[b.index])
    return copy


def test_matching_follows_names_and_parents_not_order(ala2):
    topology, xyz = ala2
    rng = np.random.default_rng(5)
    order = rng.permutation(topology.getNumAtoms()).tolist()
    candidate = _charmm_spelled_copy(topology, order)
    match = match_atoms(topology, candidate)
    assert len(match.reference) == 22
    cand_atoms, ref_atoms = list(candidate.atoms()), list(topology.atoms())
    for r, c in zip(match.reference, match.candidate):
        # heavy atoms pair with the same atom; hydrogens with a hydrogen of the same parent
        assert cand_atoms[c].element == ref_atoms[r].element
        assert cand_atoms[c].residue.index == ref_atoms[r].residue.index
    heavy = [(ref_atoms[r].name, cand_atoms[c].name) for r, c in zip(match.reference, match.candidate) if ref_atoms[r].element.symbol != "H"]
    assert all(a == b for a, b in heavy)


def test_heavy_only_and_unmatched_atoms_are_listed(ala2, ubiquitin):
    topology, _ = ala2
    modeller = app.Modeller(topology, [(0, 0, 0)] * 22)
    modeller.delete([a for a in modeller.topology.atoms() if a.element.symbol == "H"])
    heavy_candidate = modeller.topology
    assert len(match_atoms(topology, heavy_candidate, heavy_only=True).reference) == 10
    with pytest.raises(InputError, match=r"12 atoms cannot be matched.*reference H1 of residue ACE 1"):
        match_atoms(topology, heavy_candidate, candidate_source="tool.pdb")
    modeller.delete([a for a in modeller.topology.atoms() if a.name == "CB"])
    with pytest.raises(InputError, match=r"tool.pdb: 1 atoms cannot be matched.*reference CB of residue ALA 2"):
        match_atoms(topology, modeller.topology, heavy_only=True, candidate_source="tool.pdb")
    with pytest.raises(InputError, match="76 residues, the reference has 3"):
        match_atoms(topology, ubiquitin[0])


def test_protonation_variants_match_their_parent_residue_and_others_do_not(ala2, ubiquitin):
    topology, _ = ubiquitin
    renamed = copy.deepcopy(topology)  # never rename residues of the shared fixture
    histidine = next(r for r in renamed.residues() if r.name == "HIS")
    histidine.name = "HSD"
    assert len(match_atoms(topology, renamed).reference) == topology.getNumAtoms()
    histidine.name = "ALX"
    with pytest.raises(InputError, match=r"residue ALX 68 .* stands where the reference has residue HIS 68"):
        match_atoms(topology, renamed)
