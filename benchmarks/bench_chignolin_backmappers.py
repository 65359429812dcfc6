"""The shipped chignolin `ca` backmappers on bundled reference segments: accuracy, structure, folding, speed.

For each model and segment: ``--samples`` samples of every frame (the `cvae` runs along the
trajectory, that many replicas), best-of-N and mean heavy-atom RMSD to the true frames
(:func:`openmmbackmap.bench.accuracy.best_of_n_rmsd`), bond score, chirality errors and
non-proline cis peptides over all samples, clashes of the raw output against the reference's
(:func:`~openmmbackmap.bench.structural.severe_clash_percentage`, ``clashscore``; before the
restrained relaxation that switching runs after each backmap), and the folded fraction of the reference and of
the backmapped frames (all samples) by two definitions: C-alpha RMSD <= 0.2 nm (equal by
construction for the `ca` mapping) and native heavy-atom contacts Q > 0.7
(:mod:`openmmbackmap.bench.folding`, equivalent ring and carboxylate atoms named either way); the
bond, angle and dihedral JSD of all samples pooled against the reference frames, and the temporal
coherence, the mean over the samples (for `ic` every frame is independent; `cvae` runs along the
trajectory; beside it the `cvae`'s first-frame path on every frame).
Speed: latency at batch 1 and frames/s at batch 1,024 of each TorchScript module
(``bench_ic.bench_model``; the `cvae` on its first-frame path), ``--threads`` torch threads.
The shipped `ic` model was trained on segments 0, 1, 3, 4, 5, the `cvae` and the `gan` on the
300 K segments 0 and 4; all are tested on segment 2 (their metadata), the 300 K segments 6 and 8
are held out from all.
For scale, ``jsd_reference_halves`` is the JSD of the segment's two halves against each other.
A model file that redraws defective frames (:mod:`openmmbackmap.models.rejection`) is scored as
shipped; ``--raw`` scores the model's own draws.

    .venv/bin/python benchmarks/bench_chignolin_backmappers.py --segments 002
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from openmmbackmap import io
from openmmbackmap.bench import accuracy, distributions, folding, kinetics, structural
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.models import load_backmapper, rejection

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ic import bench_model  # noqa: E402  (the speed measurement every family shares)

MODELS = ("cln025_ca_ic.pt", "cln025_ca_cvae.pt", "cln025_ca_gan.pt")
#: Q above which a frame counts as folded by native contacts.
FOLDED_Q = 0.7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", nargs="+", default=["002"], help="bundled segment numbers (held out: 002)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the speed measurement")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="model files to score: names of shipped models or paths (default: the three shipped)")
    parser.add_argument("--raw", action="store_true",
                        help="score a model's own draws, without the redraws of defective frames its file may add "
                             "(openmmbackmap.models.rejection)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "chignolin_backmappers.json")
    args = parser.parse_args()
    topology, native = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    features = TopologyFeatures.from_topology(topology)
    # Each segment and the metrics of its reference frames once, for every model.
    references, reference_metrics = {}, {}
    for segment in args.segments:
        reference = io.load_trajectory(io.bundled(f"chignolin/reference/cln025_{segment}.xtc"), topology).xyz
        references[segment] = reference = reference.astype(np.float64)
        half = len(reference) // 2
        floor = distributions.internal_coordinate_jsd(reference[:half], reference[half:], features)
        reference_metrics[segment] = {
            "severe_clash_percent": structural.severe_clash_percentage(reference, features),
            "clashscore": structural.clashscore(reference, features),
            "folded_ca_rmsd": folding.folded_fraction(reference, topology, native),
            "folded_native_contacts": float(np.mean(folding.native_contacts_fraction(reference, topology, native) > FOLDED_Q)),
            "jsd_reference_halves": {kind: floor[f"mean_{kind}"] for kind in ("bonds", "angles", "dihedrals")},
        }
    results = {}
    for name in args.models:
        path = Path(name) if Path(name).is_file() else io.bundled("models/" + name)
        model = load_backmapper(path)
        if args.raw:
            model = rejection.without_rejection(model)
        for segment in args.segments:
            reference, ref = references[segment], reference_metrics[segment]
            cg = model.mapping.map(reference)
            if model.temporal:
                samples = np.asarray(model.trajectory(cg, samples=args.samples, seed=args.seed), dtype=np.float64)
            else:
                samples = np.stack([np.asarray(model(cg, seed=args.seed + k), dtype=np.float64)
                                    for k in range(args.samples)])
            rmsd = accuracy.best_of_n_rmsd(samples, reference, features)
            pooled = samples.reshape(-1, *samples.shape[2:])
            q_backmapped = folding.native_contacts_fraction(pooled, topology, native)
            entry = {
                "best_of_n_heavy_rmsd_nm": rmsd["best_heavy"], "mean_heavy_rmsd_nm": rmsd["mean_heavy"],
                # Structure over every sample (samples x frames backmapped frames).
                "bond_score": structural.bond_score(pooled, reference, features),
                "chirality_errors": structural.chirality_errors(pooled, native, features)["total"],
                "cis_peptides": structural.cis_peptides(pooled, features)["total"],
                # Raw model output, before the restrained relaxation that switching runs after it.
                "severe_clash_percent": {"reference": ref["severe_clash_percent"],
                                         "backmapped": structural.severe_clash_percentage(pooled, features)},
                "clashscore": {"reference": ref["clashscore"], "backmapped": structural.clashscore(pooled, features)},
                "backmapped_frames": int(len(pooled)),
                "folded_ca_rmsd": {"reference": ref["folded_ca_rmsd"],
                                   "backmapped": folding.folded_fraction(pooled, topology, native)},
                "folded_native_contacts": {"reference": ref["folded_native_contacts"],
                                           "backmapped": float(np.mean(q_backmapped > FOLDED_Q))},
                "frames": int(len(reference)), "samples": args.samples,
            }
            # Distributions pooled over all samples (10 x 500 frames against 500 reference frames).
            jsd = distributions.internal_coordinate_jsd(pooled, reference, features)
            entry["jsd_mean"] = {kind: jsd[f"mean_{kind}"] for kind in ("bonds", "angles", "dihedrals")}
            # Mean over the samples: a cvae sample is a trajectory whose ring orientations and rotamers are
            # drawn once and then persist, so one sample alone is a noisy estimate.
            entry["temporal_coherence"] = float(np.mean([kinetics.temporal_coherence(s, reference, features) for s in samples]))
            if model.temporal:  # side by side: the same model with the temporal conditioning removed
                first_frame_path = np.asarray(model(cg, seed=args.seed), dtype=np.float64)
                entry["temporal_coherence_first_frame_path"] = kinetics.temporal_coherence(first_frame_path, reference, features)
            entry["jsd_reference_halves"] = ref["jsd_reference_halves"]
            if not args.no_speed:
                torch.set_num_threads(args.threads)
                entry["speed"] = bench_model(model, 100, 5, 1024, atomistic=reference)
            results[f"{name} segment {segment}"] = entry
            print(name, segment, json.dumps(entry), flush=True)
    io.write_json(args.out, {"command": "benchmarks/bench_chignolin_backmappers.py --segments " + " ".join(args.segments)
                             + f" --samples {args.samples} --seed {args.seed}" + (" --raw" if args.raw else ""), "folded_q": FOLDED_Q, "results": results})
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
