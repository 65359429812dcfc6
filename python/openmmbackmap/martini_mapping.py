"""Martini 2.2 (and ElNeDyn 2.2) and Martini 3 beads, placed as martinize2 places them.

Proteins and the small molecules vermouth knows go through vermouth's own pipeline, the one
``martinize2`` runs: the residue graphs are matched to vermouth's reference blocks (which
translates CHARMM/AMBER/PDB atom names, e.g. ``H`` vs ``HN`` or ``HB2/HB3`` vs ``HB1/HB2``,
by graph isomorphism rather than by a name table), termini are recognised as modifications,
and the ``.map`` files vermouth ships give the beads and weights. Bead order is therefore
martinize2's, so a martinize2 CG system and its atomistic source line up.

Lipids have ``.map`` files in vermouth's data (Martini 2.2) but no reference blocks, so
vermouth cannot match them by graph; their atoms are matched by name, as the files' CHARMM
names, and a missing atom is an error naming the residue and the atom.

Bead centres are mass weighted (vermouth's ``center_weight "mass"`` for these force fields)
with OpenMM's element masses; an atom listed for several beads is shared between them in
proportion to how often it is listed, and an atom listed with ``!`` belongs to the bead with
weight zero, as vermouth reads the format.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
from pathlib import Path

import networkx as nx
import numpy as np
import openmm.app as app
import openmm.unit as unit

from openmmbackmap.errors import MappingError
from openmmbackmap.io import describe_residue

#: Residues that a Martini protein mapping leaves out: water and ions are Martini solvent,
#: mapped several molecules to one bead, not residue by residue.
SOLVENT_RESIDUES = frozenset(
    {"HOH", "WAT", "SOL", "TIP3", "TIP3P", "TIP4P", "TIP5P", "SPC", "T3P", "T4P",
     "NA", "CL", "K", "MG", "CA", "ZN", "NA+", "CL-", "K+", "SOD", "CLA", "POT", "CAL"}
)

#: Force fields whose lipid .map files serve a scheme (Martini 2.2 lipids are the same in all).
_LIPID_TARGETS = {
    "martini22": ("martini22", "elnedyn", "elnedyn22", "martini22p", "elnedyn22p"),
    "elnedyn22": ("elnedyn22", "elnedyn", "martini22", "martini22p", "elnedyn22p"),
    "martini3001": ("martini3001",),
}


@functools.lru_cache(maxsize=None)
def _vermouth_data() -> tuple[dict, dict]:
    """vermouth's force fields and mappings (about 3 s to read, so read once)."""
    import vermouth
    from vermouth.forcefield import find_force_fields
    from vermouth.map_input import combine_mappings, generate_all_self_mappings, read_mapping_directory

    force_fields = find_force_fields(os.path.join(vermouth.DATA_PATH, "force_fields"))
    mappings = read_mapping_directory(os.path.join(vermouth.DATA_PATH, "mappings"), force_fields)
    combine_mappings(mappings, generate_all_self_mappings(force_fields.values()))
    return force_fields, mappings


def martini_beads(topology: app.Topology, force_field: str, from_ff: str | None = None) -> list:
    """Martini beads for every residue of ``topology`` except water and ions.

    Parameters
    ----------
    topology
        Atomistic topology with bonds (hydrogens optional, as for martinize2).
    force_field
        vermouth force field name: ``"martini3001"`` or ``"martini22"``.
    from_ff
        Naming of the atomistic input for vermouth: ``"charmm"`` or ``"amber"``. By default
        ``"amber"`` when a residue name only AMBER uses (HIE, CYX...) is present, else ``"charmm"``.

    Returns
    -------
    list of Bead
        In martinize2's order for each molecule, molecules in topology order.

    Raises
    ------
    MappingError
        For a residue with no Martini mapping, a lipid missing an atom its .map file names,
        or a topology without bonds.
    """
    from openmmbackmap.mapping import Bead

    force_fields, mappings = _vermouth_data()
    if force_field not in force_fields:
        raise MappingError(f"vermouth has no force field {force_field!r}")
    from_ff = from_ff or "charmm"
    if from_ff not in force_fields:
        raise MappingError(f"unknown source naming {from_ff!r}; use 'charmm' or 'amber'")
    known = set(force_fields[from_ff].blocks)
    residues = [r for r in topology.residues() if r.name.upper() not in SOLVENT_RESIDUES]
    graph_residues = [r for r in residues if r.name in known]
    named_residues = [r for r in residues if r.name not in known]

    beads: list[tuple[int, Bead]] = []  # (sort key: first atom index of the molecule, bead)
    if graph_residues:
        if topology.getNumBonds() == 0:
            raise MappingError(
                "Martini mapping of proteins matches residue graphs, so it needs the topology's bonds; "
                "read the structure from a PDB/PDBx file (standard residues get bonds from templates) "
                "or a topology file"
            )
        beads.extend(_beads_from_vermouth(topology, graph_residues, force_fields, mappings, from_ff, force_field))
    for residue in named_residues:
        key = min(atom.index for atom in residue.atoms())
        beads.extend((key, bead) for bead in _beads_from_map_file(residue, force_field, topology))
    beads.sort(key=lambda item: item[0])  # stable: keeps martinize2's order inside a molecule
    return [bead for _, bead in beads]


