"""The ``backmap`` command.

Subcommands:

``backmap map``
    Map an atomistic trajectory to CG beads with a builtin scheme or a mapping file.
``backmap schemes``
    List the builtin mapping schemes.
``backmap train``
    Train a backmapper on atomistic trajectory segments.
``backmap transfer``
    Make a ``gan`` model of a new molecule from one trained with ``--transferable`` on others.
``backmap apply``
    Backmap a CG trajectory with a trained model.
``backmap cgforce``
    Learn a CG force field by force matching (run in OpenMM through TorchForce).
``backmap bench``
    Score backmapped trajectories against a reference with the standard benchmark.
``backmap switch``
    Run a multiscale simulation described by a YAML file: CG dynamics, switches to atomistic
    resolution with a backmapper, restrained relaxation, atomistic MD, switches back.
``backmap demo``
    The main job on bundled data, for checking an installation: a multiscale run of alanine
    dipeptide (learned CG force field, shipped backmapper) that writes its atomistic trajectory,
    switch log and a plot.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from openmmbackmap import __version__, io
from openmmbackmap.errors import BackmapError, InputError
from openmmbackmap.mapping import Mapping, builtin_schemes

if TYPE_CHECKING:
    import openmm.app



def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``backmap`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="backmap",
        description="Coarse-grained <-> atomistic mapping and backmapping for OpenMM.",
    )
    parser.add_argument("--version", action="version", version=f"openmm-backmap {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    mapper = commands.add_parser(
        "map",
        help="map an atomistic trajectory to coarse-grained beads",
        description=(
            "Map an atomistic trajectory to CG beads and write the CG trajectory, the CG "
            "topology beside it (<out>.pdb: first frame) and the mapping (<out>.mapping.json). "
            "Molecules split by periodic boundaries are made whole first when the trajectory "
            "has a box."
        ),
    )
    mapper.add_argument("--topology", "-t", required=True, type=Path,
                        help="atomistic topology: .pdb, .cif, .gro, .prmtop, .psf or GROMACS .top")
    mapper.add_argument("--traj", "-f", type=Path,
                        help="atomistic trajectory: .xtc, .trr, .dcd, .nc, .pdb, .gro (default: the topology's coordinates)")
    how = mapper.add_mutually_exclusive_group(required=True)
    how.add_argument("--scheme", "-s", choices=sorted(builtin_schemes()), help="builtin mapping scheme (see `backmap schemes`)")
    how.add_argument("--mapping", "-m", type=Path,
                     help="mapping file: saved .json/.yaml, residue template .yaml/.json, GROMACS .ndx or Martini .map")
    mapper.add_argument("--out", "-o", required=True, type=Path, help="CG trajectory to write: .xtc, .dcd, .pdb or .gro")
    mapper.add_argument("--stride", type=int, default=1, help="use every N-th frame (default 1)")
    mapper.add_argument("--chunk", type=int, default=1000, help="frames read at a time (default 1000)")
    mapper.add_argument("--from-ff", choices=("charmm", "amber"), default=None,
                        help="Martini schemes: the atomistic naming vermouth should assume (default charmm)")
    mapper.set_defaults(handler=_run_map)

    schemes = commands.add_parser("schemes", help="list the builtin mapping schemes",
                                  description="List the builtin mapping schemes.")
    schemes.set_defaults(handler=_run_schemes)

    from openmmbackmap import training
    from openmmbackmap.models import rejection

    train = commands.add_parser(
        "train", help="train a backmapper on atomistic trajectories",
        description=("Train a backmapper (family ic, cvae or gan) on atomistic trajectory segments mapped with a "
                     "builtin scheme; the tail of every segment is held out as validation (time blocks, never random "
                     "frames), --test segments (or --test-tail) for the final test; the model file records both."),
    )
    training.configure_parser(train)
    train.set_defaults(handler=_run_train)

    transfer = commands.add_parser(
        "transfer", help="make a gan model of a new molecule from a transferable gan",
        description=("Build a gan backmapper of a molecule the model never saw, from a gan trained with --transferable "
                     "on other molecules: the new molecule's environments, reference geometry and ring closures come "
                     "from its topology and force field, the generator from the model; no trajectory of the new "
                     "molecule is used. Score the result with `backmap bench`."),
    )
    transfer.add_argument("--model", "-m", required=True, type=Path, help="gan trained with --transferable (.pt)")
    transfer.add_argument("--topology", "-t", required=True, type=Path,
                          help="all-atom structure of the new molecule (.pdb, .cif...): its topology, and the reference "
                               "of angles that no force-field term holds")
    transfer.add_argument("--scheme", "-s", required=True, choices=sorted(builtin_schemes()),
                          help="mapping scheme (anchored: ca, backbone...)")
    transfer.add_argument("--forcefield", nargs="+", default=None, metavar="XML",
                          help="OpenMM force field files of the new molecule (default: the model's)")
    transfer.add_argument("--out", "-o", required=True, type=Path, help="model file to write (.pt)")
    rejection.configure_parser(transfer)
    transfer.set_defaults(handler=_run_transfer)

    reject = commands.add_parser(
        "reject", help="make a model file redraw frames that clash or have a cis peptide",
        description=("Write a copy of a backmapper file whose TorchScript module redraws, from the same conditional "
                     "distribution, every frame in which heavy atoms more than three bonds apart overlap or a "
                     "non-proline peptide bond is cis (openmmbackmap.models.rejection); `backmap train` and "
                     "`backmap transfer` do this unless --rejection-rounds 0."),
    )
    reject.add_argument("--model", "-m", required=True, type=Path, help="backmapper file (.pt)")
    reject.add_argument("--out", "-o", required=True, type=Path, help="model file to write (.pt; may be --model)")
    rejection.configure_parser(reject)
    reject.set_defaults(handler=_run_reject)

    apply = commands.add_parser(
        "apply", help="backmap a CG trajectory with a trained model",
        description=("Backmap a CG trajectory with a trained model file and write the atomistic trajectory. A temporal "
                     "model (family cvae) runs along the trajectory, frame t conditioned on the frame it generated at "
                     "t-1, the samples side by side; it saves <out>.partial.npz as it goes and a rerun of the same "
                     "command resumes from it. A trajectory of a whole CG system (a GROMACS Martini run's .xtc with "
                     "the protein in water and ions) is read with --cg-top, which finds the model's beads in it. "
                     "Beads split by periodic boundaries are made whole (along the model's bead bonds) when the "
                     "trajectory has a box."),
    )
    apply.add_argument("--model", "-m", required=True, type=Path, help="backmapper file (.pt)")
    apply.add_argument("--cg", required=True, type=Path,
                       help="CG trajectory: .xtc/.dcd/.trr/.nc/.pdb/.gro with the model's beads in its order, or a "
                            "whole CG system (e.g. a Martini run with water and ions) together with --cg-top")
    apply.add_argument("--cg-top", type=Path,
                       help="structure or topology of the whole CG system in --cg (.gro, .pdb or GROMACS .top; a .tpr: "
                            "convert it with gmx editconf): the model's beads are picked out of it by residue and bead "
                            "names, in the model's order (one contiguous run; anything else is refused with the first "
                            "bead that differs)")
    apply.add_argument("--out", "-o", required=True, type=Path, help="atomistic output: .xtc, .dcd, .pdb or .gro")
    apply.add_argument("--samples", type=int, default=1,
                       help="independent samples per frame; more than 1 writes <out>.sample<k><suffix>")
    apply.add_argument("--seed", type=int, default=0)
    apply.add_argument("--batch-size", type=int, default=1024)
    apply.set_defaults(handler=_run_apply)

    from openmmbackmap import cgforce

    cg_force_field = commands.add_parser(
        "cgforce", help="learn a CG force field (force matching) for OpenMM's TorchForce",
        description=("Force-match a CG force field (physical prior + neural network) on atomistic positions "
                     "and forces (reference-data segments), or refine its torsions by iterative Boltzmann "
                     "inversion; the model runs in OpenMM through openmmtorch.TorchForce."),
    )
    cgforce.configure_parser(cg_force_field)
    cg_force_field.set_defaults(handler=_run_cgforce)

    bench = commands.add_parser(
        "bench",
        help="score backmapped trajectories against a reference",
        description=(
            "Score backmapped trajectories (ours or other tools') against the reference they were "
            "made from: bonds, clashes, stereochemistry, distributions, accuracy, MD readiness, "
            "temporal coherence and kinetics. Candidate atoms are matched to the reference by "
            "residue and atom name. Candidate frame i must be the backmapping of reference frame i's "
            "CG image for the accuracy metrics. Writes results.json, report.md and plots to --out."
        ),
    )
    bench.add_argument("--topology", "-t", required=True, type=Path, help="reference atomistic topology")
    bench.add_argument("--reference", "-r", required=True, type=Path, help="reference atomistic trajectory")
    bench.add_argument("--candidates", "-c", type=Path, nargs="+", default=[],
                       help="backmapped trajectories; .pdb/.gro/.cif carry their own topology")
    bench.add_argument("--candidate-topology", type=Path,
                       help="topology of candidate trajectories that have none (default: the reference's)")
    bench.add_argument("--out", "-o", required=True, type=Path, help="folder for the report")
    bench.add_argument("--stride", type=int, default=1, help="use every N-th frame of every trajectory")
    bench.add_argument("--heavy-only", action="store_true", help="score heavy atoms only (for tools that write no hydrogens)")
    bench.add_argument("--readiness-frames", type=int, default=20,
                       help="frames checked for MD readiness with OpenMM (0: skip; default 20)")
    bench.add_argument("--forcefield", nargs="+", default=["amber99sbildn.xml", "amber99_obc.xml"],
                       help="OpenMM force field files for MD readiness")
    bench.add_argument("--seed", type=int, default=0, help="seed of the MD-readiness runs and the peers")
    bench.add_argument("--peers", type=lambda text: [p for p in text.split(",") if p], default=[],
                       help="other tools to run on CG images of reference frames and score alike, e.g. cgback,cg2at2")
    bench.add_argument("--peer-frames", type=int, default=5, help="reference frames the peers backmap (default 5)")
    bench.set_defaults(handler=_run_bench)

    from openmmbackmap import switch_config

    switch = commands.add_parser(
        "switch",
        help="run a multiscale simulation (CG <-> atomistic switching)",
        description=("Run the multiscale simulation a YAML config describes (see openmmbackmap.switch_config): "
                     "CG dynamics, scheduled switches to atomistic resolution with a backmapper, restrained "
                     "relaxation, optional atomistic MD and map back. Writes the relaxed atomistic structure of "
                     "every switch, a switch log, a plot, a summary and a checkpoint; running the same command "
                     "again after an interruption resumes the run."),
    )
    switch_config.configure_parser(switch)
    switch.set_defaults(handler=_run_switch)

    demo = commands.add_parser(
        "demo",
        help="multiscale run of the bundled alanine dipeptide",
        description=(
            "Alanine dipeptide, CG (backbone beads) with the shipped learned CG force field (TorchForce), "
            "switched to atomistic resolution (amber99sbildn + OBC) every 2,000 CG steps with the shipped "
            "ic backmapper, relaxed under mapping restraints, 200 steps of atomistic MD, mapped back. "
            "Writes the config, the atomistic trajectory, the switch log, a plot and a summary to --out-dir."
        ),
    )
    demo.add_argument("--out-dir", type=Path, default=Path("backmap-demo"), help="folder for the outputs (default ./backmap-demo)")
    demo.add_argument("--steps", type=int, default=20000, help="CG steps (default 20000: 40 ps, 10 switches)")
    demo.set_defaults(handler=_run_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``backmap`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BackmapError as exc:
        print(f"backmap: error: {exc}", file=sys.stderr)
        return 1


def map_trajectory(
    mapping: Mapping,
    trajectory: Path | None,
    out: Path,
    *,
    stride: int = 1,
    chunk: int = 1000,
    topology_source: Path | None = None,
    positions: np.ndarray | None = None,
) -> dict:
    """Map a trajectory file chunk by chunk and write the CG outputs.

    Writes ``out`` (the CG trajectory), ``out`` with suffix ``.pdb`` (the CG topology with
    the first frame; skipped when ``out`` is itself a PDB) and ``.mapping.json``. Nothing is
    written unless the whole trajectory mapped.

    Returns
    -------
    dict
        Summary numbers: frames, atoms, beads, seconds spent mapping, output paths.
    """
    cg_chunks, times, boxes = [], [], []
    mapping_seconds = 0.0
    if trajectory is None:
        if positions is None:
            raise BackmapError("no trajectory given and the topology file has no coordinates")
        chunks = [(positions[None].astype(np.float32), None, None)]
    else:
        chunks = (
            (t.xyz, t.time, t.unitcell_vectors)
            for t in io.iter_trajectory(trajectory, mapping.topology, chunk=chunk, stride=stride,
                                        topology_source=topology_source)
        )
    for xyz, time_ps, box in chunks:
        start = time.perf_counter()
        cg_chunks.append(mapping.map(xyz, unitcell_vectors=box))
        mapping_seconds += time.perf_counter() - start
        times.append(time_ps)
        boxes.append(box)
    cg = np.concatenate(cg_chunks)
    time_ps = None if times[0] is None else np.concatenate(times)
    box = None if boxes[0] is None else np.concatenate(boxes)

    outputs = [out]
    io.write_trajectory(out, cg, mapping.cg_topology, time=time_ps, unitcell_vectors=box)
    if out.suffix.lower() != ".pdb":
        topology_out = out.with_suffix(".pdb")
        io.write_trajectory(topology_out, cg[0], mapping.cg_topology,
                            unitcell_vectors=None if box is None else box[:1])
        outputs.append(topology_out)
    mapping_out = out.with_suffix(".mapping.json")
    mapping.save(mapping_out)
    outputs.append(mapping_out)
    return {
        "frames": len(cg),
        "atoms": mapping.n_atoms,
        "beads": mapping.n_beads,
        "mapping_seconds": mapping_seconds,
        "outputs": outputs,
        "cg": cg,
    }


def _load_mapping(args: argparse.Namespace, topology) -> Mapping:
    if args.mapping is not None:
        return Mapping.load(args.mapping, topology)
    options = {"from_ff": args.from_ff} if args.scheme.startswith("martini") and args.from_ff else {}
    return Mapping.from_scheme(topology, args.scheme, **options)


def _run_map(args: argparse.Namespace) -> int:
    if args.stride < 1 or args.chunk < 1:
        raise BackmapError("--stride and --chunk must be positive")
    topology, positions = io.load_topology(args.topology)
    mapping = _load_mapping(args, topology)
    summary = map_trajectory(mapping, args.traj, args.out, stride=args.stride, chunk=args.chunk,
                             topology_source=args.topology, positions=positions)
    _print_summary(mapping, summary)
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    from openmmbackmap.bench.benchmark import run_benchmark

    if args.stride < 1 or args.readiness_frames < 0 or args.peer_frames < 1:
        raise BackmapError("--stride and --peer-frames must be positive and --readiness-frames not negative")
    if not args.candidates and not args.peers:
        raise BackmapError("give --candidates, --peers or both")
    written = run_benchmark(
        topology=args.topology, reference=args.reference, candidates=args.candidates,
        candidate_topology=args.candidate_topology, out_dir=args.out, stride=args.stride,
        heavy_only=args.heavy_only, readiness_frames=args.readiness_frames,
        forcefield_files=args.forcefield, seed=args.seed, peers=args.peers, peer_frames=args.peer_frames,
    )
    print(written["markdown"].read_text().split("\n\nMetric definitions")[0])
    print("\nwrote " + ", ".join(str(p) for p in [written["json"], written["markdown"], *written["plots"]]))
    return 0


def _run_train(args: argparse.Namespace) -> int:
    import shlex

    from openmmbackmap import training

    return training.run(args, shlex.join(["backmap", *sys.argv[1:]]))


def _run_transfer(args: argparse.Namespace) -> int:
    import shlex

    from openmmbackmap import training
    from openmmbackmap.models import rejection

    rejection.check_options(args)
    topology, positions = io.load_topology(args.topology)
    mapping = Mapping.from_scheme(topology, args.scheme)
    result = training.transfer_gan(args.model, mapping, positions, forcefield_files=args.forcefield)
    result.provenance["command"] = shlex.join(["backmap", *sys.argv[1:]])
    result.provenance["topology"] = {"file": str(args.topology), "sha256": io.file_sha256(args.topology)}
    rejection.apply_options(result, args)
    path = training.save_result(result, args.out)
    print(f"wrote {path}: a gan of {mapping} from {args.model} (no data of this molecule used)")
    return 0


def _run_reject(args: argparse.Namespace) -> int:
    import shlex

    from openmmbackmap.models import rejection

    rejection.check_options(args)
    if args.rejection_rounds < 1:
        raise InputError(f"backmap reject needs --rejection-rounds of at least 1; got {args.rejection_rounds}")
    path = rejection.add_rejection(args.model, args.out, min_ratio=args.clash_min_ratio, rounds=args.rejection_rounds,
                                   command=shlex.join(["backmap", *sys.argv[1:]]))
    print(f"wrote {path}: {args.model} redrawing defective frames up to {args.rejection_rounds} times")
    return 0


def _run_cgforce(args: argparse.Namespace) -> int:
    import shlex

    from openmmbackmap import cgforce

    return cgforce.run(args, shlex.join(["backmap", *sys.argv[1:]]))


def _run_apply(args: argparse.Namespace) -> int:
    from openmmbackmap.models import load_backmapper

    if args.samples < 1 or args.batch_size < 1:
        raise BackmapError("--samples and --batch-size must be positive")
    backmapper = load_backmapper(args.model)
    cg = load_model_beads(args.cg, backmapper, cg_topology=args.cg_top)
    outputs = [args.out] if args.samples == 1 else [
        args.out.with_name(f"{args.out.stem}.sample{k}{args.out.suffix}") for k in range(args.samples)
    ]
    start = time.perf_counter()
    if backmapper.temporal:
        interval = backmapper.frame_interval_ps
        if interval and cg.n_frames > 1 and not np.isclose(cg.timestep, interval, rtol=1e-3):
            print(f"backmap: warning: {args.model.name} was trained on frames {interval:g} ps apart; {args.cg.name} has "
                  f"{cg.timestep:g} ps between frames", file=sys.stderr)
        checkpoint = args.out.with_name(args.out.name + ".partial.npz")
        if checkpoint.is_file():
            print(f"resuming from {checkpoint}", file=sys.stderr)
        def progress(done: int) -> None:
            if done % 100 == 0 or done == cg.n_frames:
                print(f"\r{len(outputs)} sample(s) along the trajectory: {done}/{cg.n_frames} frames", end="",
                      file=sys.stderr, flush=True)

        trajectories = backmapper.trajectory(cg.xyz, samples=args.samples, seed=args.seed, checkpoint=checkpoint,
                                             progress=progress)
        print(file=sys.stderr)
        for out, atoms in zip(outputs, trajectories):
            io.write_trajectory(out, atoms, backmapper.topology, time=cg.time, unitcell_vectors=cg.unitcell_vectors)
        checkpoint.unlink(missing_ok=True)
    for k, out in enumerate(outputs if not backmapper.temporal else []):
        atoms = np.empty((cg.n_frames, backmapper.n_atoms, 3), dtype=np.float32)
        for first in range(0, cg.n_frames, args.batch_size):
            last = min(first + args.batch_size, cg.n_frames)
            # one seed per (sample, batch): reruns give the same frames whatever was run before
            atoms[first:last] = backmapper(cg.xyz[first:last], seed=args.seed + 1_000_003 * k + first)
            print(f"\rsample {k + 1}/{len(outputs)}: {last}/{cg.n_frames} frames", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        io.write_trajectory(out, atoms, backmapper.topology, time=cg.time, unitcell_vectors=cg.unitcell_vectors)
    seconds = time.perf_counter() - start
    frames = cg.n_frames * len(outputs)
    print(f"{backmapper}: {frames} frames in {seconds:.2f} s ({frames / max(seconds, 1e-9):,.0f} frames/s); "
          f"wrote {', '.join(map(str, outputs))}")
    return 0


def load_model_beads(trajectory: Path, backmapper, *, cg_topology: Path | None = None, chunk: int = 1000):
    """The frames of a backmapper's beads from a CG trajectory, as an ``mdtraj.Trajectory`` on the model's CG topology.

    Parameters
    ----------
    trajectory
        CG trajectory (.xtc, .trr, .dcd, .nc, .pdb, .gro).
    backmapper
        The loaded model (:func:`openmmbackmap.models.load_backmapper`).
    cg_topology
        The whole CG system's .gro, .pdb or .top when the trajectory holds more than the model's
        beads (a protein in Martini water with ions): the beads are picked by residue and bead names
        (:func:`openmmbackmap.gromacs.find_model_beads`). None: the trajectory holds exactly the
        model's beads, in its order.
    chunk
        Frames read at a time (only the model's beads are kept in memory).

    Beads split by periodic boundaries (GROMACS writes each particle wrapped into the box) are
    made whole along the model's bead bonds when the trajectory has a box.
    """
    import mdtraj

    bead_topology = backmapper.mapping.cg_topology
    md_beads = io.to_mdtraj_topology(bead_topology)
    if cg_topology is None:
        indices, system_topology, source = None, bead_topology, f"model {backmapper.path.name}"
    else:
        from openmmbackmap import gromacs

        particles = gromacs.read_cg_particles(cg_topology)
        indices = gromacs.find_model_beads(cg_topology, backmapper.mapping, particles=particles)
        system_topology, source = _particles_topology(particles), cg_topology
    frames = []
    for traj in io.iter_trajectory(trajectory, system_topology, chunk=chunk, topology_source=source):
        xyz = traj.xyz if indices is None else traj.xyz[:, indices]
        box = traj.unitcell_vectors
        if box is not None and np.all(np.abs(np.linalg.det(box)) > 0):
            xyz = io.make_molecules_whole(xyz, box, bead_topology)
        frames.append(mdtraj.Trajectory(np.ascontiguousarray(xyz), md_beads, time=traj.time,
                                        unitcell_lengths=traj.unitcell_lengths, unitcell_angles=traj.unitcell_angles))
    return frames[0] if len(frames) == 1 else mdtraj.join(frames, check_topology=False)


def _particles_topology(particles: list) -> "openmm.app.Topology":
    """A bare OpenMM topology (names only, one chain) of a CG system's particles, to read its trajectory."""
    import openmm.app as app

    topology = app.Topology()
    chain = topology.addChain()
    residue, last = None, None
    for particle in particles:
        if (particle.resid, particle.resname) != last:
            residue = topology.addResidue(particle.resname, chain, str(particle.resid))
            last = (particle.resid, particle.resname)
        topology.addAtom(particle.name, None, residue)
    return topology


def _run_schemes(args: argparse.Namespace) -> int:
    for name, description in builtin_schemes().items():
        print(f"{name:12s} {description}")
    return 0


def _run_switch(args: argparse.Namespace) -> int:
    from openmmbackmap import switch_config

    return switch_config.run(args)


def _run_demo(args: argparse.Namespace) -> int:
    from openmmbackmap import switch_config

    config = switch_config.demo_config(args.out_dir, steps=args.steps)
    print(f"openmm-backmap {__version__}: multiscale run of alanine dipeptide ({config})")
    return switch_config.run(argparse.Namespace(config=config, restart=True, no_progress=False))


def _print_summary(mapping: Mapping, summary: dict) -> None:
    frames = summary["frames"]
    rate = frames / summary["mapping_seconds"] if summary["mapping_seconds"] > 0 else float("inf")
    print(f"\n{mapping.scheme}: {summary['atoms']} atoms -> {summary['beads']} beads, {frames} frames "
          f"mapped in {summary['mapping_seconds'] * 1e3:.1f} ms ({rate:,.0f} frames/s)")
    print(f"  fingerprint {mapping.fingerprint[:16]}")
    cg = summary["cg"]
    names = [bead.name for bead in mapping.beads]
    shown = 8  # a protein has hundreds of bead bonds; the first few show the shape
    for i, j in mapping.bead_bonds[:shown]:
        length = np.linalg.norm(cg[:, i] - cg[:, j], axis=-1)
        print(f"  bond {names[i]}{i}-{names[j]}{j}: {length.mean():.4f} +/- {length.std():.4f} nm")
    if len(mapping.bead_bonds) > shown:
        print(f"  ... and {len(mapping.bead_bonds) - shown} more bead bonds")
    print("  wrote " + ", ".join(str(path) for path in summary["outputs"]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
