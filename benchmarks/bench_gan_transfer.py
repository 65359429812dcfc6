"""Benchmark: the ``gan`` transfer test, a model trained on other molecules applied to chignolin.

The transferable model (``peptides_ca_gan.pt``: seven hexapeptides cut from real proteins,
examples/make_transfer_peptides.py, trained with ``--transferable``) never saw chignolin; it is
made into a chignolin model by ``training.transfer_gan`` (chignolin's environments, force-field
geometry and closures; no chignolin frame is used) and scored side by side with the
system-specific ``cln025_ca_gan.pt`` (trained on chignolin segments 0-1) on held-out bundled
chignolin segments (default 002, 300 K), ``--samples`` samples per frame:

- structure and distributions (``bench_gan.quality``): bond score, chirality errors, non-proline
  cis peptides, bond / angle / dihedral JSD against the segment, CG consistency; beside them
  the JSD of the segment's two halves (the sampling floor);
- the potential energy (amber99sbildn + OBC) of backmapped structures before and after a
  restrained minimisation (:class:`openmmbackmap.bench.readiness.ReadinessChecker`: heavy atoms
  held with 1,000 kJ/mol/nm^2, tolerance 10 kJ/mol/nm), median and quartiles over
  ``--energy-frames`` evenly spaced frames, against the reference frames' own;
- speed at batch 1 and ``--batch`` (``bench_ic.bench_model``).

``--ablation`` adds a transferable model trained by the same command with ``--prior-weight 0``.

Usage::

    .venv/bin/python benchmarks/bench_gan_transfer.py --segments 002
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from openmmbackmap import io
from openmmbackmap.bench import distributions
from openmmbackmap.bench.readiness import ReadinessChecker, readiness
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.data import reference_system
from openmmbackmap.mapping import Mapping
from openmmbackmap.models import load_backmapper
from openmmbackmap.training import save_result, transfer_gan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gan import quality  # noqa: E402  (the gan benchmark's metrics)
from bench_ic import _shown, bench_model, run_record  # noqa: E402  (the speed measurement every family shares)

MODELS = Path(__file__).resolve().parents[1] / "python" / "openmmbackmap" / "data" / "models"
RESULTS = Path(__file__).parent / "results"


def energies(candidate: np.ndarray, checker: ReadinessChecker, frames: int) -> dict:
    """Median and quartiles of the potential energy before and after restrained minimisation, kJ/mol."""
    scored = readiness(candidate, checker, n_frames=frames)
    out = {"frames": scored["n_frames"]}
    for key in ("energy_kj_mol", "minimized_energy_kj_mol"):
        values = np.asarray(scored[key], dtype=np.float64)
        out[key] = {"median": float(np.median(values)), "q25": float(np.percentile(values, 25)),
                    "q75": float(np.percentile(values, 75))}
    out["median_heavy_rmsd_nm"] = scored["median_heavy_rmsd_nm"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=MODELS / "peptides_ca_gan.pt",
                        help="transferable gan (trained with --transferable on other molecules)")
    parser.add_argument("--specific", type=Path, default=MODELS / "cln025_ca_gan.pt", help="chignolin's own gan")
    parser.add_argument("--ablation", type=Path, default=None, help="the transferable model trained with --prior-weight 0")
    parser.add_argument("--segments", nargs="+", default=["002"], help="bundled chignolin segments to test on")
    parser.add_argument("--samples", type=int, default=4, help="samples per held-out CG frame")
    parser.add_argument("--energy-frames", type=int, default=40, help="frames per model for the energies")
    parser.add_argument("--calls", type=int, default=100, help="single-frame calls (speed at batch 1)")
    parser.add_argument("--repeats", type=int, default=3, help="calls at the large batch")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "gan_transfer.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    topology, template = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    mapping = Mapping.from_scheme(topology, "ca")
    reference = np.concatenate([io.load_trajectory(io.bundled(f"chignolin/reference/cln025_{s}.xtc"), topology).xyz
                                for s in args.segments])
    features = TopologyFeatures.from_topology(topology)
    half = len(reference) // 2
    floor = distributions.internal_coordinate_jsd(reference[:half], reference[half:], features)
    floor = {f"jsd_{k}_bits": float(floor[f"mean_{k}"]) for k in ("bonds", "angles", "dihedrals")}
    checker = ReadinessChecker(reference_system(topology), topology, platform_properties={"Threads": "1"}, md_steps=0)
    reference_energies = energies(reference, checker, args.energy_frames)
    print(f"reference (segments {', '.join(args.segments)}, {len(reference)} frames): JSD floor (halves) "
          + ", ".join(f"{k} {v:.4f}" for k, v in floor.items())
          + f"; energy median {reference_energies['energy_kj_mol']['median']:.0f} kJ/mol, after restrained "
          f"minimisation {reference_energies['minimized_energy_kj_mol']['median']:.0f}", flush=True)

    models = {}
    for label, source in (("transfer", args.source), ("transfer_no_prior", args.ablation)):
        if source is not None:
            transferred = RESULTS / f"cln025_ca_gan_{label}.pt"
            save_result(transfer_gan(source, mapping, template), transferred)
            models[label] = (transferred, source)
    models["system_specific"] = (args.specific, args.specific)

    cg = mapping.map(reference)
    results = {}
    for label, (path, source) in models.items():
        backmapper = load_backmapper(path, topology=topology)
        candidate = np.concatenate([backmapper(cg, seed=s + 1) for s in range(args.samples)])
        provenance = load_backmapper(source).metadata.provenance
        entry = {
            "file": _shown(source), "prior_weight": provenance["options"]["prior_weight"],
            "trained_on": [m["residues"] for m in provenance.get("molecules", [])] or "chignolin",
            **quality(candidate, reference, cg, mapping, features),
            "energies": energies(candidate, checker, args.energy_frames),
            "speed": bench_model(path, args.calls, args.repeats, args.batch, atomistic=reference),
        }
        results[label] = entry
        e, speed = entry["energies"], entry["speed"]
        print(f"{label} ({_shown(source)}): bond score {entry['bond_score']:.4f}, chirality {entry['chirality_errors']}, "
              f"cis {entry['cis_peptides']}, JSD bonds {entry['jsd_bonds_bits']:.4f} angles {entry['jsd_angles_bits']:.4f} "
              f"dihedrals {entry['jsd_dihedrals_bits']:.4f}, CG RMSD {entry['cg_rmsd_nm']:.4f} nm; energy median "
              f"{e['energy_kj_mol']['median']:.0f} kJ/mol, minimised {e['minimized_energy_kj_mol']['median']:.0f}; "
              f"{speed['frames_per_s_batch1']:.0f} frames/s at batch 1, {speed['frames_per_s_batch']:.0f} at batch "
              f"{args.batch}", flush=True)
    report = {
        "benchmark": "gan transfer test: a model trained on other molecules applied to chignolin, beside chignolin's own",
        "command": " ".join(["benchmarks/bench_gan_transfer.py", "--source", _shown(args.source), "--specific",
                             _shown(args.specific), *(["--ablation", _shown(args.ablation)] if args.ablation else []),
                             "--segments", *args.segments, f"--samples {args.samples} --energy-frames {args.energy_frames} "
                             f"--calls {args.calls} --repeats {args.repeats} --batch {args.batch} --threads {args.threads}"]),
        "held_out": f"bundled chignolin segments {', '.join(args.segments)} ({len(reference)} frames)",
        "sampling_floor_halves": floor,
        "reference_energies": reference_energies,
        **run_record(args.threads),
        "results": results,
    }
    io.write_json(args.out, report)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
