"""A GROMACS user's round trip: atomistic chignolin -> Martini 3 run in GROMACS -> backmapped -> atomistic GROMACS run.

Stages (each in its own folder under ``--out``; ``summary.json`` records what each produced):

1. ``1_martinize``: martinize2 (vermouth, Martini 3.0.0, elastic network, DSSP by mdtraj) on the
   bundled chignolin CLN025 (``openmmbackmap.martinize.martinize``).
2. ``2_martini``: the protein in a cube of Martini water with 0.15 M NaCl and counter-ions
   (``solvate_martinized``), then ``gmx grompp`` + ``gmx mdrun``: steepest-descent minimisation
   and ``--cg-steps`` steps of Martini dynamics (20 fs, reaction field, v-rescale 300 K) that
   write ``md.xtc``.
3. ``3_backmap``: ``backmap apply --cg-top conf.gro`` picks the protein beads out of the solvated
   ``md.xtc`` (beads made whole across the periodic boundaries) and backmaps every frame with the
   shipped ``cln025_martini3_ic.pt``; the frames are scored with ``openmmbackmap.bench``
   (bond score, chirality, cis peptides against the bundled structure).
4. ``4_atomistic``: the last backmapped frame, in TIP3P water with Na+ (``--water tip3p``, OpenMM's
   Modeller) or alone in a box (``--water none``), written for GROMACS with amber99sb-ildn by
   ``openmmbackmap.gromacs.write_gromacs``; then ``gmx grompp`` + ``gmx mdrun``: minimisation and
   ``--aa-steps`` steps of MD (2 fs, PME, h-bond constraints, v-rescale 300 K). The final
   structure is scored again.

Needs GROMACS's ``gmx`` on PATH and the Martini 3 master topology (see
``openmmbackmap.martinize.martini3_itp``: fetched once from the mstool sdist on PyPI).

Usage::

    .venv/bin/python examples/gromacs_round_trip.py [--out gromacs-round-trip] [--cg-steps 25000]
        [--aa-steps 5000] [--em-steps 2000] [--water tip3p|none] [--threads 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as unit

from openmmbackmap import cli, gromacs, io, martinize
from openmmbackmap.bench import structural
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.errors import BackmapError
from openmmbackmap.models import load_backmapper

MODEL = "models/cln025_martini3_ic.pt"
STRUCTURE = "chignolin/cln025.pdb"

#: amber99sb-ildn as GROMACS runs it (PME, 1.0 nm cut-offs, dispersion correction), 2 fs with
#: bonds to hydrogen constrained; the minimisation uses the same non-bonded settings.
ATOMISTIC_MDP = """\
integrator               = {integrator}
nsteps                   = {nsteps}
dt                       = 0.002
emtol                    = 500
nstlog                   = 100
nstcalcenergy            = 10
nstenergy                = {nstenergy}
nstxout-compressed       = {nstxout}
cutoff-scheme            = Verlet
pbc                      = xyz
coulombtype              = PME
rcoulomb                 = 1.0
vdwtype                  = Cut-off
rvdw                     = 1.0
DispCorr                 = EnerPres
constraints              = {constraints}
constraint_algorithm     = lincs
tcoupl                   = {tcoupl}
tc-grps                  = System
tau_t                    = 0.1
ref_t                    = 300
pcoupl                   = no
gen_vel                  = {gen_vel}
gen_temp                 = 300
gen_seed                 = {seed}
"""


def structure_checks(xyz: np.ndarray, native: np.ndarray, features: TopologyFeatures) -> dict:
    """The benchmark's structural checks of backmapped frames against the bundled structure."""
    xyz = np.asarray(xyz, dtype=float).reshape(-1, features.n_atoms, 3)
    return {
        "frames": len(xyz),
        "bond_score": structural.bond_score(xyz, native, features),
        "chirality_errors": structural.chirality_errors(xyz, native, features)["total"],
        "cis_peptides": structural.cis_peptides(xyz, features)["total"],
        "severe_clash_percent": structural.severe_clash_percentage(xyz, features),
    }


