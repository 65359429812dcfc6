"""Generate the full reference data sets: long implicit-solvent runs, in resumable segments.

The full sets are too big for the repository; this script remakes them. Each segment is an
independent run of :func:`openmmbackmap.data.run_reference_simulation` from the same
starting structure with its own seed (segment ``i`` uses ``seed + i``), so a killed job
loses at most the segment in progress: rerunning the same command skips every segment whose
provenance JSON exists (that file is written last, so its presence marks a complete set).

Alanine dipeptide, 100 ns (10 x 10 ns, one frame per ps, amber99sbildn + OBC, 300 K)::

    .venv/bin/python examples/make_reference_data.py ala2 --out-dir reference-data/ala2

Chignolin CLN025, 60 ns (12 x 5 ns, one frame per 10 ps, segments at 300/340/300/380 K)::

    .venv/bin/python examples/make_reference_data.py cln025 --segments 12 --ns-per-segment 5 \
        --frame-ps 10 --out-dir reference-data/cln025

The starting structure is the bundled ``data/alanine_dipeptide/ala2.pdb`` (see
examples/make_demo_data.py for how it was made).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from openmmbackmap import io
from openmmbackmap.data import run_reference_simulation

SYSTEMS = {
    "ala2": {
        "structure": "alanine_dipeptide/ala2.pdb",
        "forcefield_files": ("amber99sbildn.xml", "amber99_obc.xml"),
        "platform": "Reference",  # the fastest for 22 atoms (shared/FACTS.md)
        "timestep_fs": 2.0,
        "hydrogen_mass": None,
        "temperatures": (300.0,),
    },
    # Chignolin CLN025: segments cycle through a temperature ladder so that the data holds
    # folded and unfolded states; HMR with 4 fs steps doubles the speed (shared/FACTS.md).
    "cln025": {
        "structure": "chignolin/cln025.pdb",
        "forcefield_files": ("amber99sbildn.xml", "amber99_obc.xml"),
        "platform": "CPU",
        "timestep_fs": 4.0,
        "hydrogen_mass": 4.0,
        "temperatures": (300.0, 340.0, 300.0, 380.0),
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
    args = parser.parse_args()

    system = SYSTEMS[args.system]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    timestep_fs = system["timestep_fs"]
    n_steps = round(args.ns_per_segment * 1e6 / timestep_fs)
    report_interval = round(args.frame_ps * 1e3 / timestep_fs)
    for segment in range(args.segments):
        prefix = args.out_dir / f"{args.system}_{segment:03d}"
        if prefix.with_name(prefix.name + ".json").exists():
            print(f"segment {segment}: done before, skipped")
            continue
        start = time.perf_counter()
        provenance = run_reference_simulation(
            io.bundled(system["structure"]), prefix,
            forcefield_files=system["forcefield_files"],
            temperature=args.temperature or system["temperatures"][segment % len(system["temperatures"])],
            hydrogen_mass=system["hydrogen_mass"],
            timestep_fs=timestep_fs, n_steps=n_steps, report_interval=report_interval,
            seed=args.seed + segment, platform=args.platform or system["platform"],
            equilibration_steps=10_000, save_positions=True,
        )
        print(f"segment {segment}: {provenance['n_frames']} frames, {provenance['ns_per_day']:.0f} ns/day, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    summary = {"system": args.system, "segments": args.segments, "ns_per_segment": args.ns_per_segment,
               "frame_ps": args.frame_ps, "temperatures": [args.temperature] if args.temperature else list(system["temperatures"]),
               "seed": args.seed}
    io.write_json(args.out_dir / "dataset.json", summary)


if __name__ == "__main__":
    main()
