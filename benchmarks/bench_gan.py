"""Benchmark: the adversarial ``gan`` backmappers, with and without the force-field prior, and their speed.

Held-out data: the last 300 frames (300 ps) of the bundled 1 ns alanine-dipeptide run; a
model trained on that run must have been trained on its first 700 frames only (``--test-tail
0.3``, recorded in each file's provenance, and checked here); one trained on other runs (the
shipped ``residue_com`` model: the 100 ns set, ``--every 20``) never saw it. Each model backmaps the held-out CG frames
``--samples`` times (seeds 1, 2, ...) and the pooled samples are scored against the held-out
atomistic frames: bond score, chirality errors, non-proline cis peptides, mean Jensen-Shannon
divergences of bond, angle and dihedral distributions
(:func:`openmmbackmap.bench.distributions.internal_coordinate_jsd`), Ramachandran JSD and basin
populations, CG consistency. Beside them: the **sampling floor**, the same JSDs between the
reference's own first 700 and last 300 frames (300 reference frames cannot tell distributions
apart more finely than this).

The ablation: models trained by the same command with ``--prior-weight 0`` (``--ablation``),
scored the same way, side by side.

``--long-reference XTC`` also scores every model on an independent, longer run (one sample per
frame): ``reference-data/ala2/ala2_009.xtc`` (10 ns, 10,000 frames, from
``examples/make_reference_data.py ala2``) brings the sampling floor, there its two halves
against each other, well below what 300 held-out frames allow.

Speed (the TorchScript module as loaded, ``torch.inference_mode``, one thread by default):
frames/s at batch 1 and at ``--batch`` (1024), via ``bench_ic.bench_model``.

Usage::

    .venv/bin/python -m openmmbackmap.training --family gan --scheme backbone \\
        --train python/openmmbackmap/data/alanine_dipeptide/ala2.xtc --test-tail 0.3 --prior-weight 0 \\
        --out benchmarks/results/ala2_backbone_gan_noprior.pt      # likewise residue_com
    .venv/bin/python benchmarks/bench_gan.py \\
        --ablation benchmarks/results/ala2_backbone_gan_noprior.pt benchmarks/results/ala2_residue_com_gan_noprior.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from openmmbackmap import io
from openmmbackmap.bench import distributions, structural
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.models import load_backmapper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ic import _shown, bench_model, run_record  # noqa: E402  (the speed measurement every family shares)

MODELS = Path(__file__).resolve().parents[1] / "python" / "openmmbackmap" / "data" / "models"
DEFAULT_MODELS = [MODELS / "ala2_backbone_gan.pt", MODELS / "ala2_residue_com_gan.pt"]
#: Frames of the bundled run the shipped models were trained on; the rest is held out.
TRAIN_FRAMES = 700


def quality(candidate: np.ndarray, reference: np.ndarray, cg: np.ndarray, mapping, features: TopologyFeatures) -> dict:
    """Structural and distribution metrics of pooled samples against the held-out frames they came from."""
    samples = len(candidate) // len(reference)
    paired = np.concatenate([reference] * samples)
    jsd = distributions.internal_coordinate_jsd(candidate, reference, features)
    chirality = structural.chirality_errors(candidate, paired, features)
    cg_rmsd = np.sqrt(((mapping.map(candidate) - np.concatenate([cg] * samples)) ** 2).sum(-1).mean(-1))
    return {
        "frames": int(len(candidate)),
        "bond_score": structural.bond_score(candidate, paired, features),
        "chirality_errors": int(chirality["total"]),
        "cis_peptides": int(structural.cis_peptides(candidate, features)["total"]),
        "jsd_bonds_bits": float(jsd["mean_bonds"]),
        "jsd_angles_bits": float(jsd["mean_angles"]),
        "jsd_dihedrals_bits": float(jsd["mean_dihedrals"]),
        "worst_dihedrals": dict(sorted(jsd["dihedrals"].items(), key=lambda item: -item[1])[:3]),
        "ramachandran_jsd_bits": float(distributions.ramachandran_jsd(candidate, reference, features)["mean"]),
        "basin_difference_pp": float(distributions.basin_population_difference(candidate, reference, features)),
        "cg_rmsd_nm": float(cg_rmsd.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--ablation", nargs="*", type=Path, default=[],
                        help="the same models trained with --prior-weight 0, in the order of --models")
    parser.add_argument("--samples", type=int, default=4, help="samples per held-out CG frame")
    parser.add_argument("--calls", type=int, default=300, help="single-frame calls (speed at batch 1)")
    parser.add_argument("--repeats", type=int, default=5, help="calls at the large batch")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--long-reference", type=Path, default=None,
                        help="an independent atomistic run (.xtc on the bundled topology) to score on as well")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gan.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    topology, _ = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    xyz = io.load_trajectory(io.bundled("alanine_dipeptide/ala2.xtc"), topology).xyz
    bundled_sha256 = io.file_sha256(io.bundled("alanine_dipeptide/ala2.xtc"))
    train, held_out = xyz[:TRAIN_FRAMES], xyz[TRAIN_FRAMES:]
    features = TopologyFeatures.from_topology(topology)
    floor = distributions.internal_coordinate_jsd(train, held_out, features)
    floor = {f"jsd_{k}_bits": float(floor[f"mean_{k}"]) for k in ("bonds", "angles", "dihedrals")}
    print(f"sampling floor (reference frames 0-{TRAIN_FRAMES - 1} vs {TRAIN_FRAMES}-{len(xyz) - 1}): "
          + ", ".join(f"{k} {v:.4f}" for k, v in floor.items()), flush=True)

    long_reference = long_floor = None
    if args.long_reference is not None:
        long_reference = io.load_trajectory(args.long_reference, topology).xyz
        half = len(long_reference) // 2
        long_floor = distributions.internal_coordinate_jsd(long_reference[:half], long_reference[half:], features)
        long_floor = {f"jsd_{k}_bits": float(long_floor[f"mean_{k}"]) for k in ("bonds", "angles", "dihedrals")}
        print(f"long reference {_shown(args.long_reference)} ({len(long_reference)} frames), floor (halves): "
              + ", ".join(f"{k} {v:.4f}" for k, v in long_floor.items()), flush=True)

    results = []
    ablation = list(args.ablation) + [None] * (len(args.models) - len(args.ablation))
    for path, no_prior in zip(args.models, ablation):
        entry = {"model": path.name}
        for label, model in (("prior", path), ("no_prior", no_prior)):
            if model is None:
                continue
            backmapper = load_backmapper(model, topology=topology)
            provenance = backmapper.metadata.provenance
            tail = provenance.get("data", {}).get("test_tail", {})
            # A model trained on other runs (the 100 ns set) never saw the bundled run: all of it is held out.
            on_bundled = any(t.get("sha256") == bundled_sha256 for t in provenance.get("data", {}).get("train", []))
            if on_bundled and (provenance.get("frames_train", 0) + provenance.get("frames_validation", 0) > TRAIN_FRAMES
                               or tail.get("frames") != [len(held_out)]):
                raise SystemExit(f"{model}: not trained on the first {TRAIN_FRAMES} frames only; its test would not be held out")
            cg = backmapper.mapping.map(held_out)
            candidate = np.concatenate([backmapper(cg, seed=s + 1) for s in range(args.samples)])
            entry[label] = {
                "file": _shown(model), "prior_weight": provenance["options"]["prior_weight"],
                "train_seconds": provenance["train_seconds"], "epochs": provenance["epochs"],
                **quality(candidate, held_out, cg, backmapper.mapping, features),
            }
            if long_reference is not None:
                long_cg = backmapper.mapping.map(long_reference)
                long_candidate = backmapper(long_cg, seed=1)
                entry[label]["long_reference"] = quality(long_candidate, long_reference, long_cg, backmapper.mapping, features)
                q = entry[label]["long_reference"]
                print(f"{path.name} [{label}] on the long reference: bond score {q['bond_score']:.4f}, chirality "
                      f"{q['chirality_errors']}, cis {q['cis_peptides']}, JSD bonds {q['jsd_bonds_bits']:.4f} angles "
                      f"{q['jsd_angles_bits']:.4f} dihedrals {q['jsd_dihedrals_bits']:.4f}, basins "
                      f"{q['basin_difference_pp']:.1f} pp", flush=True)
        entry["speed"] = bench_model(path, args.calls, args.repeats, args.batch)
        results.append(entry)
        for label in ("prior", "no_prior"):
            if label in entry:
                q = entry[label]
                print(f"{path.name} [{label}, weight {q['prior_weight']}]: bond score {q['bond_score']:.4f}, chirality "
                      f"{q['chirality_errors']}, cis {q['cis_peptides']}, JSD bonds {q['jsd_bonds_bits']:.4f} angles "
                      f"{q['jsd_angles_bits']:.4f} dihedrals {q['jsd_dihedrals_bits']:.4f}, Ramachandran "
                      f"{q['ramachandran_jsd_bits']:.3f}, basins {q['basin_difference_pp']:.1f} pp, CG RMSD "
                      f"{q['cg_rmsd_nm']:.4f} nm", flush=True)
        speed = entry["speed"]
        print(f"{path.name}: {speed['frames_per_s_batch1']:.0f} frames/s at batch 1, {speed['frames_per_s_batch']:.0f} "
              f"frames/s at batch {args.batch} ({args.threads} thread{'s' if args.threads > 1 else ''})", flush=True)
    report = {
        "benchmark": "gan backmappers: held-out quality with and without the force-field prior, speed",
        "command": " ".join(["benchmarks/bench_gan.py", "--models", *(_shown(p) for p in args.models),
                             *(["--ablation", *(_shown(p) for p in args.ablation)] if args.ablation else []),
                             *(["--long-reference", _shown(args.long_reference)] if args.long_reference else []),
                             f"--samples {args.samples} --calls {args.calls} --repeats {args.repeats} "
                             f"--batch {args.batch} --threads {args.threads}"]),
        "held_out": f"bundled alanine_dipeptide/ala2.xtc frames {TRAIN_FRAMES}-{len(xyz) - 1} (models trained on 0-{TRAIN_FRAMES - 1})",
        "sampling_floor": floor,
        "long_reference": None if long_reference is None else {
            "file": _shown(args.long_reference), "frames": int(len(long_reference)), "sampling_floor_halves": long_floor},
        **run_record(args.threads),
        "results": results,
    }
    io.write_json(args.out, report)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
