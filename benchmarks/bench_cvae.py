"""Benchmark: the temporally coherent ``cvae`` backmappers against their own non-temporal path and ``ic``.

Held-out data: the reference segments never used in training (by default
``reference-data/ala2/ala2_008`` and ``_009``, 10 ns each at 1 ps, 300 K, amber99sbildn + OBC;
the shipped models were trained on ``ala2_000``-``_007``). Each segment is mapped with the
model's mapping and backmapped three ways, at the model's frame spacing:

- ``cvae``: along the trajectory (:meth:`openmmbackmap.models.base.Backmapper.trajectory`, frame
  ``t`` conditioned on the generated frame ``t - 1``);
- ``cvae, no previous``: the same model with its temporal conditioning removed (``previous=None``
  for every frame);
- ``ic``: the shipped ``ic`` model of the same mapping (frame by frame).

Each candidate is written as a trajectory and scored by the standard benchmark
(:func:`openmmbackmap.bench.benchmark.run_benchmark`: bonds, stereochemistry, JSDs, basins,
temporal coherence, MSM timescales; one report folder per segment under ``--workdir``).
Temporal coherence and basin transition rates are also pooled over the segments, counting
steps inside segments only (:func:`openmmbackmap.bench.kinetics.blockwise_time_metrics`), for
the main seed and for ``--extra-seeds`` (time metrics only, to show the sampling spread).

Usage::

    .venv/bin/python benchmarks/bench_cvae.py [--schemes residue_com backbone] [--out benchmarks/results/cvae.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from openmmbackmap import io
from openmmbackmap.bench import distributions
from openmmbackmap.bench.benchmark import run_benchmark
from openmmbackmap.bench.kinetics import blockwise_time_metrics
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.models import load_backmapper
from openmmbackmap.training import load_segments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ic import run_record  # noqa: E402  (what every benchmark records of its run)

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "python" / "openmmbackmap" / "data" / "models"
DEFAULT_SEGMENTS = [ROOT / "reference-data" / "ala2" / f"ala2_00{k}.xtc" for k in (8, 9)]
CANDIDATES = ("cvae", "cvae_no_previous", "ic")


def _shown(value) -> str:
    """A path relative to the working directory when inside it (commands stay portable)."""
    if isinstance(value, Path) and value.resolve().is_relative_to(Path.cwd()):
        return str(value.resolve().relative_to(Path.cwd()))
    return str(value)


def backmap_all(cvae, ic, reference: list[np.ndarray], seed: int) -> dict[str, list[np.ndarray]]:
    """The three candidates for every segment (frames in the segments' order)."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in CANDIDATES}
    for segment in reference:
        cg = cvae.mapping.map(segment)
        out["cvae"].append(cvae.trajectory(cg, samples=1, seed=seed)[0])
        out["cvae_no_previous"].append(cvae(cg, seed=seed))
        out["ic"].append(ic(cg, seed=seed))
    return out


def summarise(cards: list[dict], time_metrics: dict, candidate: list[np.ndarray], reference: list[np.ndarray],
              features: TopologyFeatures) -> dict:
    """One row of the table: benchmark cards of the segments pooled, plus the blockwise time metrics."""
    pooled_candidate, pooled_reference = np.concatenate(candidate), np.concatenate(reference)
    basins = distributions.basin_populations(pooled_candidate, features.topology)["all"]
    basins_reference = distributions.basin_populations(pooled_reference, features.topology)["all"]
    kinetics = [c["time"]["kinetics"] for c in cards if isinstance(c["time"].get("kinetics"), dict)]
    return {
        "bond_score": min(c["bonds"]["bond_score"] for c in cards),
        "chirality_errors": sum(c["stereochemistry"]["chirality"]["total"] for c in cards),
        "cis_peptides": sum(c["stereochemistry"]["cis_peptides"]["total"] for c in cards),
        "jsd_bonds": max(c["distributions"]["jsd_bonds"] for c in cards),
        "jsd_angles": max(c["distributions"]["jsd_angles"] for c in cards),
        "jsd_dihedrals": max(c["distributions"]["jsd_dihedrals"] for c in cards),
        "ramachandran_jsd": max(c["distributions"]["ramachandran_jsd"] for c in cards),
        "basin_populations": basins,
        "basin_populations_reference": basins_reference,
        "basin_difference_pp": 100.0 * max(abs(basins[b] - basins_reference[b]) for b in basins),
        "temporal_coherence": time_metrics["temporal_coherence"],
        "transitions_per_ns": time_metrics["transitions_per_ns"],
        "transitions_per_ns_reference": time_metrics["transitions_per_ns_reference"],
        "transition_rate_ratio": time_metrics["transition_rate_ratio"],
        "rate_per_ns": time_metrics["rate_per_ns"],
        "rate_per_ns_reference": time_metrics["rate_per_ns_reference"],
        "msm_slowest_timescale_ratio": [k["ratio"] for k in kinetics],
        "readiness": [c.get("readiness") for c in cards],
        "note": "bond_score: the worse segment; JSDs: the worse segment; counts: summed; basins and time: pooled",
    }


def bench_scheme(scheme: str, segments: list[Path], workdir: Path, seed: int, extra_seeds: list[int],
                 readiness_frames: int) -> dict:
    cvae = load_backmapper(MODELS / f"ala2_{scheme}_cvae.pt")
    ic = load_backmapper(MODELS / f"ala2_{scheme}_ic.pt")
    topology, reference = load_segments(segments)
    stride = cvae.metadata.provenance["temporal"]["stride_frames"]
    dt_ps = cvae.frame_interval_ps
    reference = [segment[::stride] for segment in reference]
    features = TopologyFeatures.from_topology(topology)
    tic = time.perf_counter()
    candidates = backmap_all(cvae, ic, reference, seed)
    backmap_seconds = time.perf_counter() - tic

    cards: dict[str, list[dict]] = {name: [] for name in CANDIDATES}
    for k, path in enumerate(segments):
        folder = workdir / scheme / path.stem
        files = []
        for name in CANDIDATES:
            files.append(io.write_trajectory(folder / f"{name}.xtc", candidates[name][k], topology,
                                             time=dt_ps * np.arange(1, len(reference[k]) + 1)))
        reference_file = io.write_trajectory(folder / "reference.xtc", reference[k], topology,
                                             time=dt_ps * np.arange(1, len(reference[k]) + 1))
        written = run_benchmark(topology=path.with_suffix(".pdb"), reference=reference_file, candidates=files,
                                out_dir=folder / "report", readiness_frames=readiness_frames, seed=seed)
        for name in CANDIDATES:
            cards[name].append(written["cards"][f"{name}.xtc"])

    rows = {}
    for name in CANDIDATES:
        metrics = blockwise_time_metrics(candidates[name], reference, features, dt_ps)
        rows[name] = summarise(cards[name], metrics, candidates[name], reference, features)
    spread = {name: [] for name in CANDIDATES}
    for extra in extra_seeds:
        more = backmap_all(cvae, ic, reference, extra)
        for name in CANDIDATES:
            metrics = blockwise_time_metrics(more[name], reference, features, dt_ps)
            spread[name].append({"seed": extra, **{k: metrics[k] for k in
                                 ("temporal_coherence", "transitions_per_ns", "transition_rate_ratio")}})
    return {
        "scheme": scheme,
        "models": {"cvae": cvae.path.name, "ic": ic.path.name},
        "stride_frames": stride,
        "dt_ps": dt_ps,
        "segments": [_shown(p) for p in segments],
        "frames": int(sum(len(r) for r in reference)),
        "seed": seed,
        "backmap_seconds_all_candidates": round(backmap_seconds, 2),
        "results": rows,
        "other_seeds": spread,
        "cards": cards,
    }


def _print(result: dict) -> None:
    print(f"\n{result['scheme']}: {result['frames']} held-out frames ({', '.join(result['segments'])}), "
          f"{result['dt_ps']:g} ps apart; seed {result['seed']}")
    header = (f"  {'candidate':18s} {'bonds':>6s} {'chir':>4s} {'cis':>3s} {'JSD b/a/d':>17s} {'basin pp':>8s} "
              f"{'coherence':>9s} {'trans/ns':>8s} {'rate ratio':>10s} {'MSM ratio':>10s}")
    print(header)
    for name, row in result["results"].items():
        msm = "/".join(f"{r:.2f}" for r in row["msm_slowest_timescale_ratio"] if r is not None)
        print(f"  {name:18s} {row['bond_score']:6.4f} {row['chirality_errors']:4d} {row['cis_peptides']:3d} "
              f"{row['jsd_bonds']:.3f}/{row['jsd_angles']:.3f}/{row['jsd_dihedrals']:.3f} "
              f"{row['basin_difference_pp']:8.2f} {row['temporal_coherence']:9.3f} {row['transitions_per_ns']:8.1f} "
              f"{row['transition_rate_ratio']:10.3f} {msm:>10s}")
    reference = next(iter(result["results"].values()))
    print(f"  reference transitions {reference['transitions_per_ns_reference']:.1f}/ns; basins "
          + ", ".join(f"{b} {100 * v:.1f}%" for b, v in reference["basin_populations_reference"].items()))
    for name, runs in result["other_seeds"].items():
        if runs:
            print(f"  other seeds, {name}: " + "; ".join(
                f"seed {r['seed']}: coherence {r['temporal_coherence']:.3f}, rate ratio {r['transition_rate_ratio']:.3f}"
                for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schemes", nargs="+", default=["residue_com", "backbone"])
    parser.add_argument("--segments", nargs="+", type=Path, default=DEFAULT_SEGMENTS,
                        help="held-out reference segments (.xtc with the .pdb beside)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--extra-seeds", nargs="*", type=int, default=[2, 3])
    parser.add_argument("--readiness-frames", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_cvae"),
                        help="candidate trajectories and the benchmark's reports")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cvae.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = []
    for scheme in args.schemes:
        result = bench_scheme(scheme, args.segments, args.workdir, args.seed, args.extra_seeds, args.readiness_frames)
        _print(result)
        results.append(result)
    report = {
        "benchmark": "cvae temporal coherence and kinetics vs the non-temporal path and ic",
        "command": " ".join(
            ["benchmarks/bench_cvae.py", "--schemes", *args.schemes, "--segments", *(_shown(p) for p in args.segments),
             "--seed", str(args.seed), "--extra-seeds", *map(str, args.extra_seeds),
             "--readiness-frames", str(args.readiness_frames), "--threads", str(args.threads),
             "--workdir", _shown(args.workdir), "--out", _shown(args.out)]
        ),
        "thresholds": {
            "bond_score": ">= 0.99", "chirality_errors": 0, "cis_peptides": 0, "jsd_bonds/angles/dihedrals": "<= 0.02",
            "basin_difference_pp": "<= 3 (residue_com)", "temporal_coherence": "0.8 - 1.25",
            "transition_rate_ratio": "0.7 - 1.3",
        },
        **run_record(args.threads),
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    io.write_json(args.out, report)
    print(f"\nsaved {args.out} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
