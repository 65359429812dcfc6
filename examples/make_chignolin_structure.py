"""Build a starting structure of chignolin CLN025 (YYDPETGTWY) from a real beta hairpin.

No package ships chignolin. Ubiquitin's N-terminal hairpin (1UBQ residues 4-13, FVKTLTGKTI,
from vermouth's martinize2 test data) has its glycine where CLN025 has its glycine (position
7), so mutating the other residues with PDBFixer keeps a hairpin backbone:

    F4Y V5Y K6D T7P L8E (T9 kept) (G10 kept) K11T T12W I13Y

then PDBFixer adds the missing side-chain atoms, termini and hydrogens (pH 7), and the
structure is minimised with amber99sbildn + OBC implicit solvent. Mutation can build the
wrong stereoisomer (see shared/FACTS.md: a D-threonine appeared that way), and here it does: the
threonine made from K11 comes out with the wrong CB handedness. Every chiral centre is
therefore checked against natural residues (1MJ5 from vermouth's data, hydrogens included:
all L, 2S,3R threonine); a threonine with the wrong CB is mended by swapping its OG1 and CG2
and rebuilding its hydrogens, and the script fails rather than write any other wrong centre.

Usage (needs pdbfixer, a development dependency)::

    .venv/bin/python examples/make_chignolin_structure.py --out python/openmmbackmap/data/chignolin/cln025.pdb
"""

from __future__ import annotations

import argparse
import io as text_io
import random
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import vermouth

from openmmbackmap import io
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.geometry import signed_volumes

UBIQUITIN = Path(vermouth.__file__).parent / "tests/data/integration_tests/tier-1/1UBQ/aa.pdb"
#: Natural (L) residues with hydrogens, so that every chiral centre has its four neighbours.
NATURAL = Path(vermouth.__file__).parent / "tests/data/integration_tests/tier-1/1mj5-charmm/aa.pdb"
HAIRPIN = range(4, 14)  # ubiquitin residue numbers kept
MUTATIONS = ["PHE-4-TYR", "VAL-5-TYR", "LYS-6-ASP", "THR-7-PRO", "LEU-8-GLU", "LYS-11-THR", "THR-12-TRP", "ILE-13-TYR"]
SEQUENCE = "TYR TYR ASP PRO GLU THR GLY THR TRP TYR".split()


def handedness(topology: app.Topology, positions: np.ndarray) -> dict[tuple[str, str], set[float]]:
    """Sign of the signed volume of each chiral centre, grouped by (residue name, atom name)."""
    features = TopologyFeatures.from_topology(topology)
    signs = np.sign(signed_volumes(positions[None], features.chiral_centres))[0]
    grouped: dict[tuple[str, str], set[float]] = {}
    for row, sign in zip(features.chiral_centres, signs):
        grouped.setdefault((features.residue_names[row[0]], features.atom_names[row[0]]), set()).add(float(sign))
    return grouped


def minimise(forcefield: app.ForceField, topology: app.Topology, positions: np.ndarray):
    """Energy-minimised positions (nm) and energy (kJ/mol) in amber99sbildn + OBC."""
    system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 5000)
    state = context.getState(getPositions=True, getEnergy=True)
    return (topology, state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
            state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))


def wrong_centres(topology, positions, natural, natural_ca) -> list:
    """(residue, atom name) of every chiral centre whose handedness is not the natural one."""
    features = TopologyFeatures.from_topology(topology)
    signs = np.sign(signed_volumes(positions[None], features.chiral_centres))[0]
    residues = list(topology.residues())
    wrong = []
    for row, sign in zip(features.chiral_centres, signs):
        residue, atom = residues[features.residue_index[row[0]]], features.atom_names[row[0]]
        expected = natural_ca if atom == "CA" else natural.get((residue.name, atom), set())
        if expected != {float(sign)}:
            wrong.append((residue, atom))
    return wrong


def swap_threonine_branches(forcefield, topology, positions, residues):
    """Swap OG1 and CG2 of the given threonines and rebuild their side-chain hydrogens."""
    positions = positions.copy()
    for residue in residues:
        atoms = {a.name: a.index for a in residue.atoms()}
        positions[[atoms["OG1"], atoms["CG2"]]] = positions[[atoms["CG2"], atoms["OG1"]]]
    modeller = app.Modeller(topology, positions * unit.nanometer)
    names = {(r.index, n) for r in residues for n in ("HB", "HG1", "HG21", "HG22", "HG23")}
    modeller.delete([a for a in modeller.topology.atoms() if (a.residue.index, a.name) in names])
    modeller.addHydrogens(forcefield, pH=7.0, platform=openmm.Platform.getPlatformByName("Reference"))
    return modeller.topology, np.asarray(modeller.positions.value_in_unit(unit.nanometer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    from pdbfixer import PDBFixer

    random.seed(args.seed)  # PDBFixer/Modeller place new hydrogens with Python's random
    ubiquitin = app.PDBFile(str(UBIQUITIN))
    modeller = app.Modeller(ubiquitin.topology, ubiquitin.positions)
    modeller.delete([r for r in modeller.topology.residues() if r.name == "HOH" or int(r.id) not in HAIRPIN])
    buffer = text_io.StringIO()
    app.PDBFile.writeFile(modeller.topology, modeller.positions, buffer, keepIds=True)

    fixer = PDBFixer(pdbfile=text_io.StringIO(buffer.getvalue()))
    fixer.applyMutations(MUTATIONS, "A")
    fixer.findMissingResidues()
    fixer.missingResidues = {}
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=args.seed)
    fixer.addMissingHydrogens(7.0)
    for number, residue in enumerate(fixer.topology.residues(), start=1):
        residue.id = str(number)
    names = [r.name for r in fixer.topology.residues()]
    if names != SEQUENCE:
        raise SystemExit(f"built {names}, expected {SEQUENCE}")

    reference_topology, reference_positions = io.load_topology(NATURAL)
    natural = handedness(reference_topology, reference_positions)
    natural_ca = set().union(*(signs for (_, atom), signs in natural.items() if atom == "CA"))
    forcefield = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
    topology, positions = fixer.topology, np.asarray(fixer.positions.value_in_unit(unit.nanometer))
    for attempt in range(2):
        topology, positions, energy = minimise(forcefield, topology, positions)
        wrong = wrong_centres(topology, positions, natural, natural_ca)
        if not wrong:
            break
        if attempt == 1 or any(not (res.name == "THR" and atom == "CB") for res, atom in wrong):
            raise SystemExit("wrong stereochemistry: " + "; ".join(f"{r.name}{r.id} {a}" for r, a in wrong))
        topology, positions = swap_threonine_branches(forcefield, topology, positions, [r for r, _ in wrong])
        print("mended the CB of " + ", ".join(f"THR{r.id}" for r, _ in wrong))
    built = handedness(topology, positions)
    print(f"{topology.getNumAtoms()} atoms, energy {energy:.1f} kJ/mol, all chiral centres natural: {sorted(built)}")
    with io.atomic_output(args.out) as temporary:
        with open(temporary, "w") as handle:
            app.PDBFile.writeFile(topology, positions * unit.nanometer, handle, keepIds=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