#: Protonation variants, told apart by their hydrogens: readers such as OpenMM's PDBFile
#: rename HIE/HID/ASH/GLH to the standard names, so vermouth must be told which block to use.
_PROTONATION_VARIANTS = {
    "HIS": ((("HD1", "HE2"), ("HSP", "HIP")), (("HD1",), ("HSD", "HID")), (("HE2",), ("HSE", "HIE"))),
    "ASP": ((("HD2",), ("ASPP", "ASH")), (("HD1",), ("ASPP", "ASH"))),
    "GLU": ((("HE2",), ("GLUP", "GLH")), (("HE1",), ("GLUP", "GLH"))),
}


def _vermouth_residue_name(residue: app.topology.Residue, known: set[str]) -> str:
    """The block name vermouth should use: the protonation variant its force field knows."""
    names = {atom.name for atom in residue.atoms()}
    for hydrogens, variants in _PROTONATION_VARIANTS.get(residue.name, ()):
        if all(h in names for h in hydrogens):
            return next((v for v in variants if v in known), residue.name)
    return residue.name


def _beads_from_vermouth(topology, residues, force_fields, mappings, from_ff, to_ff):
    import vermouth

    from openmmbackmap.mapping import Bead

    positions_unknown = np.zeros(3)  # vermouth needs a position; the centres are ours to compute
    molecule = vermouth.molecule.Molecule(force_field=force_fields[from_ff])
    selected = {atom.index for residue in residues for atom in residue.atoms()}
    for residue in residues:
        for atom in residue.atoms():
            molecule.add_node(
                atom.index,
                atomname=atom.name,
                resname=_vermouth_residue_name(residue, set(force_fields[from_ff].blocks)),
                # residue.index + 1 keeps residues distinct whatever ids and insertion codes the file had
                resid=residue.index + 1,
                insertion_code="",
                chain=str(residue.chain.id),
                element=atom.element.symbol if atom.element is not None else None,
                position=positions_unknown,
                atomid=atom.index + 1,
                omm_index=atom.index,
                omm_residue=residue.index,
            )
    molecule.add_edges_from(
        (a.index, b.index) for a, b in topology.bonds() if a.index in selected and b.index in selected
    )
    system = vermouth.System(force_field=force_fields[from_ff])
    for component in sorted(nx.connected_components(molecule), key=min):
        system.add_molecule(molecule.subgraph(component))
    # vermouth logs each repaired atom at INFO/WARNING level; silence it for library use
    logger = logging.getLogger("vermouth")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        vermouth.RepairGraph(delete_unknown=False, include_graph=False).run_system(system)
        vermouth.CanonicalizeModifications().run_system(system)
        vermouth.DoMapping(
            mappings=mappings, to_ff=force_fields[to_ff], delete_unknown=False,
            attribute_keep=("chain", "resname", "omm_residue"), attribute_must=("resname",),
        ).run_system(system)
    except Exception as exc:  # vermouth raises plain ValueError/KeyError with terse messages
        raise MappingError(f"vermouth could not map the topology to {to_ff}: {exc}") from exc
    finally:
        logger.setLevel(level)

    masses = np.array(
        [a.element.mass.value_in_unit(unit.dalton) if a.element is not None else 0.0 for a in topology.atoms()]
    )
    result = []
    for cg_molecule in system.molecules:
        molecule_beads = []
        for node in cg_molecule.nodes.values():
            graph = node.get("graph")
            if graph is None:
                continue
            weights_by_key = node.get("mapping_weights", {})
            atoms, weights = [], []
            for key, atom in graph.nodes.items():
                index = atom.get("omm_index")
                if index is None:  # an atom vermouth added that the topology lacks (e.g. hydrogens)
                    continue
                atoms.append(index)
                weights.append(weights_by_key.get(key, 1.0) * masses[index])
            if not atoms or sum(weights) <= 0:
                continue  # martinize2 leaves such a bead without position too
            residue_index = graph.nodes[next(iter(graph.nodes))]["omm_residue"]
            molecule_beads.append(Bead(node["atomname"], int(residue_index), tuple(atoms), tuple(weights)))
        if molecule_beads:
            # molecules sort by their first atom; beads keep martinize2's order inside a molecule
            key = min(min(bead.atom_indices) for bead in molecule_beads)
            result.extend((key, bead) for bead in molecule_beads)
    # Atoms a map leaves out (hydrogens in Martini 2.2) are fine; a residue with no bead is not.
    residues_with_beads = {bead.residue_index for _, bead in result}
    for residue in residues:
        if residue.index not in residues_with_beads:
            raise MappingError(
                f"no {to_ff} mapping for {describe_residue(residue)}"
            )
    return result


