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

That hairpin is not chignolin's fold: its turn and strand register differ from the crystal
structure of CLN025 (PDB 5AWL), it sits 0.21 nm Calpha RMSD away, and at 300 K it unfolds
within 5 ns. A second stage therefore folds it into the native geometry by restrained,
annealed MD (amber99sbildn + OBC, Reference platform, so a given seed gives the same file
bit for bit). The restraints are the native geometry measured on 5AWL (constants below,
rounded; 5AWL itself is not shipped offline):

- the three cross-strand backbone hydrogen bonds of the crystal, N...O 0.28-0.29 nm:
  Asp3 N-H...O Thr8, Gly7 N-H...O Asp3 and Tyr10 N-H...O Tyr1 (Tyr2/Trp9 are the
  non-hydrogen-bonded pair of the antiparallel strands: their N...O are 0.66 nm);
- every Calpha-Calpha distance between residues three or more apart (28 pairs);
- backbone phi/psi of every residue (the turn is Asp3-Pro4-Glu5-Thr6-Gly7 with Pro4, Glu5
  and Thr6 helical and Gly7 left-handed) and the side-chain chi1 (and aromatic chi2) angles,
  so that Tyr2 and Trp9 pack against each other as in the crystal.

All are flat-bottomed (distances +-0.02-0.04 nm, dihedrals +-20-30 degrees). With the full
force field the mutated hairpin gets trapped on the way (a strand and the turn have to pass
each other), so folding has two stages. Stage 1 keeps only the bonded terms and the restraints
(no nonbonded or solvent forces, so the chain can pass through itself): minimisation, 20 ps at
300 K, then a soft contact repulsion switched on over 20 ps, and minimisation. Stage 2, the full
force field with the restraints: minimisation; 20 ps at 300 K; heating to 400 K over 40 ps,
100 ps at 400 K, cooling to 300 K over 100 ps; the restraints scaled down to zero over 100 ps
at 300 K; 100 ps unrestrained at 300 K; a final minimisation without restraints. The written structure is then checked: every
chiral centre natural, every non-proline peptide bond trans, the native hydrogen bonds below
0.35 nm, and the Calpha distance matrix within 0.1 nm RMS of 5AWL's; the script fails otherwise.

``--check-ns`` then runs that structure unrestrained at 300 K the way the reference data are
made (hydrogen mass 4 amu, 4 fs, LangevinMiddle, CPU platform) and prints the Calpha RMSD to
the written structure and the native hydrogen-bond distances every 100 ps.

Usage (needs pdbfixer, a development dependency)::

    .venv/bin/python examples/make_chignolin_structure.py --out python/openmmbackmap/data/chignolin/cln025.pdb \
        --check-ns 2
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
from openmmbackmap.bench.structural import cis_peptides
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.data import reference_system
from openmmbackmap.geometry import aligned_rmsd, distances, signed_volumes

UBIQUITIN = Path(vermouth.__file__).parent / "tests/data/integration_tests/tier-1/1UBQ/aa.pdb"
#: Natural (L) residues with hydrogens, so that every chiral centre has its four neighbours.
NATURAL = Path(vermouth.__file__).parent / "tests/data/integration_tests/tier-1/1mj5-charmm/aa.pdb"
HAIRPIN = range(4, 14)  # ubiquitin residue numbers kept
MUTATIONS = ["PHE-4-TYR", "VAL-5-TYR", "LYS-6-ASP", "THR-7-PRO", "LEU-8-GLU", "LYS-11-THR", "THR-12-TRP", "ILE-13-TYR"]
SEQUENCE = "TYR TYR ASP PRO GLU THR GLY THR TRP TYR".split()

