"""Benchmark: the cost of a resolution switch and its effect on CG throughput.

1. Switch overhead, broken down (inference, injection, relaxation; no atomistic MD): chignolin
   CLN025 (166 atoms, amber99sbildn + OBC ``GBSAOBCForce``, CPU platform) switched from an elastic
   network of its C-alpha beads with the shipped ``cln025_ca_ic.pt``; alanine dipeptide (22 atoms)
   from its learned CG force field with ``ala2_backbone_ic.pt``. Median over ``--switches``
   switches; the relaxation is also timed with the constraints left in the minimised System (what
   OpenMM's minimiser does when handed the MD System), to show why the driver minimises a
   constraint-free copy.
2. CG throughput with a switch every ``--interval`` CG steps against plain CG dynamics, on the
   same CG System and platform (alanine dipeptide's learned CG force field through TorchForce, and
   chignolin's elastic network): steps per second, median of ``--repeats`` runs, and the ratio.

Results are printed and saved as JSON. Timings are medians; the machine is shared, so compare
medians from one run.

The CG Context runs on one CPU thread, the atomistic Contexts on ``--atomistic-threads`` (default 1:
on the shared 2-core development machine two threads measured slower than one).

Usage::

    .venv/bin/python benchmarks/bench_switching.py [--switches 30] [--interval 10000] [--atomistic-threads 2]
        [--skip-throughput] [--out benchmarks/results/switching.json]
"""

from __future__ import annotations

import argparse
import platform as host
import statistics
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app

from openmmbackmap import __version__, io, plugins
from openmmbackmap.cgforce import bundled_model, create_cg_system
from openmmbackmap.cgsystems import elastic_network_system
from openmmbackmap.data import reference_system
from openmmbackmap.models import load_backmapper
from openmmbackmap.relax import RelaxationSettings
from openmmbackmap.switching import MultiscaleSimulation

CPU = {"Threads": "1"}
#: Threads of the atomistic Contexts (relaxation and MD): set by --atomistic-threads.
ATOMISTIC = {"Threads": "1"}


def _cg(name: str, seed: int = 1):
    """(backmapper, CG System, start beads, atomistic start) of a benchmark system."""
    if name == "chignolin":
        backmapper = load_backmapper(io.bundled("models/cln025_ca_ic.pt"))
        _, atoms = io.load_topology(io.bundled("chignolin/cln025.pdb"))
        beads = backmapper.mapping.map(atoms)
        return backmapper, elastic_network_system(backmapper.mapping, beads), beads, atoms, 0.01
    backmapper = load_backmapper(io.bundled("models/ala2_backbone_ic.pt"))
    _, atoms = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    beads = backmapper.mapping.map(atoms)
    return backmapper, create_cg_system(backmapper.mapping, bundled_model()), beads, atoms, 0.002


def _simulation(name: str, seed: int = 1, **options) -> MultiscaleSimulation:
    backmapper, system, beads, atoms, dt = _cg(name, seed)
    integrator = openmm.LangevinMiddleIntegrator(300, 1, dt)
    integrator.setRandomNumberSeed(seed)
    cg = app.Simulation(backmapper.mapping.cg_topology, system, integrator, plugins.platform("CPU"), CPU)
    cg.context.setPositions(beads)
    cg.context.setVelocitiesToTemperature(300, seed)
    return MultiscaleSimulation(cg, backmapper, reference_positions=atoms, seed=seed, platform="CPU",
                                platform_properties=ATOMISTIC, **options)


