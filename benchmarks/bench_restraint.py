"""Benchmark: the native MappingRestraintForce against its CustomCentroidBondForce fallback.

Two systems, each holding only the restraint (so that its cost is what is timed):

* protein: haloalkane dehalogenase 1MJ5 with hydrogens (vermouth's martinize2 test input), cut to
  about 3,000 atoms, one group per residue (``residue_com`` mapping, mass weights), no PBC;
* large: about 100,000 atoms in 25,000 Martini-like groups of 4, random positions in a periodic
  box of 10 nm (PBC on).

For each implementation and platform: the median time of one energy+force evaluation
(``Context.getState(getEnergy=True, getForces=True)``) and of one target update
(``setTargets`` of all groups plus ``updateParametersInContext``), and the ratio
fallback/native. The same evaluation of a System without forces is timed too (the platform's
own cost per call, large on CPU for 10^5 atoms), and subtracted to give the restraint's share.
Results are printed and saved as JSON.

Usage::

    .venv/bin/python benchmarks/bench_restraint.py [--repeats 15] [--platforms CPU Reference] [--out benchmarks/results/restraint.json]

``--platforms OpenCL`` (or ``CUDA``) times the native GPU kernels where they were built
(``openmmbackmap.plugins.native_kernel_platforms()``); with pocl, an OpenCL driver for the CPU,
that measures the kernels' work on the CPU, not a GPU's speed::

    .venv/bin/python benchmarks/bench_restraint.py --platforms OpenCL --out benchmarks/results/restraint_opencl_pocl.json
"""

from __future__ import annotations

import argparse
import platform as host
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import openmm

sys.path.insert(0, str(Path(__file__).parent))
from bench_mapping import truncated_protein  # noqa: E402

from openmmbackmap import __version__, io, plugins  # noqa: E402
from openmmbackmap.mapping import Mapping  # noqa: E402
from openmmbackmap.restraints import mapping_restraint_force  # noqa: E402


def protein_case(n_atoms: int):
    topology, positions = truncated_protein(n_atoms)
    mapping = Mapping.from_scheme(topology, "residue_com")
    groups = [bead.atom_indices for bead in mapping.beads]
    weights = [bead.weights for bead in mapping.beads]
    return "protein", positions, groups, weights, None


def large_case(n_atoms: int, box: float = 10.0):
    rng = np.random.default_rng(7)
    n_groups = n_atoms // 4
    centres = rng.uniform(0, box, (n_groups, 1, 3))
    positions = (centres + rng.normal(scale=0.15, size=(n_groups, 4, 3))).reshape(-1, 3)
    groups = np.arange(4 * n_groups).reshape(n_groups, 4).tolist()
    weights = [[72.0] * 4] * n_groups
    return "large", positions, groups, weights, box


def median_seconds(function, repeats: int) -> float:
    function()  # warm-up (first evaluation builds neighbour data, caches, ...)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def baseline_seconds(case, platform_name: str, repeats: int) -> float:
    """One evaluation of the same particles without any force: the platform's own cost per call."""
    _, positions, _, _, box = case
    system = openmm.System()
    for _ in range(len(positions)):
        system.addParticle(12.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(openmm.Vec3(box, 0, 0), openmm.Vec3(0, box, 0), openmm.Vec3(0, 0, box))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform_name))
    context.setPositions(positions)
    return median_seconds(lambda: context.getState(getEnergy=True, getForces=True), repeats)


def run_case(case, implementation: str, platform_name: str, repeats: int) -> dict:
    name, positions, groups, weights, box = case
    rng = np.random.default_rng(11)
    centroids = np.array([np.average(positions[list(a)], axis=0, weights=w) for a, w in zip(groups, weights)])
    targets = centroids + rng.normal(scale=0.1, size=centroids.shape)
    start = time.perf_counter()
    force = mapping_restraint_force(
        groups, weights, k=1000.0, r0=0.0, targets=targets, periodic=box is not None, native=(implementation == "native")
    )
    system = openmm.System()
    for _ in range(len(positions)):
        system.addParticle(12.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(openmm.Vec3(box, 0, 0), openmm.Vec3(0, box, 0), openmm.Vec3(0, 0, box))
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform_name))
    context.setPositions(positions)
    setup_seconds = time.perf_counter() - start

    def evaluate():
        context.getState(getEnergy=True, getForces=True)

    new_targets = [targets + rng.normal(scale=0.05, size=targets.shape) for _ in range(2)]
    counter = [0]

    def update():
        counter[0] += 1
        force.setTargets(new_targets[counter[0] % 2])
        force.updateParametersInContext(context)

    energy = context.getState(getEnergy=True).getPotentialEnergy()._value
    return {
        "case": name,
        "implementation": implementation,
        "platform": platform_name,
        "atoms": len(positions),
        "groups": len(groups),
        "periodic": box is not None,
        "energy_kj_mol": energy,
        "setup_seconds": setup_seconds,
        "evaluate_median_seconds": median_seconds(evaluate, repeats),
        "update_median_seconds": median_seconds(update, repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--protein-atoms", type=int, default=3_000)
    parser.add_argument("--large-atoms", type=int, default=100_000)
    parser.add_argument("--platforms", nargs="+", default=["CPU", "Reference"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "restraint.json")
    args = parser.parse_args()
    if plugins.native_restraint_force_class() is None:
        sys.exit(f"the native plugin is not available: {plugins.native_plugin_error()}")

    cases = [protein_case(args.protein_atoms), large_case(args.large_atoms)]
    rows = []
    for case in cases:
        for platform_name in args.platforms:
            baseline = baseline_seconds(case, platform_name, args.repeats)
            pair = {}
            for implementation in ("native", "fallback"):
                row = run_case(case, implementation, platform_name, args.repeats)
                row["baseline_evaluate_median_seconds"] = baseline
                # The restraint's own share: the platform spends `baseline` per call on any System.
                row["restraint_evaluate_seconds"] = max(row["evaluate_median_seconds"] - baseline, 0.0)
                pair[implementation] = row
                rows.append(row)
            native, fallback = pair["native"], pair["fallback"]
            assert abs(native["energy_kj_mol"] - fallback["energy_kj_mol"]) <= 1e-6 * abs(native["energy_kj_mol"])
            for key in ("evaluate_median", "restraint_evaluate", "update_median"):
                fallback[f"{key}_ratio_fallback_over_native"] = fallback[f"{key}_seconds"] / max(native[f"{key}_seconds"], 1e-9)
            print(
                f"{case[0]:7s} {platform_name:9s} {native['atoms']:6d} atoms {native['groups']:5d} groups | "
                f"evaluate (platform alone {baseline * 1e3:.3f} ms): native {native['evaluate_median_seconds'] * 1e3:.3f} ms, "
                f"fallback {fallback['evaluate_median_seconds'] * 1e3:.3f} ms (x{fallback['evaluate_median_ratio_fallback_over_native']:.1f}; "
                f"restraint share x{fallback['restraint_evaluate_ratio_fallback_over_native']:.1f}) | "
                f"update: native {native['update_median_seconds'] * 1e3:.3f} ms, "
                f"fallback {fallback['update_median_seconds'] * 1e3:.1f} ms (x{fallback['update_median_ratio_fallback_over_native']:.0f})",
                flush=True,
            )
    result = {
        "benchmark": "restraint",
        "openmm_backmap": __version__,
        "openmm": openmm.version.full_version,
        "machine": {"python": sys.version.split()[0], "platform": host.platform(), "processor": host.processor()},
        "repeats": args.repeats,
        "rows": rows,
    }
    io.write_json(args.out, result)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
