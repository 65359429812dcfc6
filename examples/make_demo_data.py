"""Make the bundled alanine-dipeptide demo trajectory (python/openmmbackmap/data/alanine_dipeptide/).

How the bundled files were made, exactly::

    .venv/bin/python examples/make_demo_data.py

which does the following:

1. Reads ``alanine-dipeptide.pdb`` from PDBFixer's test data
   (``<pdbfixer package>/tests/data/alanine-dipeptide.pdb``; ACE-ALA-NME, heavy atoms
   only, 10 atoms).
2. Adds hydrogens with ``openmm.app.Modeller.addHydrogens`` (pH 7, amber99sbildn.xml,
   Reference platform, Python ``random`` seeded with the seed below), giving 22 atoms.
3. Calls :func:`openmmbackmap.data.run_reference_simulation` with amber99sbildn.xml +
   amber99_obc.xml (OBC GBSA implicit solvent), no cutoff, HBonds constraints,
   LangevinMiddleIntegrator at 300 K, friction 1/ps, 2 fs step, energy minimisation,
   20 ps (10,000 steps) unrecorded equilibration, then 1 ns (500,000 steps) recorded
   every 1 ps (500 steps) = 1,000 frames, seed 2026, Reference platform.

Outputs, in ``--out-dir`` (default: the package's data/alanine_dipeptide/):
``ala2.pdb`` (topology + starting frame), ``ala2.xtc`` (1,000 frames),
``ala2.forces.npy`` (float32 (1000, 22, 3) kJ/mol/nm, forces at the XTC frames; kept only
if under 300 KB, else deleted with a note) and ``ala2.json`` (provenance, including the
OpenMM version and speed). The Reference platform is deterministic, so with the same
OpenMM version the run is reproducible bit for bit.

Use ``--ns`` and ``--out-dir`` for longer runs outside the package, e.g.
``examples/make_demo_data.py --ns 20 --out-dir /tmp/ala2_long``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import random
import sys
import tempfile
from pathlib import Path

import openmm
import openmm.app as app
import pdbfixer

import openmmbackmap
from openmmbackmap.data import run_reference_simulation
from openmmbackmap.io import write_json

FORCEFIELD_FILES = ("amber99sbildn.xml", "amber99_obc.xml")
TIMESTEP_FS = 2.0
FRAME_INTERVAL_PS = 1.0
EQUILIBRATION_PS = 20.0
MAX_BUNDLED_FORCES_BYTES = 300 * 1024

DEFAULT_OUT_DIR = Path(openmmbackmap.__file__).parent / "data" / "alanine_dipeptide"
SOURCE_PDB = Path(pdbfixer.__file__).parent / "tests" / "data" / "alanine-dipeptide.pdb"


def hydrogenated_structure(source: Path, dest: Path, seed: int) -> int:
    """Write ``source`` with hydrogens added for amber99sbildn to ``dest``; return atom count.

    ``Modeller.addHydrogens`` starts new hydrogens from positions drawn with Python's
    ``random`` and then minimises them on the fastest platform; seeding ``random`` and
    using the Reference platform makes the result, and so the whole run, reproducible.
    """
    pdb = app.PDBFile(str(source))
    has_h = any(a.element is not None and a.element.symbol == "H" for a in pdb.topology.atoms())
    modeller = app.Modeller(pdb.topology, pdb.positions)
    if not has_h:
        random.seed(seed)
        modeller.addHydrogens(
            app.ForceField(*FORCEFIELD_FILES), pH=7.0,
            platform=openmm.Platform.getPlatformByName("Reference"),
        )
    buffer = io.StringIO()
    app.PDBFile.writeFile(modeller.topology, modeller.positions, buffer, keepIds=True)
    # Drop OpenMM's dated REMARK so that the input checksum in the provenance is stable.
    dest.write_text("".join(line for line in buffer.getvalue().splitlines(keepends=True)
                            if not line.startswith("REMARK   1 CREATED WITH OPENMM")))
    return modeller.topology.getNumAtoms()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                        help="output folder (default: %(default)s)")
    parser.add_argument("--ns", type=float, default=1.0,
                        help="production length in ns (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=2026, help="random seed (default: %(default)s)")
    parser.add_argument("--platform", default="Reference", help="OpenMM platform (default: %(default)s)")
    parser.add_argument("--save-positions", action="store_true",
                        help="also write ala2.positions.npy (unrounded positions; not bundled)")
    args = parser.parse_args(argv)

    steps_per_frame = round(FRAME_INTERVAL_PS * 1000.0 / TIMESTEP_FS)
    n_steps = round(args.ns * 1e6 / TIMESTEP_FS)
    n_steps -= n_steps % steps_per_frame
    if n_steps < steps_per_frame:
        parser.error(f"--ns {args.ns} is shorter than one frame ({FRAME_INTERVAL_PS} ps)")
    args.out_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        start_pdb = Path(tmp) / "ala2_hydrogenated.pdb"
        n_atoms = hydrogenated_structure(SOURCE_PDB, start_pdb, args.seed)
        print(f"{SOURCE_PDB} -> {n_atoms} atoms with hydrogens", flush=True)
        prov = run_reference_simulation(
            start_pdb,
            args.out_dir / "ala2",
            forcefield_files=FORCEFIELD_FILES,
            temperature=300.0,
            friction=1.0,
            timestep_fs=TIMESTEP_FS,
            n_steps=n_steps,
            report_interval=steps_per_frame,
            seed=args.seed,
            platform=args.platform,
            minimize=True,
            equilibration_steps=round(EQUILIBRATION_PS * 1000.0 / TIMESTEP_FS),
            save_positions=args.save_positions,
        )

    # Record the real origin of the structure rather than the temporary hydrogenated file
    # (input_sha256 stays that of the hydrogenated structure the simulation started from).
    prov["input_structure"] = (
        f"pdbfixer {importlib.metadata.version('pdbfixer')} tests/data/alanine-dipeptide.pdb "
        "+ hydrogens from openmm.app.Modeller.addHydrogens (pH 7, amber99sbildn)"
    )
    prov["source_sha256"] = hashlib.sha256(SOURCE_PDB.read_bytes()).hexdigest()
    prov["made_by"] = " ".join(["examples/make_demo_data.py", *(sys.argv[1:] if argv is None else argv)])
    forces_path = args.out_dir / "ala2.forces.npy"
    if forces_path.stat().st_size > MAX_BUNDLED_FORCES_BYTES and args.out_dir.resolve() == DEFAULT_OUT_DIR.resolve():
        forces_path.unlink()
        prov["files"].pop("forces")
        prov["note"] = "forces not bundled: file over 300 KB"
    write_json(args.out_dir / "ala2.json", prov)

    print(f"{prov['n_frames']} frames x {prov['n_atoms']} atoms, {prov['simulated_ns']} ns, "
          f"{prov['ns_per_day']:.0f} ns/day on {prov['platform']}, wall {prov['wall_time_s']:.0f} s")
    for path in sorted(args.out_dir.glob("ala2*")):
        print(f"  {path}  {path.stat().st_size / 1024:.1f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