def switch_overhead(name: str, switches: int, samples: int, max_iterations: int) -> dict:
    simulation = _simulation(name, samples=samples, energy_threshold=0.0, on_failure="skip",
                             relaxation=RelaxationSettings(max_iterations=max_iterations), switch_interval=500)
    simulation.run(500 * switches)
    records = simulation.switches

    def median_ms(field: str) -> float:
        return 1e3 * statistics.median(getattr(r, field) for r in records)

    result = {
        "system": name, "atoms": simulation.mapping.n_atoms, "beads": simulation.mapping.n_beads,
        "samples": samples, "max_iterations": max_iterations, "switches": len(records),
        "accepted": sum(r.accepted for r in records),
        "attempts_mean": float(np.mean([r.attempts for r in records])),
        "chirality_errors": int(sum(r.chirality_errors or 0 for r in records)),
        "median_ms": {field[:-2]: median_ms(field) for field in ("inference_s", "injection_s", "relaxation_s", "total_s")},
        "median_energy_relaxed": statistics.median(r.energy_relaxed for r in records),
    }
    # the same relaxations with the constraints kept in the minimised System
    topology = simulation.mapping.topology
    context = openmm.Context(reference_system(topology), openmm.VerletIntegrator(0.001), plugins.platform("CPU"), ATOMISTIC)
    raw = simulation.backmapper(np.repeat(simulation.cg_bead_positions()[None], min(switches, 10), axis=0), seed=7)
    constrained, failed = [], 0
    for x in raw:
        context.setPositions(x.astype(float))
        start = time.perf_counter()
        try:
            openmm.LocalEnergyMinimizer.minimize(context, 10.0, max_iterations)
        except openmm.OpenMMException:  # "Particle coordinate is NaN" on badly clashing input
            failed += 1
            continue
        constrained.append(time.perf_counter() - start)
    flexible = []
    for x in raw:
        start = time.perf_counter()
        simulation.relaxation.relax(x, simulation.cg_bead_positions())
        flexible.append(time.perf_counter() - start)
    result["relaxation_constraints_kept_ms"] = 1e3 * statistics.median(constrained) if constrained else None
    result["relaxation_constraints_kept_nan_failures"] = f"{failed}/{len(raw)}"
    result["relaxation_flexible_copy_ms"] = 1e3 * statistics.median(flexible)
    return result


def throughput(name: str, steps: int, interval: int, repeats: int) -> dict:
    rates = {"plain": [], "switching": []}
    for repeat in range(repeats):
        for mode in ("plain", "switching"):
            simulation = _simulation(name, seed=repeat + 1, samples=4, on_failure="skip",
                                     switch_interval=interval if mode == "switching" else None)
            simulation.cg.step(100)  # warm-up outside the timing
            start = time.perf_counter()
            simulation.run(steps)
            rates[mode].append(steps / (time.perf_counter() - start))
    plain, switching = statistics.median(rates["plain"]), statistics.median(rates["switching"])
    return {"system": name, "steps": steps, "switch_interval": interval, "repeats": repeats,
            "plain_steps_per_s": plain, "switching_steps_per_s": switching, "ratio": switching / plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=30)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-iterations", type=int, default=100)
    parser.add_argument("--interval", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--atomistic-threads", type=int, default=1, help="CPU threads of the atomistic Contexts")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "switching.json")
    args = parser.parse_args()
    ATOMISTIC["Threads"] = str(args.atomistic_threads)
    results = {
        "openmm_backmap": __version__, "openmm": openmm.__version__, "host": host.node(),
        "atomistic_threads": args.atomistic_threads, "cg_threads": 1,
        "switch_overhead": [switch_overhead(name, args.switches, args.samples, args.max_iterations)
                            for name in ("chignolin", "ala2")],
        "throughput": [] if args.skip_throughput else [
            throughput("ala2", 3 * args.interval, args.interval, args.repeats),
            throughput("chignolin", 30 * args.interval, args.interval, args.repeats)],
    }
    for row in results["switch_overhead"]:
        ms = row["median_ms"]
        print(f"{row['system']:10s} switch: median {ms['total']:.1f} ms (inference {ms['inference']:.1f}, injection "
              f"{ms['injection']:.1f}, relaxation {ms['relaxation']:.1f}); {row['accepted']}/{row['switches']} accepted, "
              f"{row['attempts_mean']:.2f} attempts, {row['chirality_errors']} chirality errors; relaxation with "
              f"constraints kept {row['relaxation_constraints_kept_ms'] or float('nan'):.0f} ms "
              f"({row['relaxation_constraints_kept_nan_failures']} NaN failures) vs flexible copy "
              f"{row['relaxation_flexible_copy_ms']:.0f} ms")
    for row in results["throughput"]:
        print(f"{row['system']:10s} CG throughput: plain {row['plain_steps_per_s']:.0f} steps/s, switching every "
              f"{row['switch_interval']} steps {row['switching_steps_per_s']:.0f} steps/s (ratio {row['ratio']:.3f})")
    io.write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
