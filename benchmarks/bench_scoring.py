"""Benchmark: scoring 10,000 frames of chignolin with the whole scorecard.

Reference frames are the bundled CLN025 structure (166 atoms) with 0.01 nm Gaussian noise,
the candidate another such set (cost does not depend on the values, only on sizes). Every
metric section is timed; MD readiness runs on ``--readiness-frames`` frames as in
``backmap bench``. The median over ``--repeats`` runs is reported. Prints and saves JSON.

Usage::

    .venv/bin/python benchmarks/bench_scoring.py [--frames 10000] [--out benchmarks/results/scoring.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from openmmbackmap import __version__, io
from openmmbackmap.bench.readiness import ReadinessChecker
from openmmbackmap.bench.scorecard import score
from openmmbackmap.bench.structure import TopologyFeatures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--readiness-frames", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scoring.json")
    args = parser.parse_args()

    topology, positions = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    rng = np.random.default_rng(2026)
    reference = (positions[None] + rng.normal(scale=0.01, size=(args.frames, *positions.shape))).astype(np.float32)
    candidate = (positions[None] + rng.normal(scale=0.01, size=(args.frames, *positions.shape))).astype(np.float32)
    start = time.perf_counter()
    features = TopologyFeatures.from_topology(topology)
    checker = ReadinessChecker.from_topology(topology) if args.readiness_frames else None
    setup = time.perf_counter() - start

    totals, sections = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        card = score(candidate, reference, features, readiness_checker=checker,
                     readiness_frames=args.readiness_frames, dt_ps=10.0)
        totals.append(time.perf_counter() - start)
        sections.append(card["seconds"])
    median = statistics.median(totals)
    per_section = {key: statistics.median(s[key] for s in sections) for key in sections[0]}
    print(f"chignolin, {topology.getNumAtoms()} atoms, {args.frames} frames: whole scorecard {median:.1f} s "
          f"(median of {args.repeats}; setup {setup:.1f} s)")
    for key, seconds in sorted(per_section.items(), key=lambda item: -item[1]):
        print(f"  {key:16s} {seconds:6.2f} s")
    report = {"benchmark": "scoring", "openmm_backmap": __version__, "atoms": topology.getNumAtoms(),
              "frames": args.frames, "readiness_frames": args.readiness_frames, "repeats": args.repeats,
              "median_seconds": median, "all_seconds": totals, "setup_seconds": setup,
              "median_seconds_by_section": per_section}
    io.write_json(args.out, report)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
