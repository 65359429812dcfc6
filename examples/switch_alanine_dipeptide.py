"""Alanine dipeptide: learned CG force field -> switches to atomistic resolution -> back, from Python.

The CG System is the shipped force-matched CG force field of the five backbone beads
(``ala2_backbone_cgff.pt``, run through openmmtorch's TorchForce); every ``--interval`` CG steps the
shipped ``ala2_backbone_ic.pt`` backmapper draws 4 candidates, the lowest-energy one is relaxed under
bead restraints in amber99sbildn + OBC, checked, run for ``--md-steps`` atomistic steps (recorded by
OpenMM's own DCDReporter on the atomistic Simulation) and mapped back, velocities included. The
whole run checkpoints every ``--checkpoint-interval`` CG steps; rerunning the command resumes it.
``backmap demo`` runs the same thing from a YAML config.

Usage::

    .venv/bin/python examples/switch_alanine_dipeptide.py [--steps 50000] [--interval 5000] [--out ala2-switching]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import openmm
import openmm.app as app

from openmmbackmap import io, plugins
from openmmbackmap.cgforce import bundled_model, create_cg_system
from openmmbackmap.models import load_backmapper
from openmmbackmap.switch_config import plot_switches, summarise
from openmmbackmap.switching import AtomisticTrajectoryReporter, MultiscaleSimulation, SwitchLogReporter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50000, help="CG steps (2 fs each)")
    parser.add_argument("--interval", type=int, default=5000)
    parser.add_argument("--md-steps", type=int, default=500)
    parser.add_argument("--checkpoint-interval", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("ala2-switching"))
    args = parser.parse_args()

    backmapper = load_backmapper(io.bundled("models/ala2_backbone_ic.pt"))
    _, atoms = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    mapping = backmapper.mapping
    integrator = openmm.LangevinMiddleIntegrator(300, 1, 0.002)
    integrator.setRandomNumberSeed(args.seed)
    cg = app.Simulation(mapping.cg_topology, create_cg_system(mapping, bundled_model("ala2_backbone_cgff.pt")),
                        integrator, plugins.platform("CPU"), {"Threads": "1"})
    cg.context.setPositions(mapping.map(atoms))
    cg.context.setVelocitiesToTemperature(300, args.seed)

    simulation = MultiscaleSimulation(
        cg, backmapper, switch_interval=args.interval, atomistic_steps=args.md_steps, map_back=True, samples=4,
        energy_threshold=0.0, reference_positions=atoms, seed=args.seed,
        platform="CPU", platform_properties={"Threads": "1"},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    simulation.reporters += [AtomisticTrajectoryReporter(args.out / "relaxed.xtc", append=True),
                             SwitchLogReporter(args.out / "switches.csv")]
    checkpoint = args.out / "run.chk"
    simulation.setCheckpoint(checkpoint, args.checkpoint_interval)
    if checkpoint.exists():
        simulation.loadCheckpoint(checkpoint)
        print(f"resumed at CG step {simulation.currentStep}")
    # OpenMM's own reporters record the atomistic MD that follows each switch
    simulation.atomistic.reporters.append(app.DCDReporter(str(args.out / "atomistic_md.dcd"), 100, append=checkpoint.exists()))
    simulation.run(max(0, args.steps - simulation.currentStep), progress=True)
    for reporter in simulation.reporters:
        reporter.close()
    summary = summarise(simulation)
    io.write_json(args.out / "summary.json", summary)
    plot_switches(simulation, args.out / "switches.png")
    ms = summary["median_seconds"]
    print(f"{summary['switches']} switches, {summary['accepted']} accepted, {summary['chirality_errors']} chirality "
          f"errors; median switch {1e3 * ms['total_s']:.0f} ms; wrote {args.out}")


if __name__ == "__main__":
    main()