# Native geometry of CLN025 measured on its crystal structure, PDB 5AWL (heavy atoms), rounded.
#: (donor residue, acceptor residue, N...O distance in nm) of the cross-strand backbone H-bonds.
NATIVE_HBONDS = ((3, 8, 0.287), (7, 3, 0.284), (10, 1, 0.285))
#: (residue i, residue j, Calpha-Calpha distance in nm) for every pair with j - i >= 3.
NATIVE_CA_DISTANCES = (
    (1, 4, 0.92), (1, 5, 1.20), (1, 6, 1.14), (1, 7, 0.92), (1, 8, 0.81), (1, 9, 0.54), (1, 10, 0.55),
    (2, 5, 0.88), (2, 6, 0.80), (2, 7, 0.55), (2, 8, 0.52), (2, 9, 0.44), (2, 10, 0.62), (3, 6, 0.55),
    (3, 7, 0.49), (3, 8, 0.55), (3, 9, 0.64), (3, 10, 0.70), (4, 7, 0.57), (4, 8, 0.82), (4, 9, 0.98),
    (4, 10, 1.08), (5, 8, 0.84), (5, 9, 1.10), (5, 10, 1.19), (6, 9, 0.88), (6, 10, 1.02), (7, 10, 0.94),
)
#: Backbone (phi, psi) in degrees per residue; None where the terminus has no such angle.
NATIVE_BACKBONE = {
    1: (None, 150), 2: (-93, 138), 3: (-76, 134), 4: (-72, -21), 5: (-92, -41),
    6: (-106, -17), 7: (70, 17), 8: (-104, 153), 9: (-81, 133), 10: (-137, None),
}
#: Side-chain dihedrals: (residue, four atom names, degrees, periodicity); a tyrosine ring's
#: chi2 is defined modulo 180 degrees (CD1 and CD2 are equivalent), hence periodicity 2.
NATIVE_CHI = (
    (1, ("N", "CA", "CB", "CG"), -46, 1), (1, ("CA", "CB", "CG", "CD1"), 96, 2),
    (2, ("N", "CA", "CB", "CG"), -67, 1), (2, ("CA", "CB", "CG", "CD1"), 99, 2),
    (3, ("N", "CA", "CB", "CG"), -175, 1), (5, ("N", "CA", "CB", "CG"), -78, 1),
    (6, ("N", "CA", "CB", "OG1"), 63, 1), (8, ("N", "CA", "CB", "OG1"), 56, 1),
    (9, ("N", "CA", "CB", "CG"), -175, 1), (9, ("CA", "CB", "CG", "CD1"), -98, 1),
    (10, ("N", "CA", "CB", "CG"), 69, 1), (10, ("CA", "CB", "CG", "CD1"), 95, 2),
)


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


def _atom_index(topology: app.Topology) -> dict[tuple[int, str], int]:
    return {(int(atom.residue.id), atom.name): atom.index for atom in topology.atoms()}


def _backbone_dihedrals(residue: int, phi: float | None, psi: float | None):
    """(atom names per residue offset, degrees) of the phi and psi given."""
    if phi is not None:
        yield ((residue - 1, "C"), (residue, "N"), (residue, "CA"), (residue, "C")), phi
    if psi is not None:
        yield ((residue, "N"), (residue, "CA"), (residue, "C"), (residue + 1, "N")), psi


def native_restraints(topology: app.Topology) -> list[openmm.Force]:
    """Flat-bottomed restraints towards the native (5AWL) geometry, scaled by the global ``restraint_scale``."""
    index = _atom_index(topology)
    distance = openmm.CustomBondForce(
        "restraint_scale * 0.5 * k * (max(0, r - r0 - tolerance)^2 + max(0, r0 - tolerance - r)^2)")
    distance.addGlobalParameter("restraint_scale", 1.0)
    for name in ("k", "r0", "tolerance"):
        distance.addPerBondParameter(name)
    for donor, acceptor, r0 in NATIVE_HBONDS:
        distance.addBond(index[(donor, "N")], index[(acceptor, "O")], [5000.0, r0, 0.02])
    for i, j, r0 in NATIVE_CA_DISTANCES:
        distance.addBond(index[(i, "CA")], index[(j, "CA")], [5000.0, r0, 0.04])
    # dtheta is wrapped into (-pi/n, pi/n]: a periodicity-2 angle is at its target either way round
    torsion = openmm.CustomTorsionForce(
        "restraint_scale * 0.5 * k * max(0, abs(dtheta) - tolerance)^2;"
        "dtheta = atan2(sin(n * (theta - theta0)), cos(n * (theta - theta0))) / n")
    torsion.addGlobalParameter("restraint_scale", 1.0)
    for name in ("k", "theta0", "tolerance", "n"):
        torsion.addPerTorsionParameter(name)
    for residue, (phi, psi) in NATIVE_BACKBONE.items():
        for atoms, degrees in _backbone_dihedrals(residue, phi, psi):
            torsion.addTorsion(*(index[a] for a in atoms), [500.0, np.radians(degrees), np.radians(20), 1])
    for residue, names, degrees, periodicity in NATIVE_CHI:
        torsion.addTorsion(*(index[(residue, n)] for n in names),
                           [200.0, np.radians(degrees), np.radians(30), periodicity])
    return [distance, torsion]


