"""CG simulation of the alanine dipeptide with the learned `backbone` force field vs the mapped reference.

Runs ``--copies`` independent, non-interacting copies of the CG dipeptide in one OpenMM System
(TorchForce, LangevinMiddle, 300 K, CPU platform), all started from the bundled ala2.pdb
structure mapped to beads, with different random velocities. Discards ``--equilibration-ps``
per copy, then records a frame per copy every ps. Compares with the mapped atomistic reference
(reference-data/ala2, all 10 segments, 100 ns): CG bond, angle and dihedral JSD
(openmmbackmap.bench.distributions.jensen_shannon with its fixed bins), phi/psi (= the two
bead torsions) 2-D JSD, basin populations; the reference's own floor (segments 0-4 vs 5-9 and
a reference subsample of the candidate's size); stability (run_checked: NaN / jumps);
speed in ns/day (per copy and aggregate) against the atomistic Reference-platform speed
recorded in the reference data's provenance.

    .venv/bin/python benchmarks/bench_cgforce.py --copies 200 --ns-per-copy 0.5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import openmm
import openmm.app as app
import openmm.unit as unit

from openmmbackmap import cgforce, geometry, io
from openmmbackmap.bench.distributions import (
    ANGLE_BINS, BASINS, BOND_BINS, DIHEDRAL_BINS, RAMACHANDRAN_BINS, basin_index, jensen_shannon,
)
from openmmbackmap.mapping import Mapping

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "reference-data" / "ala2"


def internal(x: np.ndarray, terms: dict) -> dict[str, np.ndarray]:
    b = terms["bonds"]
    return {
        "bonds": np.linalg.norm(x[:, b[:, 1]] - x[:, b[:, 0]], axis=-1),
        "angles": np.degrees(geometry.angles(x, terms["angles"])),
        "dihedrals": np.degrees(geometry.dihedrals(x, terms["dihedrals"])),
    }


def compare(candidate: np.ndarray, reference: np.ndarray, terms: dict, names: list[str]) -> dict:
    c, r = internal(candidate, terms), internal(reference, terms)
    bins = {"bonds": BOND_BINS, "angles": ANGLE_BINS, "dihedrals": DIHEDRAL_BINS}
    out: dict = {}
    for kind in ("bonds", "angles", "dihedrals"):
        per = {}
        for k, idx in enumerate(terms[kind]):
            label = "-".join(f"{names[i]}{i}" for i in idx)
            per[label] = jensen_shannon(c[kind][:, k], r[kind][:, k], bins[kind])
        out[kind] = per
        out[f"mean_{kind}"] = float(np.mean(list(per.values())))
        out[f"max_{kind}"] = float(np.max(list(per.values())))
    out["ramachandran"] = jensen_shannon(c["dihedrals"][:, :2], r["dihedrals"][:, :2], RAMACHANDRAN_BINS)
    out["basins"] = {
        "candidate": populations(c["dihedrals"]),
        "reference": populations(r["dihedrals"]),
    }
    out["max_basin_difference_points"] = 100 * max(
        abs(out["basins"]["candidate"][b] - out["basins"]["reference"][b]) for b in BASINS
    )
    return out


def populations(dihedrals: np.ndarray) -> dict[str, float]:
    index = basin_index(dihedrals[:, 0], dihedrals[:, 1])
    return {b: float(np.mean(index == k)) for k, b in enumerate(BASINS)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(cgforce.bundled_model()))
    parser.add_argument("--copies", type=int, default=200)
    parser.add_argument("--ns-per-copy", type=float, default=0.5)
    parser.add_argument("--equilibration-ps", type=float, default=20.0)
    parser.add_argument("--timestep-fs", type=float, default=2.0)
    parser.add_argument("--friction", type=float, default=1.0)
    parser.add_argument("--platform", default="CPU")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_cgforce.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    topology, start_positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    mapping = Mapping.from_scheme(topology, "backbone")
    terms = cgforce.bead_terms(mapping)
    names = [b.name for b in mapping.beads]

    reference = np.concatenate(
        [mapping.map(np.load(REFERENCE / f"ala2_{k:03d}.positions.npy").astype(np.float64)) for k in range(10)]
    )
    atomistic_speed = float(np.median(
        [json.loads((REFERENCE / f"ala2_{k:03d}.json").read_text())["ns_per_day"] for k in range(10)]
    ))

    n = mapping.n_beads
    system = cgforce.create_cg_system(mapping, args.model, copies=args.copies)
    dt_ps = args.timestep_fs / 1000
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, args.friction / unit.picosecond, dt_ps * unit.picosecond)
    integrator.setRandomNumberSeed(args.seed)
    simulation = app.Simulation(
        mapping.cg_topology, system, integrator, openmm.Platform.getPlatformByName(args.platform)
    )
    x0 = mapping.map(np.asarray(start_positions, dtype=np.float64))
    simulation.context.setPositions(np.concatenate([x0 + [2.0 * c, 0, 0] for c in range(args.copies)]))
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, args.seed)
    steps_per_ps = int(round(1.0 / dt_ps))
    frames: list[np.ndarray] = []

    def record(step: int, positions: np.ndarray) -> None:
        frames.append(positions.reshape(args.copies, n, 3).copy())

    status = {"stable": True, "error": None}
    eq_steps = int(round(args.equilibration_ps * steps_per_ps))
    prod_steps = int(round(args.ns_per_copy * 1000 * steps_per_ps))
    t1 = time.perf_counter()
    try:
        cgforce.run_checked(simulation, eq_steps, chunk=steps_per_ps, mapping=mapping)
        t1 = time.perf_counter()
        cgforce.run_checked(simulation, prod_steps, chunk=steps_per_ps, mapping=mapping, callback=record)
    except cgforce.CGSimulationError as exc:
        status = {"stable": False, "error": str(exc)}
    wall = time.perf_counter() - t1
    simulated_per_copy_ns = len(frames) / 1000.0
    candidate = np.concatenate(frames, axis=0) if frames else np.zeros((0, n, 3))  # (frames*copies, n, 3)
    candidate = candidate.reshape(-1, n, 3)
    ns_per_day_copy = simulated_per_copy_ns / wall * 86400 if wall > 0 else float("nan")

    result = {
        "command": "python " + " ".join(sys.argv),
        "model": str(Path(args.model).relative_to(ROOT)) if Path(args.model).is_relative_to(ROOT) else args.model,
        "model_provenance": cgforce.load_metadata(args.model)["provenance"],
        "settings": {
            "copies": args.copies, "timestep_fs": args.timestep_fs, "friction_per_ps": args.friction,
            "temperature_K": 300.0, "platform": args.platform, "integrator": "LangevinMiddleIntegrator",
            "equilibration_ps_per_copy": args.equilibration_ps, "frame_interval_ps": 1.0,
            "start": "bundled ala2.pdb mapped to beads, all copies",
        },
        "status": status,
        "simulated_ns_per_copy": simulated_per_copy_ns,
        "simulated_ns_total": simulated_per_copy_ns * args.copies,
        "candidate_frames": int(len(candidate)),
        "reference_frames": int(len(reference)),
        "speed": {
            "production_wall_s": wall,
            "cg_ns_per_day_per_copy": ns_per_day_copy,
            "cg_ns_per_day_aggregate": ns_per_day_copy * args.copies,
            "atomistic_ns_per_day_reference_platform": atomistic_speed,
            "ratio_aggregate": ns_per_day_copy * args.copies / atomistic_speed,
            "ratio_single_trajectory": ns_per_day_copy / atomistic_speed,
            "note": "machine shared (2 cores, other jobs running); atomistic speed from the reference data's provenance",
        },
    }
    if len(candidate):
        result["candidate_vs_reference"] = compare(candidate, reference, terms, names)
        # segments 008-009 were held out of training and torsion refinement
        result["candidate_vs_heldout_008_009"] = compare(candidate, reference[80000:], terms, names)
    rng = np.random.default_rng(0)
    half = len(reference) // 2
    result["reference_floor_halves"] = compare(reference[:half], reference[half:], terms, names)
    if len(candidate):
        # floor at the candidate's size: whole reference segments (time-correlated like the candidate), at most half
        n_seg = max(1, min(len(reference) // 2, len(candidate)) // 10000)
        picked = np.sort(rng.choice(10, size=n_seg, replace=False))
        sub = np.concatenate([reference[k * 10000 : (k + 1) * 10000] for k in picked])
        rest = np.concatenate([reference[k * 10000 : (k + 1) * 10000] for k in range(10) if k not in picked])
        result["reference_floor_segments_vs_rest"] = compare(sub, rest, terms, names)
        # the prior alone (network switched off) as a baseline is in the model provenance (force errors)
    out = io.write_json(args.out, result, indent=1)
    summary = {
        "stable": status["stable"],
        "simulated_ns_total": result["simulated_ns_total"],
        "speed": result["speed"],
    }
    if len(candidate):
        cvr = result["candidate_vs_reference"]
        summary.update({k: cvr[k] for k in cvr if k.startswith(("mean_", "max_")) or k == "ramachandran"})
        summary["basins"] = cvr["basins"]
        summary["per_term"] = {k: cvr[k] for k in ("bonds", "angles", "dihedrals")}
        held = result["candidate_vs_heldout_008_009"]
        summary["vs_heldout_008_009"] = {k: held[k] for k in held if k.startswith("max_") or k == "ramachandran"}
    summary["floor_halves"] = {k: result["reference_floor_halves"][k] for k in ("mean_bonds", "mean_angles", "mean_dihedrals", "ramachandran")}
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
