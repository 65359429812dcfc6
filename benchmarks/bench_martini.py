"""Benchmark: a Martini 3 protein in water with ions, run by OpenMM (our GROMACS reader) and by GROMACS.

The system: chignolin CLN025 (or ``--structure``) martinized (martinize2, Martini 3.0.0,
elastic network, DSSP) in a cube of Martini water with 0.15 M NaCl (``--box`` nm), minimised
and equilibrated with GROMACS (``--equilibration`` steps); both engines start from that
structure with the same .mdp settings (reaction field, epsilon_r 15, 1.1 nm potential-shifted
cut-offs, 20 fs, 300 K).

1. Speed, ns/day, median of ``--repeats`` runs of ``--steps`` steps each:
   GROMACS ``gmx mdrun -nt T`` (v-rescale; ``-resethway`` leaves set-up out of its count) and
   OpenMM's CPU platform with ``T`` threads (``openmmbackmap.gromacs.read_top`` +
   ``create_system(mdp=...)``, LangevinMiddle; the Context is made and warmed up outside the
   timing), for each ``T`` in ``--threads``.
2. Stability, OpenMM only: ``--stability-steps`` steps (default 10^5, 2 ns) with LangevinMiddle
   (300 K, 1/ps), sampled every ``--report`` steps: temperature (from the kinetic energy and the
   System's degrees of freedom), potential energy, the elastic network (deviation of every
   martinize2 rubber band from its rest length; the rest lengths are the martinized structure's
   distances) and the backbone beads' RMSD to the start (Kabsch fit); then ``--nve-steps`` steps
   of plain Verlet (NVE) at 20 fs for the total-energy drift (linear fit, kJ/mol/ns, and per
   degree of freedom in units of kT per ns).

Results are printed and saved as JSON. The machine is shared; compare medians from one run.

Usage::

    nice -n 5 .venv/bin/python benchmarks/bench_martini.py [--box 7] [--steps 5000] [--repeats 3]
        [--threads 1,2] [--stability-steps 100000] [--nve-steps 20000] [--out benchmarks/results/martini.json]
"""

from __future__ import annotations

import argparse
import platform as host
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit

from openmmbackmap import __version__, geometry, gromacs, io, martinize, plugins

KB = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def build_system(folder: Path, structure: Path, box: float, equilibration: int, seed: int) -> dict:
    """martinize2, water and ions, GROMACS minimisation and equilibration; return the files and ENM."""
    cg = martinize.martinize(structure, folder)
    system = martinize.solvate_martinized(cg, folder, box=box, seed=seed)
    martinize.martini_mdp(folder / "em.mdp", integrator="steep", nsteps=2000, emtol=100, tcoupl="no",
                          gen_vel="no", nstxout_compressed=0, **{k: None for k in ("tc-grps", "tau_t", "ref_t",
                                                                                  "gen_temp", "gen_seed", "dt")})
    martinize.martini_mdp(folder / "eq.mdp", nsteps=equilibration, gen_seed=seed, nstxout_compressed=0)
    gromacs.run_gmx(["grompp", "-f", "em.mdp", "-c", system.gro.name, "-p", system.top.name, "-o", "em.tpr"], folder)
    gromacs.run_gmx(["mdrun", "-nt", "2", "-deffnm", "em"], folder)
    gromacs.run_gmx(["grompp", "-f", "eq.mdp", "-c", "em.gro", "-p", system.top.name, "-o", "eq.tpr"], folder)
    gromacs.run_gmx(["mdrun", "-nt", "2", "-deffnm", "eq"], folder)
    # the rubber bands' rest lengths are distances of the martinized structure
    return {"top": system.top, "gro": folder / "eq.gro", "counts": system.counts, "enm": cg.elastic_bonds(),
            "martinize": " ".join(cg.command)}


def gromacs_speed(folder: Path, system: dict, steps: int, threads: int, repeats: int) -> list[float]:
    """ns/day of ``gmx mdrun -nt threads`` over ``steps`` steps, once per repeat."""
    martinize.martini_mdp(folder / "speed.mdp", nsteps=steps, nstxout_compressed=0, nstenergy=0, nstlog=0,
                          nstcalcenergy=100, gen_vel="yes")
    gromacs.run_gmx(["grompp", "-f", "speed.mdp", "-c", system["gro"].name, "-p", system["top"].name, "-o",
                     "speed.tpr"], folder)
    rates = []
    for k in range(repeats):
        # -pin off: with all cores asked for, mdrun pins its threads, which on a machine that runs
        # anything else makes it wait for the busy core (measured 6x slower at 2 threads here)
        gromacs.run_gmx(["mdrun", "-nt", threads, "-pin", "off", "-s", "speed.tpr", "-deffnm", f"speed{k}",
                         "-resethway"], folder)
        rates.append(gromacs.mdrun_performance(folder / f"speed{k}.log"))
    return rates


