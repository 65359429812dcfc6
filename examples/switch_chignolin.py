"""Chignolin CLN025: CG dynamics of its C-alpha beads, switches to atomistic resolution and back.

The CG model is the shipped learned force field of the ten C-alpha beads (``cln025_ca_cgff.pt``,
openmm-torch, 5 fs steps), or with ``--cg elastic`` an elastic network around the folded structure
(10 fs steps); every ``--interval`` CG steps the shipped ``cln025_ca_ic.pt`` backmapper draws 4
atomistic candidates, the lowest-energy one is relaxed under C-alpha restraints in amber99sbildn +
OBC, checked (energy below 0 kJ/mol, chirality against the bundled structure, no cis peptide),
run for ``--md-steps`` steps of atomistic MD and mapped back to the beads. Writes the relaxed
structures (atomistic.xtc), the atomistic MD energies (md.csv), the switch log (switches.csv), a
plot and a summary into ``--out``.

Usage::

    .venv/bin/python examples/switch_chignolin.py [--cg learned|elastic] [--steps 20000] [--interval 2000] \
        [--md-steps 500] [--out chignolin-switching]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import openmm
import openmm.app as app

from openmmbackmap import cgforce, io, plugins
from openmmbackmap.cgsystems import elastic_network_system
from openmmbackmap.models import load_backmapper
from openmmbackmap.relax import RelaxationSettings
from openmmbackmap.switch_config import plot_switches, summarise
from openmmbackmap.switching import AtomisticTrajectoryReporter, MultiscaleSimulation, SwitchLogReporter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cg", choices=("learned", "elastic"), default="learned",
                        help="CG force field: the shipped learned one (5 fs steps) or an elastic network (10 fs)")
    parser.add_argument("--steps", type=int, default=20000, help="CG steps")
    parser.add_argument("--interval", type=int, default=2000)
    parser.add_argument("--md-steps", type=int, default=500, help="atomistic MD steps (2 fs) after each switch")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("chignolin-switching"))
    args = parser.parse_args()

    backmapper = load_backmapper(io.bundled("models/cln025_ca_ic.pt"))
    _, native = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    mapping = backmapper.mapping
    beads = mapping.map(native)
    if args.cg == "learned":
        system, timestep_ps = cgforce.create_cg_system(mapping, cgforce.bundled_model("cln025_ca_cgff.pt")), 0.005
    else:
        system, timestep_ps = elastic_network_system(mapping, beads, cutoff=1.0, k=1000.0), 0.01
    integrator = openmm.LangevinMiddleIntegrator(300, 1, timestep_ps)
    integrator.setRandomNumberSeed(args.seed)
    cg = app.Simulation(mapping.cg_topology, system, integrator, plugins.platform("CPU"), {"Threads": "1"})
    cg.context.setPositions(beads)
    cg.context.setVelocitiesToTemperature(300, args.seed)

    simulation = MultiscaleSimulation(
        cg, backmapper, switch_interval=args.interval, atomistic_steps=args.md_steps, map_back=True,
        samples=4, energy_threshold=0.0, reference_positions=native, seed=args.seed,
        relaxation=RelaxationSettings(max_iterations=100), platform="CPU", platform_properties={"Threads": "1"},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    simulation.reporters += [AtomisticTrajectoryReporter(args.out / "atomistic.xtc"),
                             SwitchLogReporter(args.out / "switches.csv")]
    simulation.atomistic.reporters.append(
        app.StateDataReporter(str(args.out / "md.csv"), 100, step=True, potentialEnergy=True, temperature=True))
    simulation.run(args.steps, progress=True)
    for reporter in simulation.reporters:
        reporter.close() if hasattr(reporter, "close") else None
    summary = summarise(simulation)
    io.write_json(args.out / "summary.json", summary)
    plot_switches(simulation, args.out / "switches.png")
    ms = summary["median_seconds"]
    print(f"{summary['switches']} switches, {summary['accepted']} accepted, {summary['chirality_errors']} chirality "
          f"errors; median switch {1e3 * ms['total_s']:.0f} ms (relaxation {1e3 * ms['relaxation_s']:.0f} ms); "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