@functools.lru_cache(maxsize=None)
def _lipid_map_files() -> dict[tuple[str, str], Path]:
    """(residue name, target force field) -> vermouth .map file, for files vermouth itself skips."""
    import vermouth

    found = {}
    for path in sorted(Path(vermouth.DATA_PATH, "mappings").rglob("*.map")):
        sections = _read_map_sections(path)
        for name in sections.get("molecule", []):
            for target in sections.get("to", []):
                found.setdefault((name, target), path)
    return found


def _read_map_sections(path: Path) -> dict[str, list[str]]:
    """Lines of each ``[ section ]`` of a backward-style .map file, comments removed."""
    sections: dict[str, list[str]] = collections.defaultdict(list)
    current = None
    for line in path.read_text().splitlines():
        line = line.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            current = line.strip("[] ").lower()
            continue
        if current is not None:
            sections[current].append(line)
    return sections


def read_map_file(path: str | os.PathLike) -> tuple[str, list[str], dict[str, dict[str, float]]]:
    """Read a Martini ``.map`` file (backward format).

    Returns
    -------
    molecule
        The residue name.
    bead_names
        Bead order ([ martini ] section, else order of first appearance).
    weights
        ``{bead: {atom name: weight}}`` as vermouth computes them: an atom listed for several
        beads is split in proportion to the listings; ``!bead`` keeps it with weight zero.
    """
    path = Path(path)
    sections = _read_map_sections(path)
    if not sections.get("molecule") or not sections.get("atoms"):
        raise MappingError(f"{path}: not a .map file (needs [ molecule ] and [ atoms ] sections)")
    molecule = sections["molecule"][0].split()[0]
    weights: dict[str, dict[str, float]] = {}
    order: list[str] = []
    for line in sections["atoms"]:
        fields = line.split()
        if len(fields) < 2:
            raise MappingError(f"{path}: [ atoms ] line {line!r} needs an index and an atom name")
        atom, targets = fields[1], fields[2:]  # an atom with no bead belongs to none
        counted = collections.Counter(t for t in targets if not t.startswith("!"))
        total = sum(counted.values())
        for target in targets:
            bead = target.lstrip("!")
            if bead not in order:
                order.append(bead)
            weights.setdefault(bead, {})[atom] = counted[bead] / total if counted[bead] else 0.0
    listed = " ".join(sections.get("martini", [])).split()
    bead_names = listed or order
    return molecule, bead_names, weights


def _beads_from_map_file(residue: app.topology.Residue, force_field: str, topology: app.Topology):
    files = _lipid_map_files()
    path = next((files[(residue.name, t)] for t in _LIPID_TARGETS.get(force_field, (force_field,))
                 if (residue.name, t) in files), None)
    if path is None:
        raise MappingError(
            f"no {force_field} mapping for {describe_residue(residue)}: "
            "vermouth ships none; give your own with --mapping"
        )
    return beads_from_map_file(path, residue, topology)


def beads_from_map_file(path: str | os.PathLike, residue: app.topology.Residue, topology: app.Topology) -> list:
    """Beads of one residue from a .map file, matching atoms by name (mass-weighted centres).

    Raises
    ------
    MappingError
        If the residue lacks an atom that the file maps (the message names both).
    """
    from openmmbackmap.mapping import Bead, atom_weights

    path = Path(path)
    _, bead_names, weights = read_map_file(path)
    atoms = {atom.name: atom.index for atom in residue.atoms()}
    beads = []
    for name in bead_names:
        members = weights.get(name, {})
        missing = [a for a in members if a not in atoms]
        if missing:
            raise MappingError(
                f"{path.name}: bead {name} names atom {missing[0]}, which {describe_residue(residue)} does not have"
            )
        indices = [atoms[a] for a in members]
        masses = atom_weights(topology, indices, "mass")
        beads.append(Bead(name, residue.index, tuple(indices), tuple(w * m for w, m in zip(members.values(), masses))))
    return beads