def openmm_simulation(system_files: dict, threads: int, integrator: openmm.Integrator):
    """(Context, System, positions, box) of the equilibrated structure on the CPU platform."""
    mdp = gromacs.read_mdp(system_files["top"].with_name("speed.mdp"))
    top = gromacs.read_top(system_files["top"], defines=mdp.defines)
    positions, box = gromacs.read_gro(system_files["gro"])
    system = top.create_system(box, mdp=mdp)
    context = openmm.Context(system, integrator, plugins.platform("CPU"), {"Threads": str(threads)})
    context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    return context, system, top, positions, box


def openmm_speed(system_files: dict, steps: int, threads: int, repeats: int, seed: int) -> list[float]:
    """ns/day of OpenMM's CPU platform over ``steps`` 20 fs steps, once per repeat (one Context)."""
    integrator = openmm.LangevinMiddleIntegrator(300, 1.0, 0.02)
    integrator.setRandomNumberSeed(seed)
    context, *_ = openmm_simulation(system_files, threads, integrator)
    context.setVelocitiesToTemperature(300, seed)
    integrator.step(200)  # warm-up: neighbour lists, thread pools
    rates = []
    for _ in range(repeats):
        context.getState(getEnergy=True)  # waits for the previous steps
        start = time.perf_counter()
        integrator.step(steps)
        context.getState(getEnergy=True)
        seconds = time.perf_counter() - start
        rates.append(steps * 0.02e-3 / seconds * 86400)
    return rates


def degrees_of_freedom(system: openmm.System) -> int:
    real = sum(1 for i in range(system.getNumParticles())
               if not system.isVirtualSite(i) and system.getParticleMass(i)._value > 0)
    removed = 3 if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()) else 0
    return 3 * real - system.getNumConstraints() - removed


