"""Generate the full reference data sets: long implicit-solvent runs, in resumable segments.

The full sets are too big for the repository; this script remakes them. Each segment is an
independent run of :func:`openmmbackmap.data.run_reference_simulation` from the same
starting structure with its own seed (segment ``i`` uses ``seed + i``), so a killed job
loses at most the segment in progress: rerunning the same command skips every segment whose
provenance JSON exists (that file is written last, so its presence marks a complete set).

Alanine dipeptide, 100 ns (10 x 10 ns, one frame per ps, amber99sbildn + OBC, 300 K)::

    .venv/bin/python examples/make_reference_data.py ala2 --out-dir reference-data/ala2

Chignolin CLN025, 60 ns (12 x 5 ns, one frame per 10 ps, hydrogen mass 4 amu and 4 fs steps)::

    .venv/bin/python examples/make_reference_data.py cln025 --segments 12 --ns-per-segment 5 \
        --frame-ps 10 --out-dir reference-data/cln025

Every CLN025 segment starts from the bundled folded structure ``data/chignolin/cln025.pdb``
(native-like, built to the crystal structure 5AWL's geometry by
examples/make_chignolin_structure.py). The segments cycle through the temperature ladder
300, 450, 300, 400, 300, 350 K: half the data at 300 K, half at elevated temperature, so that
the set holds folded and unfolded states (the 450 K rung second, so that a set cut short after a
few segments already holds unfolded states). amber99sbildn + OBC overstabilises the hairpin:
from the folded start it stayed folded for 2 ns at 400 K (C-alpha RMSD below 0.2 nm in 98 % of
the frames) and unfolded after 0.6 ns at 450 K (C-alpha RMSD 0.3-0.6 nm, Q about 0.1 after),
hence the 450 K rung. Each segment's temperature is in its JSON
(``temperature_K``) and in ``dataset.json`` (``segment_temperatures_K``), with the folded
fraction of each segment (``folded_fraction``, :mod:`openmmbackmap.bench.folding`: C-alpha
RMSD at most 0.2 nm from the bundled folded structure).

The alanine-dipeptide starting structure is the bundled ``data/alanine_dipeptide/ala2.pdb``
(see examples/make_demo_data.py for how it was made).

A segment done before is skipped only if it was run from the same starting structure
(``input_sha256`` in its JSON); otherwise the script stops rather than mix two starts in one set.

``--bundle DIR`` also writes the compact form that ships in the repository (for CLN025:
``data/chignolin/reference``): per segment the PDB, the XTC (all atoms, every frame), the
provenance JSON and the positions and aggregated forces mapped with ``--bundle-scheme``
(``<prefix>.<scheme>.cg.npz``, :func:`openmmbackmap.cgforce.save_mapped_force_data`; the
full-atom forces, 12 MB per 5 ns of CLN025, stay out). A segment already in the bundle counts
as done, so the set can be extended over several sessions: rerun the same command with a
larger ``--segments``::

    .venv/bin/python examples/make_reference_data.py cln025 --segments 12 --ns-per-segment 5 \
        --frame-ps 10 --out-dir reference-data/cln025 \
        --bundle python/openmmbackmap/data/chignolin/reference
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from openmmbackmap import cgforce, io
from openmmbackmap.bench import folding
from openmmbackmap.data import run_reference_simulation
from openmmbackmap.mapping import Mapping

SYSTEMS = {
    "ala2": {
        "structure": "alanine_dipeptide/ala2.pdb",
        "forcefield_files": ("amber99sbildn.xml", "amber99_obc.xml"),
        "platform": "Reference",  # the fastest for 22 atoms (shared/FACTS.md)
        "timestep_fs": 2.0,
        "hydrogen_mass": None,
        "temperatures": (300.0,),
    },
    # Chignolin CLN025 from its folded structure: segments cycle through a temperature ladder so
    # that the data holds folded and unfolded states (this force field unfolds it within 5 ns only
    # at the 450 K rung, see the docstring); HMR with 4 fs steps doubles the speed (shared/FACTS.md).
    "cln025": {
        "structure": "chignolin/cln025.pdb",
        "forcefield_files": ("amber99sbildn.xml", "amber99_obc.xml"),
        "platform": "CPU",
        "timestep_fs": 4.0,
        "hydrogen_mass": 4.0,
        "temperatures": (300.0, 450.0, 300.0, 400.0, 300.0, 350.0),
        "folded_reference": "chignolin/cln025.pdb",
        "bundle_scheme": "ca",
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--ns-per-segment", type=float, default=10.0)
    parser.add_argument("--frame-ps", type=float, default=1.0, help="time between saved frames, ps")
    parser.add_argument("--temperature", type=float, default=None,
                        help="K, for every segment (default: the system's temperature ladder)")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--platform", default=None, help="OpenMM platform (default: the system's)")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="also write the compact form shipped in the repository to this folder")
    parser.add_argument("--bundle-scheme", default=None,
                        help="mapping of the bundled forces (default: the system's, cln025: ca)")
    args = parser.parse_args()

    system = SYSTEMS[args.system]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    structure = io.bundled(system["structure"])
    structure_sha256 = io.file_sha256(structure)
    timestep_fs = system["timestep_fs"]
    n_steps = round(args.ns_per_segment * 1e6 / timestep_fs)
    report_interval = round(args.frame_ps * 1e3 / timestep_fs)
    temperatures = [args.temperature or system["temperatures"][k % len(system["temperatures"])]
                    for k in range(args.segments)]
    folded_fractions: list[float | None] = []
    for segment in range(args.segments):
        prefix = args.out_dir / f"{args.system}_{segment:03d}"
        provenance_path = prefix.with_name(prefix.name + ".json")
        bundled_path = None if args.bundle is None else args.bundle / provenance_path.name
        if not provenance_path.exists() and bundled_path is not None and bundled_path.exists():
            prefix, provenance_path = args.bundle / prefix.name, bundled_path  # made in an earlier session
        if provenance_path.exists():
            provenance = json.loads(provenance_path.read_text())
            if provenance.get("input_sha256") != structure_sha256:
                raise SystemExit(f"{provenance_path} was run from another {structure.name}; "
                                 f"move the old segments away or choose another --out-dir")
            print(f"segment {segment}: done before, skipped", flush=True)
        else:
            start = time.perf_counter()
            print(f"segment {segment}: {temperatures[segment]:.0f} K, {args.ns_per_segment} ns, started "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
            provenance = run_reference_simulation(
                structure, prefix,
                forcefield_files=system["forcefield_files"],
                temperature=temperatures[segment],
                hydrogen_mass=system["hydrogen_mass"],
                timestep_fs=timestep_fs, n_steps=n_steps, report_interval=report_interval,
                seed=args.seed + segment, platform=args.platform or system["platform"],
                equilibration_steps=10_000, save_positions=True,
            )
            print(f"segment {segment}: {provenance['n_frames']} frames, {provenance['ns_per_day']:.0f} ns/day, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        if args.bundle is not None and prefix.parent != args.bundle:
            _bundle_segment(prefix, provenance, args.bundle, args.bundle_scheme or system["bundle_scheme"])
        folded_fractions.append(_folded_fraction(system, prefix))
        if folded_fractions[-1] is not None:
            print(f"segment {segment}: {provenance['temperature_K']:.0f} K, folded fraction "
                  f"{folded_fractions[-1]:.2f}", flush=True)
    summary = {"system": args.system, "segments": args.segments, "ns_per_segment": args.ns_per_segment,
               "frame_ps": args.frame_ps, "temperatures": [args.temperature] if args.temperature else list(system["temperatures"]),
               "segment_temperatures_K": temperatures, "seed": args.seed,
               "structure": system["structure"], "structure_sha256": structure_sha256}
    if "folded_reference" in system:
        summary["folded_definition"] = (f"openmmbackmap.bench.folding.folded_mask: C-alpha RMSD <= "
                                        f"{folding.FOLDED_CA_RMSD} nm from {system['folded_reference']}")
        summary["folded_fraction"] = folded_fractions
    io.write_json(args.out_dir / "dataset.json", summary)
    if args.bundle is not None:
        io.write_json(args.bundle / "dataset.json", summary)


def _bundle_segment(prefix: Path, provenance: dict, bundle: Path, scheme: str) -> None:
    """Copy a finished segment's PDB, XTC and JSON to ``bundle`` and save its mapped forces there.

    The JSON goes last (each file atomically), so that its presence marks a complete bundled segment.
    """
    bundle.mkdir(parents=True, exist_ok=True)
    out_prefix = bundle / prefix.name
    topology, _ = io.load_topology(prefix.with_suffix(".pdb"))
    mapping = Mapping.from_scheme(topology, scheme)
    cgforce.save_mapped_force_data(prefix, mapping, provenance["temperature_K"], out_prefix=out_prefix)
    for suffix in (".pdb", ".xtc", ".json"):
        with io.atomic_output(out_prefix.with_suffix(suffix)) as temporary:
            shutil.copyfile(prefix.with_suffix(suffix), temporary)


def _folded_fraction(system: dict, prefix: Path) -> float | None:
    """Folded fraction of a finished segment's XTC frames (None for a system without a folded reference)."""
    if "folded_reference" not in system:
        return None
    topology, reference = io.load_topology(io.bundled(system["folded_reference"]))
    xyz = io.load_trajectory(prefix.with_suffix(".xtc"), topology).xyz  # 0.001 nm rounding: irrelevant here
    return folding.folded_fraction(np.asarray(xyz, dtype=np.float64), topology, reference)

if __name__ == "__main__":
    main()