def martini_stage(folder: Path, *, steps: int, seed: int, threads: int) -> dict:
    """Martinize, solvate, minimise and run Martini dynamics in GROMACS; return what was made."""
    start = time.perf_counter()
    cg = martinize.martinize(io.bundled(STRUCTURE), folder / "1_martinize")
    martini = folder / "2_martini"
    system = martinize.solvate_martinized(cg, martini, seed=seed)
    # The water is a jittered lattice: minimise before dynamics.
    martinize.martini_mdp(martini / "em.mdp", integrator="steep", nsteps=1000, emtol=100, tcoupl="no",
                          gen_vel="no", nstxout_compressed=0, **{k: None for k in ("tc-grps", "tau_t", "ref_t",
                                                                                  "gen_temp", "gen_seed", "dt")})
    martinize.martini_mdp(martini / "md.mdp", nsteps=steps, gen_seed=seed,
                          nstxout_compressed=max(1, steps // 50), nstenergy=max(1, steps // 50))
    _gmx(["grompp", "-f", "em.mdp", "-c", system.gro.name, "-p", system.top.name, "-o", "em.tpr"], martini)
    _gmx(["mdrun", "-nt", threads, "-deffnm", "em"], martini)
    _gmx(["grompp", "-f", "md.mdp", "-c", "em.gro", "-p", system.top.name, "-o", "md.tpr"], martini)
    _gmx(["mdrun", "-nt", threads, "-deffnm", "md"], martini)
    energies = gromacs.read_energies(martini / "md.edr", ["Potential", "Temperature"])
    return {
        "martinize_command": shlex.join(cg.command),
        "elastic_bonds": len(cg.elastic_bonds()),
        "molecules": system.counts,
        "box_nm": float(system.box[0, 0]),
        "steps": steps,
        "potential_kj_mol": energies["Potential"].tolist(),
        "temperature_k_mean": float(energies["Temperature"].mean()),
        "ns_per_day": gromacs.mdrun_performance(martini / "md.log"),
        "seconds": time.perf_counter() - start,
        "top": str(system.top), "gro": str(system.gro), "xtc": str(martini / "md.xtc"),
    }


def backmap_stage(folder: Path, martini: dict, *, seed: int) -> dict:
    """``backmap apply`` on the solvated Martini trajectory; score the frames."""
    start = time.perf_counter()
    out = folder / "3_backmap" / "backmapped.xtc"
    argv = ["apply", "--model", str(io.bundled(MODEL)), "--cg", martini["xtc"], "--cg-top", martini["gro"],
            "--out", str(out), "--seed", str(seed)]
    print("$ backmap " + shlex.join(argv))
    if cli.main(argv) != 0:
        raise BackmapError("backmap apply failed (see above)")
    topology, native = io.load_topology(io.bundled(STRUCTURE))
    frames = io.load_trajectory(out, topology)
    return {"command": "backmap " + shlex.join(argv), "xtc": str(out),
            "checks": structure_checks(frames.xyz, native, TopologyFeatures.from_topology(topology)),
            "seconds": time.perf_counter() - start}


def atomistic_stage(folder: Path, backmapped: dict, *, steps: int, em_steps: int, water: str, seed: int,
                    threads: int) -> dict:
    """Write the last backmapped frame for GROMACS (amber99sb-ildn), minimise and run MD; score the result."""
    start = time.perf_counter()
    backmapper = load_backmapper(io.bundled(MODEL))
    topology, native = io.load_topology(io.bundled(STRUCTURE))
    last = io.load_trajectory(backmapped["xtc"], topology).xyz[-1].astype(float)
    files = ["amber99sbildn.xml"] + (["tip3p.xml"] if water == "tip3p" else [])
    forcefield = app.ForceField(*files)
    modeller = app.Modeller(backmapper.topology, last * unit.nanometer)
    if water == "tip3p":
        modeller.addSolvent(forcefield, model="tip3p", padding=1.0 * unit.nanometer, neutralize=True)
    atomistic = folder / "4_atomistic"
    gromacs.write_gromacs(modeller.topology, modeller.positions, forcefield, atomistic / "conf.gro",
                          atomistic / "topol.top")
    n_solvent = modeller.topology.getNumAtoms() - backmapper.n_atoms
    common = {"seed": seed, "constraints": "h-bonds"}
    (atomistic / "em.mdp").write_text(ATOMISTIC_MDP.format(
        integrator="steep", nsteps=em_steps, nstenergy=10, nstxout=0, tcoupl="no", gen_vel="no", **common))
    (atomistic / "md.mdp").write_text(ATOMISTIC_MDP.format(
        integrator="md", nsteps=steps, nstenergy=max(1, steps // 20), nstxout=max(1, steps // 10),
        tcoupl="v-rescale", gen_vel="yes", **common))
    _gmx(["grompp", "-f", "em.mdp", "-c", "conf.gro", "-p", "topol.top", "-o", "em.tpr"], atomistic)
    _gmx(["mdrun", "-nt", threads, "-deffnm", "em"], atomistic)
    em = gromacs.read_energies(atomistic / "em.edr", ["Potential"])["Potential"]
    _gmx(["grompp", "-f", "md.mdp", "-c", "em.gro", "-p", "topol.top", "-o", "md.tpr"], atomistic)
    _gmx(["mdrun", "-nt", threads, "-deffnm", "md"], atomistic)
    md = gromacs.read_energies(atomistic / "md.edr", ["Potential", "Temperature"])
    final, box = gromacs.read_gro(atomistic / "md.gro")
    # write_gromacs keeps the order (protein, then water and ions); mdrun wrapped atoms into the box
    protein = io.make_molecules_whole(final[None, : backmapper.n_atoms], box, topology)[0]
    return {
        "forcefield": files, "atoms": modeller.topology.getNumAtoms(), "solvent_and_ion_atoms": n_solvent,
        "em_potential_kj_mol": [float(em[0]), float(em[-1])],
        "md_steps": steps,
        "md_potential_kj_mol": md["Potential"].tolist(),
        "md_temperature_k": md["Temperature"].tolist(),
        "ns_per_day": gromacs.mdrun_performance(atomistic / "md.log"),
        "final_checks": structure_checks(protein, native, TopologyFeatures.from_topology(topology)),
        "seconds": time.perf_counter() - start,
        "top": str(atomistic / "topol.top"), "gro": str(atomistic / "md.gro"),
    }


def _gmx(args: list, cwd: Path) -> None:
    print(f"$ gmx {' '.join(map(str, args))}    (in {cwd})", flush=True)
    gromacs.run_gmx([str(a) for a in args], cwd)


def run(out: Path, *, cg_steps: int = 25000, aa_steps: int = 5000, em_steps: int = 2000, water: str = "tip3p",
        seed: int = 1, threads: int = 2) -> dict:
    """All four stages; writes ``out/summary.json`` and returns the summary."""
    if min(cg_steps, aa_steps, em_steps, threads) < 1:
        raise BackmapError("--cg-steps, --aa-steps, --em-steps and --threads must be positive")
    if water not in ("tip3p", "none"):
        raise BackmapError(f"--water must be tip3p or none, not {water!r}")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    summary["martini"] = martini_stage(out, steps=cg_steps, seed=seed, threads=threads)
    summary["backmap"] = backmap_stage(out, summary["martini"], seed=seed)
    summary["atomistic"] = atomistic_stage(out, summary["backmap"], steps=aa_steps, em_steps=em_steps, water=water,
                                           seed=seed, threads=threads)
    io.write_json(out / "summary.json", summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gromacs-round-trip"))
    parser.add_argument("--cg-steps", type=int, default=25000, help="Martini MD steps (20 fs)")
    parser.add_argument("--aa-steps", type=int, default=5000, help="atomistic MD steps (2 fs)")
    parser.add_argument("--em-steps", type=int, default=2000,
                        help="most steepest-descent steps of the atomistic minimisation (stops at Fmax < 500 kJ/mol/nm)")
    parser.add_argument("--water", choices=("tip3p", "none"), default="tip3p",
                        help="atomistic solvent: TIP3P with Na+ counter-ions, or none (the protein alone in a box)")
    parser.add_argument("--threads", type=int, default=2, help="threads of each gmx mdrun (-nt)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    summary = run(args.out, cg_steps=args.cg_steps, aa_steps=args.aa_steps, em_steps=args.em_steps, water=args.water, seed=args.seed,
                  threads=args.threads)
    m, b, a = summary["martini"], summary["backmap"], summary["atomistic"]
    print(f"Martini: {m['molecules']}, {m['steps']} steps, {m['ns_per_day']:.0f} ns/day, "
          f"<T> {m['temperature_k_mean']:.1f} K")
    print(f"backmapped {b['checks']['frames']} frames: bond score {b['checks']['bond_score']:.3f}, "
          f"{b['checks']['chirality_errors']} chirality errors, {b['checks']['cis_peptides']} cis peptides, "
          f"{b['checks']['severe_clash_percent']:.1f}% severe clashes")
    print(f"atomistic ({a['atoms']} atoms): EM {a['em_potential_kj_mol'][0]:.4g} -> {a['em_potential_kj_mol'][1]:.4g} "
          f"kJ/mol, MD {a['md_steps']} steps <T> {np.mean(a['md_temperature_k']):.1f} K, final bond score "
          f"{a['final_checks']['bond_score']:.3f}, {a['final_checks']['chirality_errors']} chirality errors")
    print(json.dumps({k: round(v["seconds"], 1) for k, v in summary.items()}) + f" s; wrote {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