def stability(system_files: dict, steps: int, report: int, nve_steps: int, threads: int, seed: int) -> dict:
    """Langevin run: temperature, energies, elastic network and backbone RMSD; then an NVE drift run."""
    integrator = openmm.LangevinMiddleIntegrator(300, 1.0, 0.02)
    integrator.setRandomNumberSeed(seed)
    context, system, top, positions, box = openmm_simulation(system_files, threads, integrator)
    context.setVelocitiesToTemperature(300, seed)
    dof = degrees_of_freedom(system)
    protein = top.molecule_types[top.molecules[0][0]]
    n_protein = len(protein.atoms)
    backbone = np.array([i for i, a in enumerate(protein.atoms) if a.name == "BB"])
    whole_topology = top.topology(box)
    enm = np.array([(i, j) for i, j, *_ in system_files["enm"]], dtype=int).reshape(-1, 2)
    rest = np.array([r for _, _, r, _ in system_files["enm"]])

    def protein_whole(xyz: np.ndarray) -> np.ndarray:
        return io.make_molecules_whole(xyz[None], box, whole_topology)[0, :n_protein]

    start_bb = protein_whole(positions)[backbone]
    rows = []
    wall = time.perf_counter()
    for done in range(report, steps + 1, report):
        integrator.step(report)
        state = context.getState(getEnergy=True, getPositions=True)
        xyz = protein_whole(state.getPositions(asNumpy=True)._value)
        bond = np.linalg.norm(xyz[enm[:, 0]] - xyz[enm[:, 1]], axis=1) if len(enm) else np.zeros(0)
        rmsd = float(geometry.aligned_rmsd(xyz[backbone][None], start_bb[None])[0])
        kinetic = state.getKineticEnergy()._value
        rows.append({"step": done, "potential": state.getPotentialEnergy()._value,
                     "temperature": 2 * kinetic / (dof * KB), "enm_max_dev": float(np.abs(bond - rest).max(initial=0)),
                     "enm_rms_dev": float(np.sqrt(((bond - rest) ** 2).mean())) if len(bond) else 0.0,
                     "bb_rmsd": rmsd})
    langevin_seconds = time.perf_counter() - wall
    temperature = np.array([r["temperature"] for r in rows])
    half = len(rows) // 2

    nve = openmm.VerletIntegrator(0.02)
    state = context.getState(getPositions=True, getVelocities=True)
    nve_context = openmm.Context(system, nve, plugins.platform("CPU"), {"Threads": str(threads)})
    nve_context.setPeriodicBoxVectors(*box)
    nve_context.setPositions(state.getPositions())
    nve_context.setVelocities(state.getVelocities())
    times, totals = [], []
    interval = max(1, nve_steps // 100)
    for done in range(0, nve_steps + 1, interval):
        if done:
            nve.step(interval)
        s = nve_context.getState(getEnergy=True)
        times.append(done * 0.02e-3)  # ns
        totals.append(s.getPotentialEnergy()._value + s.getKineticEnergy()._value)
    slope = float(np.polyfit(times, totals, 1)[0]) if len(times) > 2 else float("nan")
    return {
        "steps": steps, "timestep_fs": 20, "friction_per_ps": 1.0, "report_every": report,
        "particles": system.getNumParticles(), "degrees_of_freedom": dof, "seconds": langevin_seconds,
        "finite": bool(np.isfinite([r["potential"] for r in rows]).all()),
        "temperature_k": {"mean": float(temperature.mean()), "std": float(temperature.std()),
                          "mean_second_half": float(temperature[half:].mean())},
        "potential_kj_mol": {"first": rows[0]["potential"], "last": rows[-1]["potential"],
                             "mean_second_half": float(np.mean([r["potential"] for r in rows[half:]]))},
        "elastic_network": {"bonds": len(enm), "max_deviation_nm": max(r["enm_max_dev"] for r in rows),
                            "rms_deviation_nm_median": float(np.median([r["enm_rms_dev"] for r in rows]))},
        "backbone_rmsd_nm": {"max": max(r["bb_rmsd"] for r in rows), "last": rows[-1]["bb_rmsd"],
                             "median": float(np.median([r["bb_rmsd"] for r in rows]))},
        "nve": {"steps": nve_steps, "drift_kj_mol_per_ns": slope,
                "drift_kt_per_dof_per_ns": slope / (dof * KB * 300 / 2) if dof else float("nan"),
                "total_energy_std_kj_mol": float(np.std(totals))},
        "samples": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structure", type=Path, default=io.bundled("chignolin/cln025.pdb"),
                        help="atomistic protein for martinize2 (default: the bundled chignolin)")
    parser.add_argument("--box", type=float, default=7.0, help="cubic box edge, nm (7: about 2,900 beads)")
    parser.add_argument("--equilibration", type=int, default=10000, help="GROMACS equilibration steps before both runs")
    parser.add_argument("--steps", type=int, default=5000, help="steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--stability-steps", type=int, default=100_000, help="0: speed only")
    parser.add_argument("--report", type=int, default=1000, help="stability samples every N steps")
    parser.add_argument("--nve-steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "martini.json")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench_martini_") as tmp:
        folder = Path(tmp)
        system = build_system(folder, args.structure, args.box, args.equilibration, args.seed)
        speed = []
        for t in threads:
            gmx = gromacs_speed(folder, system, args.steps, t, args.repeats)
            omm = openmm_speed(system, args.steps, t, args.repeats, args.seed)
            speed.append({"threads": t, "gromacs_ns_per_day": gmx, "openmm_ns_per_day": omm,
                          "gromacs_median": statistics.median(gmx), "openmm_median": statistics.median(omm),
                          "ratio_gromacs_over_openmm": statistics.median(gmx) / statistics.median(omm)})
            print(f"{t} thread(s): GROMACS {statistics.median(gmx):,.0f} ns/day, OpenMM CPU {statistics.median(omm):,.0f} "
                  f"ns/day (GROMACS/OpenMM {speed[-1]['ratio_gromacs_over_openmm']:.1f}x)", flush=True)
        stable = (stability(system, args.stability_steps, args.report, args.nve_steps, max(threads), args.seed)
                  if args.stability_steps > 0 else None)

    results = {
        "openmm_backmap": __version__, "openmm": openmm.__version__,
        "gromacs": gromacs.run_gmx(["--version"], ".").split("GROMACS version:")[1].split("\n")[0].strip(),
        "host": host.node(), "structure": str(args.structure), "box_nm": args.box, "molecules": system["counts"],
        "martinize": system["martinize"], "steps_per_run": args.steps, "repeats": args.repeats,
        "speed": speed, "stability": stable,
    }
    io.write_json(args.out, results)
    s = stable
    if s is None:
        print(f"wrote {args.out}")
        return
    print(f"stability ({s['particles']} particles, {s['steps']} steps of 20 fs = {s['steps'] * 0.02e-3:g} ns, "
          f"{s['seconds']:.0f} s): T {s['temperature_k']['mean']:.1f} +- {s['temperature_k']['std']:.1f} K; "
          f"elastic network ({s['elastic_network']['bonds']} bonds) max |r - r0| "
          f"{s['elastic_network']['max_deviation_nm']:.3f} nm, median RMS {s['elastic_network']['rms_deviation_nm_median']:.3f} nm; "
          f"backbone RMSD to start median {s['backbone_rmsd_nm']['median']:.3f} nm, max {s['backbone_rmsd_nm']['max']:.3f} nm")
    print(f"NVE {s['nve']['steps']} steps: drift {s['nve']['drift_kj_mol_per_ns']:.1f} kJ/mol/ns "
          f"({s['nve']['drift_kt_per_dof_per_ns']:.2e} kT per degree of freedom per ns)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