def _bonded_only(system: openmm.System, topology: app.Topology) -> openmm.System:
    """``system`` without its nonbonded and solvent forces, with a soft contact repulsion instead.

    The repulsion (scaled by the global ``repulsion``, kJ/mol/nm^2) starts at zero, so that the
    chain can pass through itself on its way to the native fold: from the mutated hairpin, the
    full force field traps it (a strand and the turn have to cross each other).
    """
    bonded = openmm.XmlSerializer.clone(system)
    for i in reversed(range(bonded.getNumForces())):
        if isinstance(bonded.getForce(i), (openmm.NonbondedForce, openmm.GBSAOBCForce)):
            bonded.removeForce(i)
    repulsion = openmm.CustomNonbondedForce("repulsion * max(0, radius1 + radius2 - r)^2")
    repulsion.addGlobalParameter("repulsion", 0.0)
    repulsion.addPerParticleParameter("radius")
    for atom in topology.atoms():
        repulsion.addParticle([0.1 if atom.element is app.element.hydrogen else 0.15])
    repulsion.createExclusionsFromBonds([(a.index, b.index) for a, b in topology.bonds()], 3)
    bonded.addForce(repulsion)
    return bonded


def fold(topology: app.Topology, positions: np.ndarray, seed: int) -> np.ndarray:
    """Restrained folding into the native geometry, annealing, release, relaxation; positions in nm.

    Reference platform throughout, so that a seed gives the same structure bit for bit.
    """
    platform = openmm.Platform.getPlatformByName("Reference")
    full = reference_system(topology)
    bonded = _bonded_only(full, topology)
    for system in (bonded, full):
        for force in native_restraints(topology):
            system.addForce(force)

    # Stage 1: bonded terms and restraints only, then the contact repulsion switched on.
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 5 / unit.picosecond, 1 * unit.femtoseconds)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(bonded, integrator, platform)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 5000)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    integrator.step(20_000)
    for strength in np.geomspace(10.0, 1e5, 20):
        context.setParameter("repulsion", float(strength))
        integrator.step(1_000)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 5000)
    positions = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    # Stage 2: the full force field, restrained annealing, release, relaxation.
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtoseconds)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(full, integrator, platform)
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 5000)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed + 1)

    def run(ps: float, temperature: float, scale: float = 1.0) -> None:
        integrator.setTemperature(temperature * unit.kelvin)
        context.setParameter("restraint_scale", scale)
        integrator.step(round(ps / 0.002))

    run(20, 300)
    for temperature in range(310, 401, 10):   # heat: 40 ps
        run(4, temperature)
    run(100, 400)
    for temperature in range(390, 299, -10):  # cool: 100 ps
        run(10, temperature)
    for scale in np.linspace(0.9, 0.0, 10):   # release: 100 ps
        run(10, 300, float(scale))
    run(100, 300, 0.0)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 5000)
    return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def native_geometry(topology: app.Topology, xyz: np.ndarray) -> dict[str, np.ndarray]:
    """Native H-bond N...O distances and the Calpha distance-matrix RMS deviation from 5AWL (nm), per frame."""
    index = _atom_index(topology)
    hbonds = distances(xyz, np.array([[index[(d, "N")], index[(a, "O")]] for d, a, _ in NATIVE_HBONDS]))
    pairs = np.array([[index[(i, "CA")], index[(j, "CA")]] for i, j, _ in NATIVE_CA_DISTANCES])
    native = np.array([r0 for _, _, r0 in NATIVE_CA_DISTANCES])
    return {"hbonds": hbonds, "ca_drms": np.sqrt(((distances(xyz, pairs) - native) ** 2).mean(axis=1))}


