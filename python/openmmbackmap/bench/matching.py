"""Matching a candidate's atoms to the reference's, by residue and atom name.

Backmapping tools write their own atom orders and force-field spellings (CHARMM's ``HN`` and
``HSD``, AMBER's ``HIE``, ``OT1``/``OT2`` for terminal oxygens...). Before anything is scored,
each reference atom is paired with one candidate atom:

- residues pair up in order, chain by chain; their names must agree after normalisation
  (protonation variants count as the parent residue: HID/HIE/HIP/HSD/HSE/HSP -> HIS, ...);
- heavy atoms pair by name after normalisation (OT1 -> O, OT2/O2 -> OXT, ILE CD -> CD1);
- hydrogens pair through their parent heavy atom: the hydrogens bonded to a matched heavy
  atom pair in name order, so ``HN``/``H`` or ``HB1,HB2``/``HB2,HB3`` line up without a
  name table for every force field.

An atom that cannot be matched is an error listing the atoms, never a silent drop. With
``heavy_only=True`` hydrogens are left out on both sides (for tools that write none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openmm.app as app

from openmmbackmap.errors import InputError
from openmmbackmap.io import describe_residue

#: Residue names that are the same residue for scoring.
RESIDUE_ALIASES = {
    "HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "HISD": "HIS",
    "HISE": "HIS", "HISH": "HIS", "CYX": "CYS", "CYM": "CYS", "ASH": "ASP", "ASPP": "ASP", "GLH": "GLU",
    "GLUP": "GLU", "LYN": "LYS", "LSN": "LYS", "NMA": "NME",
}
#: Heavy-atom spellings that name the same atom.
ATOM_ALIASES = {"OT1": "O", "O1": "O", "OT2": "OXT", "O2": "OXT", "OC1": "O", "OC2": "OXT"}
_RESIDUE_ATOM_ALIASES = {("ILE", "CD"): "CD1", ("NME", "CH3"): "C", ("NME", "HN"): "H"}


@dataclass(frozen=True)
class AtomMatch:
    """Paired atom indices: ``candidate_xyz[:, match.candidate]`` lines up with ``reference_xyz[:, match.reference]``."""

    reference: np.ndarray
    candidate: np.ndarray

    def reference_topology(self, topology: app.Topology) -> app.Topology:
        """The reference topology restricted to the matched atoms (all of them unless ``heavy_only``)."""
        if len(self.reference) == topology.getNumAtoms():
            return topology
        keep = set(self.reference.tolist())
        modeller = app.Modeller(topology, [(0, 0, 0)] * topology.getNumAtoms())
        modeller.delete([a for a in modeller.topology.atoms() if a.index not in keep])
        return modeller.topology


def _residue_name(name: str) -> str:
    return RESIDUE_ALIASES.get(name.upper(), name.upper())


def _heavy_name(residue: str, name: str) -> str:
    return _RESIDUE_ATOM_ALIASES.get((residue, name), ATOM_ALIASES.get(name, name))


def _is_hydrogen(atom: app.topology.Atom) -> bool:
    if atom.element is not None:
        return atom.element.symbol == "H"
    return atom.name.lstrip("0123456789").startswith("H")


def match_atoms(
    reference: app.Topology,
    candidate: app.Topology,
    *,
    heavy_only: bool = False,
    candidate_source: str = "candidate",
) -> AtomMatch:
    """Pair every reference atom with a candidate atom (see the module docstring for the rules).

    Parameters
    ----------
    reference, candidate
        Topologies of the reference and of the backmapped candidate.
    heavy_only
        Match heavy atoms only (both sides' hydrogens are left out).
    candidate_source
        Name of the candidate (its file) for error messages.

    Raises
    ------
    InputError
        If the residues differ in number or name, or atoms are left unmatched; the message
        lists them (up to 20).
    """
    ref_residues = list(reference.residues())
    cand_residues = list(candidate.residues())
    if len(ref_residues) != len(cand_residues):
        raise InputError(
            f"{candidate_source}: {len(cand_residues)} residues, the reference has {len(ref_residues)}"
        )
    ref_indices, cand_indices, unmatched = [], [], []
    for ref_residue, cand_residue in zip(ref_residues, cand_residues):
        name = _residue_name(ref_residue.name)
        if _residue_name(cand_residue.name) != name:
            raise InputError(
                f"{candidate_source}: {describe_residue(cand_residue)} stands where the reference has "
                f"{describe_residue(ref_residue)}"
            )
        cand_heavy = {_heavy_name(name, a.name): a for a in cand_residue.atoms() if not _is_hydrogen(a)}
        pairs = []
        for atom in ref_residue.atoms():
            if _is_hydrogen(atom):
                continue
            partner = cand_heavy.pop(_heavy_name(name, atom.name), None)
            if partner is None:
                unmatched.append(f"reference {atom.name} of {describe_residue(ref_residue)} has no candidate atom")
            else:
                pairs.append((atom, partner))
        unmatched.extend(
            f"candidate {a.name} of {describe_residue(cand_residue)} has no reference atom" for a in cand_heavy.values()
        )
        for ref_atom, cand_atom in pairs:
            ref_indices.append(ref_atom.index)
            cand_indices.append(cand_atom.index)
        if heavy_only:
            continue
        ref_h = _hydrogens_by_parent(reference, ref_residue)
        cand_h = _hydrogens_by_parent(candidate, cand_residue)
        parent_of = {ref_atom.index: cand_atom.index for ref_atom, cand_atom in pairs}
        parent_of[-1 - ref_residue.index] = -1 - cand_residue.index  # hydrogens without bonds
        for ref_parent, hydrogens in ref_h.items():
            partners = cand_h.pop(parent_of.get(ref_parent, -1), [])
            for k, hydrogen in enumerate(hydrogens):
                if k < len(partners):
                    ref_indices.append(hydrogen.index)
                    cand_indices.append(partners[k].index)
                else:
                    unmatched.append(f"reference {hydrogen.name} of {describe_residue(ref_residue)} has no candidate atom")
            unmatched.extend(
                f"candidate {h.name} of {describe_residue(cand_residue)} has no reference atom" for h in partners[len(hydrogens):]
            )
        for hydrogens in cand_h.values():
            unmatched.extend(f"candidate {h.name} of {describe_residue(cand_residue)} has no reference atom" for h in hydrogens)
    if unmatched:
        shown = "; ".join(unmatched[:20])
        more = f" (and {len(unmatched) - 20} more)" if len(unmatched) > 20 else ""
        raise InputError(f"{candidate_source}: {len(unmatched)} atoms cannot be matched to the reference: {shown}{more}")
    order = np.argsort(ref_indices)
    return AtomMatch(np.asarray(ref_indices)[order], np.asarray(cand_indices)[order])


def _hydrogens_by_parent(topology: app.Topology, residue: app.topology.Residue) -> dict[int, list]:
    """Hydrogens of ``residue`` grouped by the heavy atom they are bonded to, each group in name order."""
    members = {a.index for a in residue.atoms()}
    groups: dict[int, list] = {}
    for a, b in topology.bonds():
        for hydrogen, parent in ((a, b), (b, a)):
            if hydrogen.index in members and _is_hydrogen(hydrogen) and not _is_hydrogen(parent):
                groups.setdefault(parent.index, []).append(hydrogen)
    orphans = [a for a in residue.atoms() if _is_hydrogen(a) and not any(a in g for g in groups.values())]
    if orphans:
        groups[-1 - residue.index] = orphans  # no bonds to follow: these can only match by position in name order
    return {parent: sorted(hs, key=lambda h: h.name) for parent, hs in groups.items()}
