"""CG simulation with a learned force field (TorchForce) against the mapped atomistic reference.

Runs ``--copies`` independent, non-interacting copies of the CG molecule in one OpenMM System
(TorchForce, LangevinMiddle, 300 K, CPU platform), all started from the bundled structure
mapped to beads, with different random velocities. Discards ``--equilibration-ps`` per copy,
then records a frame per copy every ps. Compares with the mapped atomistic reference at 300 K:

- CG bond, angle and dihedral JSD (openmmbackmap.bench.distributions.jensen_shannon; bins of
  0.001 nm, 1 and 5 degrees, bond bins spanning the reference's range so that C-alpha bonds
  are not all piled into one outer bin);
- the free-energy surface along the two slowest CG coordinates, plotted side by side with the
  reference's (PNG) and compared by 2-D JSD: phi/psi for the alanine dipeptide's ``backbone``
  beads; for chignolin ``ca`` the first two TICA components (deeptime, lag 100 ps) of the
  C-alpha pair distances, fitted on the reference;
- system observables: alanine dipeptide Ramachandran basin populations; chignolin folded
  fraction (:mod:`openmmbackmap.bench.folding`, C-alpha RMSD <= 0.2 nm from the bundled folded
  structure);
- the reference's own floor (its first half against its second half), stability (run_checked:
  NaN / jumps) and speed in ns/day (per copy and aggregate) against the atomistic speed
  recorded in the reference data's provenance.

References: ``ala2``: reference-data/ala2 (examples/make_reference_data.py ala2, 10 x 10 ns,
not shipped); ``cln025``: the bundled 300 K segments in data/chignolin/reference.

    .venv/bin/python benchmarks/bench_cgforce.py ala2 --copies 200 --ns-per-copy 0.5
    .venv/bin/python benchmarks/bench_cgforce.py cln025 --copies 100 --ns-per-copy 1
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
from openmmbackmap.bench import folding
from openmmbackmap.bench.distributions import (
    ANGLE_BINS, BASINS, DIHEDRAL_BINS, RAMACHANDRAN_BINS, basin_index, jensen_shannon,
)
from openmmbackmap.mapping import Mapping

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURE = 300.0


def _ala2_reference() -> list[Path]:
    return [ROOT / "reference-data" / "ala2" / f"ala2_{k:03d}" for k in range(10)]


def _cln025_reference() -> list[Path]:
    """The bundled chignolin segments run at 300 K (the others are the ladder's higher rungs)."""
    folder = io.bundled("chignolin/reference")
    return sorted(p.with_suffix("") for p in folder.glob("cln025_*.json")
                  if json.loads(p.read_text())["temperature_K"] == TEMPERATURE)


SYSTEMS = {
    "ala2": {"structure": "alanine_dipeptide/ala2.pdb", "scheme": "backbone", "model": "ala2_backbone_cgff.pt",
             "reference": _ala2_reference},
    "cln025": {"structure": "chignolin/cln025.pdb", "scheme": "ca", "model": "cln025_ca_cgff.pt",
               "reference": _cln025_reference},
}


def internal(x: np.ndarray, terms: dict) -> dict[str, np.ndarray]:
    b = terms["bonds"]
    return {
        "bonds": np.linalg.norm(x[:, b[:, 1]] - x[:, b[:, 0]], axis=-1),
        "angles": np.degrees(geometry.angles(x, terms["angles"])),
        "dihedrals": np.degrees(geometry.dihedrals(x, terms["dihedrals"])),
    }


def compare(candidate: np.ndarray, reference: np.ndarray, terms: dict, names: list[str]) -> dict:
    """Per-term JSDs of bonds, angles and dihedrals, with their means and maxima."""
    c, r = internal(candidate, terms), internal(reference, terms)
    bins = {"bonds": np.arange(0.0, np.ceil((r["bonds"].max() + 0.1) * 20) / 20, 0.001),
            "angles": ANGLE_BINS, "dihedrals": DIHEDRAL_BINS}
    out: dict = {}
    for kind in ("bonds", "angles", "dihedrals"):
        per = {}
        for k, idx in enumerate(terms[kind]):
            label = "-".join(f"{names[i]}{i}" for i in idx)
            per[label] = jensen_shannon(c[kind][:, k], r[kind][:, k], bins[kind])
        out[kind] = per
        if per:
            out[f"mean_{kind}"] = float(np.mean(list(per.values())))
            out[f"max_{kind}"] = float(np.max(list(per.values())))
    return out


class SlowCoordinates:
    """The two slowest CG coordinates of a system, fitted on the reference once."""

    def __init__(self, system: str, mapping: Mapping, terms: dict, reference_segments: list[np.ndarray],
                 frame_ps: float):
        self.system, self.terms = system, terms
        if system == "ala2":
            self.labels, self.bins = ("phi (deg)", "psi (deg)"), RAMACHANDRAN_BINS
            return
        from deeptime.decomposition import TICA

        self.pairs = np.array([(i, j) for i in range(mapping.n_beads) for j in range(i + 3, mapping.n_beads)])
        lag = max(1, int(round(100.0 / frame_ps)))
        self.tica = TICA(lagtime=lag, dim=2).fit([self._features(s) for s in reference_segments]).fetch_model()
        projected = self.tica.transform(np.concatenate([self._features(s) for s in reference_segments]))
        lo, hi = np.percentile(projected, [0.5, 99.5], axis=0)
        pad = 0.25 * (hi - lo)
        self.bins = tuple(np.linspace(lo[k] - pad[k], hi[k] + pad[k], 41) for k in range(2))
        self.labels = ("TIC 1", "TIC 2")

    def _features(self, x: np.ndarray) -> np.ndarray:
        return np.linalg.norm(x[:, self.pairs[:, 1]] - x[:, self.pairs[:, 0]], axis=-1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.system == "ala2":
            return np.degrees(geometry.dihedrals(x, self.terms["dihedrals"][:2]))
        return self.tica.transform(self._features(x))


def plot_free_energy(reference: np.ndarray, candidate: np.ndarray, coordinates: SlowCoordinates, path: Path) -> Path:
    """Reference and CG free-energy surfaces (kT) on the same bins and colour scale, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharex=True, sharey=True, constrained_layout=True)
    surfaces = []
    for data in (reference, candidate):
        counts, _, _ = np.histogram2d(data[:, 0], data[:, 1], bins=coordinates.bins)
        with np.errstate(divide="ignore"):
            f = -np.log(counts / counts.sum())
        surfaces.append(f - f[np.isfinite(f)].min())
    top = 8.0
    for ax, f, title in zip(axes, surfaces, ("atomistic reference, mapped", "learned CG force field")):
        shown = np.where(np.isfinite(f), np.clip(f, 0, top), np.nan)  # unvisited bins stay blank
        mesh = ax.pcolormesh(coordinates.bins[0], coordinates.bins[1], shown.T, cmap="viridis",
                             vmin=0, vmax=top, shading="flat")
        ax.set_title(title)
        ax.set_xlabel(coordinates.labels[0])
    axes[0].set_ylabel(coordinates.labels[1])
    fig.colorbar(mesh, ax=axes, label="free energy (kT), 300 K")
    with io.atomic_output(path) as temporary:
        fig.savefig(temporary, dpi=110, format="png")
    plt.close(fig)
    return path


def observables(system: str, x: np.ndarray, terms: dict, mapping: Mapping) -> dict:
    """Ramachandran basin populations (alanine dipeptide) or the folded fraction (chignolin)."""
    if system == "ala2":
        phi, psi = np.degrees(geometry.dihedrals(x, terms["dihedrals"][:2])).T
        index = basin_index(phi, psi)
        return {"basins": {b: float(np.mean(index == k)) for k, b in enumerate(BASINS)}}
    _, folded = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    reference = mapping.map(np.asarray(folded, dtype=np.float64))
    mask = folding.folded_mask(x, mapping.cg_topology, reference)
    return {"folded_fraction": float(mask.mean()),
            "folded_definition": f"C-alpha RMSD <= {folding.FOLDED_CA_RMSD} nm from data/chignolin/cln025.pdb"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("--model", default=None, help="CG force field (default: the shipped one of the system)")
    parser.add_argument("--copies", type=int, default=200)
    parser.add_argument("--ns-per-copy", type=float, default=0.5)
    parser.add_argument("--equilibration-ps", type=float, default=20.0)
    parser.add_argument("--timestep-fs", type=float, default=2.0)
    parser.add_argument("--friction", type=float, default=1.0)
    parser.add_argument("--platform", default="CPU")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reference", nargs="+", type=Path, default=None,
                        help="reference segment prefixes at 300 K (default: the system's, see above)")
    parser.add_argument("--out", default=None, help="JSON (default benchmarks/results/bench_cgforce_<system>.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = SYSTEMS[args.system]
    model = Path(args.model) if args.model else cgforce.bundled_model(spec["model"])
    out_path = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"bench_cgforce_{args.system}.json"

    topology, start_positions = io.load_topology(io.bundled(spec["structure"]))
    mapping = Mapping.from_scheme(topology, spec["scheme"])
    terms = cgforce.bead_terms(mapping)
    names = [b.name for b in mapping.beads]
    prefixes = args.reference or spec["reference"]()
    if not prefixes:
        raise SystemExit(f"no reference data for {args.system} (see this script's docstring)")
    segments = [cgforce.load_mapped_positions(p, mapping) for p in prefixes]
    provenance = [json.loads(Path(str(p) + ".json").read_text()) for p in prefixes]
    reference = np.concatenate(segments)
    frame_ps = provenance[0]["frame_interval_ps"]
    atomistic_speed = float(np.median([p["ns_per_day"] for p in provenance]))

    n = mapping.n_beads
    system = cgforce.create_cg_system(mapping, model, copies=args.copies)
    dt_ps = args.timestep_fs / 1000
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE * unit.kelvin, args.friction / unit.picosecond,
                                                 dt_ps * unit.picosecond)
    integrator.setRandomNumberSeed(args.seed)
    simulation = app.Simulation(mapping.cg_topology, system, integrator, openmm.Platform.getPlatformByName(args.platform))
    x0 = mapping.map(np.asarray(start_positions, dtype=np.float64))
    simulation.context.setPositions(np.concatenate([x0 + [2.0 * c, 0, 0] for c in range(args.copies)]))
    simulation.context.setVelocitiesToTemperature(TEMPERATURE * unit.kelvin, args.seed)
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
    # (frames, copies, n, 3) -> one trajectory per copy, for TICA and per-copy observables
    per_copy = np.stack(frames, axis=1) if frames else np.zeros((args.copies, 0, n, 3))
    candidate = per_copy.reshape(-1, n, 3)
    ns_per_day_copy = simulated_per_copy_ns / wall * 86400 if wall > 0 else float("nan")

    result = {
        "command": "python " + " ".join(sys.argv),
        "system": args.system,
        "model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else str(model),
        "model_provenance": cgforce.load_metadata(model)["provenance"],
        "reference": {"segments": [str(Path(p).relative_to(ROOT)) if Path(p).is_relative_to(ROOT) else str(p)
                                   for p in prefixes],
                      "frames": int(len(reference)), "frame_interval_ps": frame_ps, "temperature_K": TEMPERATURE},
        "settings": {
            "copies": args.copies, "timestep_fs": args.timestep_fs, "friction_per_ps": args.friction,
            "temperature_K": TEMPERATURE, "platform": args.platform, "integrator": "LangevinMiddleIntegrator",
            "equilibration_ps_per_copy": args.equilibration_ps, "frame_interval_ps": 1.0,
            "start": f"bundled {spec['structure']} mapped to beads, all copies",
        },
        "status": status,
        "simulated_ns_per_copy": simulated_per_copy_ns,
        "simulated_ns_total": simulated_per_copy_ns * args.copies,
        "candidate_frames": int(len(candidate)),
        "speed": {
            "production_wall_s": wall,
            "cg_ns_per_day_per_copy": ns_per_day_copy,
            "cg_ns_per_day_aggregate": ns_per_day_copy * args.copies,
            "atomistic_ns_per_day": atomistic_speed,
            "atomistic_platform": provenance[0].get("platform"),
            "ratio_aggregate": ns_per_day_copy * args.copies / atomistic_speed,
            "ratio_single_trajectory": ns_per_day_copy / atomistic_speed,
            "note": "machine shared (2 cores, other jobs running); atomistic speed from the reference data's provenance",
        },
        "reference_observables": observables(args.system, reference, terms, mapping),
    }
    half = len(reference) // 2
    result["reference_floor_halves"] = compare(reference[:half], reference[half:], terms, names)
    coordinates = SlowCoordinates(args.system, mapping, terms, segments, frame_ps)
    ref_slow = coordinates(reference)
    result["slow_coordinates"] = {"labels": coordinates.labels,
                                  "reference_floor_halves_jsd": jensen_shannon(ref_slow[:half], ref_slow[half:],
                                                                               coordinates.bins)}
    if len(candidate):
        result["candidate_vs_reference"] = compare(candidate, reference, terms, names)
        result["candidate_observables"] = observables(args.system, candidate, terms, mapping)
        cand_slow = np.concatenate([coordinates(c) for c in per_copy])
        result["slow_coordinates"]["jsd"] = jensen_shannon(cand_slow, ref_slow, coordinates.bins)
        png = plot_free_energy(ref_slow, cand_slow, coordinates, out_path.with_suffix(".png"))
        result["slow_coordinates"]["plot"] = str(png.relative_to(ROOT)) if png.is_relative_to(ROOT) else str(png)
    out = io.write_json(out_path, result, indent=1)
    summary = {k: result[k] for k in ("status", "simulated_ns_total", "speed", "reference_observables")}
    if len(candidate):
        cvr = result["candidate_vs_reference"]
        summary.update({k: cvr[k] for k in cvr if k.startswith(("mean_", "max_"))})
        summary["candidate_observables"] = result["candidate_observables"]
    summary["slow_coordinates"] = result["slow_coordinates"]
    summary["floor_halves"] = {k: v for k, v in result["reference_floor_halves"].items() if k.startswith("mean_")}
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