def check_folded(topology, positions, natural, natural_ca) -> None:
    """Fail unless chirality, peptide bonds and the native contacts of ``positions`` are right."""
    wrong = wrong_centres(topology, positions, natural, natural_ca)
    if wrong:
        raise SystemExit("wrong stereochemistry after folding: " + "; ".join(f"{r.name}{r.id} {a}" for r, a in wrong))
    cis = cis_peptides(positions[None], TopologyFeatures.from_topology(topology))["total"]
    if cis:
        raise SystemExit(f"{cis} cis non-proline peptide bond(s) after folding")
    geometry = native_geometry(topology, positions[None])
    hbonds, drms = geometry["hbonds"][0], float(geometry["ca_drms"][0])
    labels = [f"N{d}-O{a} {r:.3f}" for (d, a, _), r in zip(NATIVE_HBONDS, hbonds)]
    print(f"native H-bonds (nm): {', '.join(labels)}; Calpha distance-matrix RMSD to 5AWL {drms:.3f} nm")
    if hbonds.max() > 0.35 or drms > 0.1:
        raise SystemExit("the folded structure is not native-like")


def check_md(topology: app.Topology, positions: np.ndarray, ns: float, seed: int) -> None:
    """Unrestrained MD at 300 K as the reference data are run; prints the drift every 100 ps."""
    system = reference_system(topology, hydrogen_mass=4.0)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 4 * unit.femtoseconds)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    ca = np.array([atom.index for atom in topology.atoms() if atom.name == "CA"])
    frames = []
    for block in range(round(ns * 10)):
        integrator.step(25_000)  # 100 ps
        xyz = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        frames.append(xyz)
        rmsd = aligned_rmsd(xyz[None], positions[None], fit_indices=ca)[0]
        geometry = native_geometry(topology, xyz[None])
        print(f"{(block + 1) * 0.1:5.1f} ns: Calpha RMSD {rmsd:.3f} nm, Calpha dRMS to 5AWL "
              f"{geometry['ca_drms'][0]:.3f} nm, H-bonds " + " ".join(f"{r:.2f}" for r in geometry["hbonds"][0]),
              flush=True)
    rmsd = aligned_rmsd(np.array(frames), positions[None], fit_indices=ca)
    print(f"{ns} ns unrestrained at 300 K: Calpha RMSD mean {rmsd.mean():.3f} nm, max {rmsd.max():.3f} nm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--check-ns", type=float, default=0.0,
                        help="then run this many ns unrestrained at 300 K and print the drift (not written)")
    args = parser.parse_args()
    from pdbfixer import PDBFixer

    random.seed(args.seed)  # PDBFixer/Modeller place new hydrogens with Python's random
    ubiquitin = app.PDBFile(str(UBIQUITIN))
    modeller = app.Modeller(ubiquitin.topology, ubiquitin.positions)
    modeller.delete([r for r in modeller.topology.residues() if r.name == "HOH" or int(r.id) not in HAIRPIN])
    buffer = text_io.StringIO()
    app.PDBFile.writeFile(modeller.topology, modeller.positions, buffer, keepIds=True)

    # on the Reference platform, so that the atoms PDBFixer adds (it relaxes them by MD) are the same every run
    fixer = PDBFixer(pdbfile=text_io.StringIO(buffer.getvalue()), platform=openmm.Platform.getPlatformByName("Reference"))
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
    check_native = native_geometry(topology, positions[None])
    print(f"mutated hairpin: Calpha distance-matrix RMSD to 5AWL {check_native['ca_drms'][0]:.3f} nm; folding")
    positions = fold(topology, positions, args.seed)
    check_folded(topology, positions, natural, natural_ca)
    with io.atomic_output(args.out) as temporary:
        with open(temporary, "w") as handle:
            app.PDBFile.writeFile(topology, positions * unit.nanometer, handle, keepIds=True)
    print(f"wrote {args.out}")
    if args.check_ns > 0:
        check_md(topology, positions, args.check_ns, args.seed)


if __name__ == "__main__":
    main()
