"""Benchmark: speed of the trained ``ic`` backmappers (TorchScript, CPU).

For each model file, CG frames are the bundled 1 ns alanine-dipeptide run mapped with the
model's own mapping. Measured on the TorchScript module as loaded by
:func:`openmmbackmap.models.load_backmapper`, under ``torch.inference_mode``:

- single-frame latency: ``--calls`` calls with one frame each (median and 95th percentile);
- throughput at batch 1: frames per second over those calls;
- throughput at batch 1024: the median over ``--repeats`` calls of 1024 frames;
- the same through the numpy :class:`~openmmbackmap.models.base.Backmapper` wrapper (batch 1024).

Results are printed and saved as JSON. Threads default to 1 (one core of this machine runs
simulations).

Usage::

    .venv/bin/python benchmarks/bench_ic.py [--models a.pt b.pt] [--threads 1] [--out benchmarks/results/ic.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from openmmbackmap import __version__, io
from openmmbackmap.models import Backmapper, load_backmapper

MODELS = Path(__file__).resolve().parents[1] / "python" / "openmmbackmap" / "data" / "models"
DEFAULT_MODELS = [MODELS / "ala2_backbone_ic.pt", MODELS / "ala2_residue_com_ic.pt"]


def run_record(threads: int) -> dict:
    """Where and when a benchmark ran: torch threads, machine, versions, date (every benchmark's JSON has them)."""
    return {
        "threads": threads,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "versions": {"openmm_backmap": __version__, "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _shown(value) -> str:
    """A path relative to the working directory when inside it (commands stay portable)."""
    if isinstance(value, Path) and value.resolve().is_relative_to(Path.cwd()):
        return str(value.resolve().relative_to(Path.cwd()))
    return str(value)


def bench_model(model: Path | Backmapper, calls: int, repeats: int, batch: int, atomistic: np.ndarray | None = None) -> dict:
    """Latency at batch 1 and throughput at ``batch`` of a model file (or a loaded model), on CG
    frames mapped from ``atomistic`` (frames, atoms, 3), by default the bundled alanine-dipeptide run."""
    backmapper = model if isinstance(model, Backmapper) else load_backmapper(model)
    if atomistic is None:
        topology, _ = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
        atomistic = io.load_trajectory(io.bundled("alanine_dipeptide/ala2.xtc"), topology).xyz
    cg = backmapper.mapping.map(atomistic).astype(np.float32)
    frames = torch.from_numpy(cg)
    large = torch.from_numpy(np.resize(cg, (batch, *cg.shape[1:])))
    module = backmapper.module
    with torch.inference_mode():
        for k in range(20):  # warm-up: TorchScript profiles and optimises the first calls
            module(frames[k : k + 1], None, k)
            if k < 3:
                module(large, None, k)
        latencies = []
        for k in range(calls):
            one = frames[k % len(frames)].unsqueeze(0)
            tic = time.perf_counter()
            module(one, None, k)
            latencies.append(time.perf_counter() - tic)
        batched = []
        for k in range(repeats):
            tic = time.perf_counter()
            module(large, None, k)
            batched.append(time.perf_counter() - tic)
    wrapper = []
    large_numpy = large.numpy()
    for k in range(repeats):
        tic = time.perf_counter()
        backmapper(large_numpy, seed=k, batch_size=batch)
        wrapper.append(time.perf_counter() - tic)
    latencies_ms = np.array(latencies) * 1e3
    return {
        "model": backmapper.path.name,
        "rejection": backmapper.rejection,
        "n_beads": backmapper.n_beads,
        "n_atoms": backmapper.n_atoms,
        "latency_ms_median": float(np.median(latencies_ms)),
        "latency_ms_p95": float(np.percentile(latencies_ms, 95)),
        "frames_per_s_batch1": float(calls / np.sum(latencies)),
        "frames_per_s_batch": float(batch / statistics.median(batched)),
        "frames_per_s_batch_numpy_wrapper": float(batch / statistics.median(wrapper)),
        "batch": batch,
        "calls_batch1": calls,
        "repeats_batch": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--calls", type=int, default=1000, help="single-frame calls")
    parser.add_argument("--repeats", type=int, default=20, help="calls at the large batch")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ic.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = []
    for path in args.models:
        result = bench_model(path, args.calls, args.repeats, args.batch)
        results.append(result)
        print(
            f"{result['model']}: {result['n_beads']} beads -> {result['n_atoms']} atoms; "
            f"latency {result['latency_ms_median']:.2f} ms (p95 {result['latency_ms_p95']:.2f}); "
            f"{result['frames_per_s_batch1']:.0f} frames/s at batch 1, "
            f"{result['frames_per_s_batch']:.0f} frames/s at batch {args.batch} "
            f"({result['frames_per_s_batch_numpy_wrapper']:.0f} through the numpy wrapper)",
            flush=True,
        )
    report = {
        "benchmark": "ic backmapper speed",
        "command": " ".join(
            ["benchmarks/bench_ic.py", *(f"--{k.replace('_', '-')} {_shown(v)}" for k, v in vars(args).items() if k != "models"),
             "--models", *(_shown(p) for p in args.models)]
        ),
        **run_record(args.threads),
        "results": results,
    }
    io.write_json(args.out, report)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
