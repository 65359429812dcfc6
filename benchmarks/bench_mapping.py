"""Benchmark: mapping a 10,000-frame trajectory of a ~3,000-atom protein.

The protein is haloalkane dehalogenase 1MJ5 with hydrogens (martinize2's test input shipped
with vermouth), cut to its first residues so that it has about 3,000 atoms. Frames are the
structure plus Gaussian noise of 0.02 nm (mapping cost does not depend on the values).
Each scheme's mapping of the whole trajectory is timed ``--repeats`` times; the median is
reported, per 1,000 frames. Results are printed and saved as JSON.

Usage::

    .venv/bin/python benchmarks/bench_mapping.py [--frames 10000] [--atoms 3000] [--out benchmarks/results/mapping.json]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as unit
import vermouth

from openmmbackmap import __version__, io
from openmmbackmap.mapping import Mapping

PROTEIN = Path(vermouth.__file__).parent / "tests/data/integration_tests/tier-1/1mj5-charmm/aa.pdb"


def truncated_protein(n_atoms: int) -> tuple[app.Topology, np.ndarray]:
    """The first whole residues of 1MJ5 holding at most ``n_atoms`` atoms."""
    topology, positions = io.load_topology(PROTEIN)
    keep, count = [], 0
    for residue in topology.residues():
        count += len(residue)
        if count > n_atoms:
            break
        keep.append(residue)
    modeller = app.Modeller(topology, positions * unit.nanometer)
    modeller.delete([r for r in topology.residues() if r not in keep])
    return modeller.topology, np.asarray(modeller.positions.value_in_unit(unit.nanometer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--atoms", type=int, default=3_000, help="protein size (whole residues, at most this many atoms)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--schemes", nargs="+", default=["ca", "residue_com", "heavy_com", "martini3"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mapping.json")
    args = parser.parse_args()

    topology, positions = truncated_protein(args.atoms)
    rng = np.random.default_rng(2026)
    xyz = (positions[None] + rng.normal(scale=0.02, size=(args.frames, *positions.shape))).astype(np.float32)
    print(f"{topology.getNumAtoms()} atoms, {topology.getNumResidues()} residues, {args.frames} frames "
          f"({xyz.nbytes / 1e6:.0f} MB float32)")

    results = []
    for scheme in args.schemes:
        start = time.perf_counter()
        mapping = Mapping.from_scheme(topology, scheme)
        build_seconds = time.perf_counter() - start
        mapping.map(xyz[:10])  # builds the sparse matrix once, outside the timing
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            mapping.map(xyz)
            seconds.append(time.perf_counter() - start)
        median = statistics.median(seconds)
        row = {
            "scheme": scheme,
            "beads": mapping.n_beads,
            "build_seconds": build_seconds,
            "median_seconds": median,
            "median_seconds_per_1000_frames": median * 1000 / args.frames,
            "all_seconds": seconds,
        }
        results.append(row)
        print(f"{scheme:12s} {mapping.n_beads:5d} beads: {median:.3f} s for {args.frames} frames "
              f"= {row['median_seconds_per_1000_frames'] * 1e3:.1f} ms per 1,000 frames "
              f"(built in {build_seconds:.2f} s)")

    report = {
        "benchmark": "mapping",
        "openmm_backmap": __version__,
        "machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        "protein": str(PROTEIN.relative_to(Path(vermouth.__file__).parent)),
        "atoms": topology.getNumAtoms(),
        "frames": args.frames,
        "repeats": args.repeats,
        "results": results,
    }
    io.write_json(args.out, report)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
