"""Make the training set of the ``gan`` transfer test: short peptides cut from real proteins, simulated.

The transfer test trains one ``gan`` on several molecules and applies it to one it never saw,
chignolin CLN025 (YYDPETGTWY). The training molecules here are hexapeptides cut from crystal
structures that ship with vermouth's test data (ubiquitin 1UBQ, BPTI, hen lysozyme, villin
headpiece), chosen so that between them they hold every residue type of chignolin (Tyr, Asp,
Pro, Glu, Thr, Gly, Trp), a tyrosine at an N and at a C terminus as chignolin has, and
neighbours chignolin does not have: no peptide contains a stretch of chignolin's sequence
longer than two residues (checked below), so what carries over is local chemistry, not the
molecule.

Each fragment keeps the crystal's heavy atoms (so every chiral centre is natural, which is
checked against 1MJ5 as examples/make_chignolin_structure.py does), gets zwitterionic termini
and hydrogens at pH 7 from PDBFixer, and is simulated like the chignolin reference
(:func:`openmmbackmap.data.run_reference_simulation`: amber99sbildn + OBC, 300 K,
LangevinMiddle, hydrogen mass 4 amu, 4 fs) for ``--ns`` ns after 40 ps of equilibration, on the
Reference platform by default (for 75-110 atoms it ran 280-510 ns/day on one core here, the CPU
platform 340-360 on two threads, 255 on one). A peptide whose JSON exists is skipped, so a killed run resumes.

Usage (needs pdbfixer, a development dependency)::

    .venv/bin/python examples/make_transfer_peptides.py --out-dir reference-data/peptides --ns 2 --frame-ps 5
"""

from __future__ import annotations

import argparse
import io as text_io
import sys
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as unit
import vermouth

from openmmbackmap import io
from openmmbackmap.data import REFERENCE_FORCEFIELD, run_reference_simulation

sys.path.insert(0, str(Path(__file__).parent))
from make_chignolin_structure import NATURAL, handedness, wrong_centres  # noqa: E402  (the same chirality check)

SOURCES = Path(vermouth.__file__).parent / "tests/data/integration_tests/tier-1"
#: name: (source structure, first and last residue number, the expected sequence).
PEPTIDES = {
    "bpti_07": ("bpti", 7, 12, "EPPYTG"),
    "bpti_23": ("bpti", 23, 28, "YNAKAG"),
    "lysozyme_18": ("lysozyme", 18, 23, "DNYRGY"),
    "lysozyme_49": ("lysozyme", 49, 54, "GSTDYG"),
    "lysozyme_24": ("lysozyme", 24, 29, "SLGNWV"),
    "ubiquitin_16": ("1UBQ", 16, 21, "EVEPSD"),
    "ubiquitin_50": ("1UBQ", 50, 55, "LEDGRT"),
}
CHIGNOLIN = "YYDPETGTWY"
ONE_LETTER = {"ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "GLN": "Q", "GLU": "E", "GLY": "G", "ILE": "I",
              "LEU": "L", "LYS": "K", "PRO": "P", "SER": "S", "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V"}


def shared_stretch(sequence: str, other: str) -> int:
    """Length of the longest stretch of residues ``sequence`` and ``other`` have in common."""
    return max((n for i in range(len(sequence)) for n in range(1, len(sequence) - i + 1)
                if sequence[i : i + n] in other), default=0)


def build_fragment(source: str, first: int, last: int, sequence: str) -> tuple[app.Topology, np.ndarray]:
    """Residues ``first..last`` of chain A of ``source``, with termini and hydrogens (pH 7), positions in nm."""
    from pdbfixer import PDBFixer

    path = SOURCES / source / "aa.pdb"
    pdb = app.PDBFile(str(path))
    chain = next(pdb.topology.chains())
    keep = [r for r in chain.residues() if first <= int(r.id) <= last]
    found = "".join(ONE_LETTER.get(r.name, "?") for r in keep)
    if found != sequence:
        raise SystemExit(f"{path}: residues {first}-{last} of chain {chain.id} are {found}, expected {sequence}")
    modeller = app.Modeller(pdb.topology, pdb.positions)
    kept = {r.index for r in keep}
    modeller.delete([r for r in modeller.topology.residues() if r.index not in kept]
                    + [a for r in modeller.topology.residues() if r.index in kept for a in r.atoms()
                       if a.element is not None and a.element.symbol == "H"])
    text = text_io.StringIO()
    app.PDBFile.writeFile(modeller.topology, modeller.positions, text)
    fixer = PDBFixer(pdbfile=text_io.StringIO(text.getvalue()))
    fixer.findMissingResidues()
    fixer.missingResidues = {}  # a fragment, not a gap to fill
    fixer.findMissingAtoms()    # the C-terminal OXT and any atom the crystal lacks
    fixer.addMissingAtoms()
    fixer.addMissingHydrogens(7.0)
    return fixer.topology, np.asarray(fixer.positions.value_in_unit(unit.nanometer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--ns", type=float, default=2.0, help="production per peptide, ns")
    parser.add_argument("--frame-ps", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--platform", default="Reference", help="OpenMM platform (Reference: the fastest here for 75-110 atoms)")
    parser.add_argument("--only", nargs="*", default=None, help="names of the peptides to make (default: all)")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    natural_pdb = app.PDBFile(str(NATURAL))
    natural = handedness(natural_pdb.topology, np.asarray(natural_pdb.positions.value_in_unit(unit.nanometer)))
    natural_ca = natural[("ALA", "CA")]
    timestep_fs = 4.0
    for k, (name, (source, first, last, sequence)) in enumerate(PEPTIDES.items()):
        if args.only and name not in args.only:
            continue
        if shared_stretch(sequence, CHIGNOLIN) > 2:
            raise SystemExit(f"{name} ({sequence}) shares more than two consecutive residues with chignolin")
        prefix = args.out_dir / name
        if prefix.with_suffix(".json").exists():
            print(f"{name}: done before, skipped", flush=True)
            continue
        topology, positions = build_fragment(source, first, last, sequence)
        wrong = wrong_centres(topology, positions, natural, natural_ca)
        if wrong:
            raise SystemExit(f"{name}: chiral centres not natural: {wrong}")
        start = args.out_dir / f"{name}.start.pdb"
        with io.atomic_output(start) as temporary, open(temporary, "w") as handle:
            app.PDBFile.writeFile(topology, positions * unit.nanometer, handle)
        provenance = run_reference_simulation(
            start, prefix, forcefield_files=REFERENCE_FORCEFIELD, temperature=300.0, hydrogen_mass=4.0,
            timestep_fs=timestep_fs, n_steps=round(args.ns * 1e6 / timestep_fs),
            report_interval=round(args.frame_ps * 1e3 / timestep_fs), seed=args.seed + k, platform=args.platform,
            equilibration_steps=10_000,
        )
        print(f"{name} ({sequence}, {topology.getNumAtoms()} atoms): {provenance['n_frames']} frames, "
              f"{provenance['ns_per_day']:.0f} ns/day", flush=True)


if __name__ == "__main__":
    main()
