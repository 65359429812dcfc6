"""Running the benchmark on files: load, match, score, report (what ``backmap bench`` does)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from openmmbackmap import __version__, io
from openmmbackmap.bench.matching import match_atoms
from openmmbackmap.bench.readiness import ReadinessChecker
from openmmbackmap.bench.report import write_report
from openmmbackmap.bench.scorecard import score
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.errors import BackmapError

#: Candidate formats that carry their own topology.
SELF_DESCRIBING = (".pdb", ".gro", ".cif", ".pdbx")


def run_benchmark(
    *,
    topology: str | os.PathLike,
    reference: str | os.PathLike,
    candidates: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    candidate_topology: str | os.PathLike | None = None,
    stride: int = 1,
    heavy_only: bool = False,
    readiness_frames: int = 20,
    forcefield_files: Sequence[str] = ("amber99sbildn.xml", "amber99_obc.xml"),
    seed: int = 0,
    peers: Sequence[str] = (),
    peer_frames: int = 5,
) -> dict:
    """Score candidate trajectory files against a reference trajectory and write the report.

    Parameters
    ----------
    topology, reference
        Reference atomistic topology and trajectory.
    candidates
        Backmapped trajectories. Formats with a topology (.pdb, .gro, .cif) use their own;
        others use ``candidate_topology`` or, by default, the reference topology.
    out_dir
        Report folder (see :func:`openmmbackmap.bench.report.write_report`).
    stride
        Every ``stride``-th frame of each trajectory.
    heavy_only
        Score heavy atoms only; MD readiness is then skipped (it needs hydrogens).
    readiness_frames
        Frames checked for MD readiness (0 skips it).
    forcefield_files
        OpenMM force field for MD readiness.
    seed
        Seed of the MD-readiness runs and of the peers.
    peers
        Other tools (:mod:`openmmbackmap.bench.peers`) to run on CG images of ``peer_frames``
        evenly spaced reference frames, made with our mappings (``ca`` for C-alpha tools,
        ``martini3`` for Martini tools); their outputs are scored like any candidate, paired
        with those reference frames.

    Returns
    -------
    dict
        The paths written (``json``, ``markdown``, ``plots``) and the scorecards (``cards``).
    """
    reference_topology, _ = io.load_topology(topology)
    reference_trajectory = io.load_trajectory(reference, reference_topology, stride=stride, topology_source=topology)
    dt_ps = float(reference_trajectory.timestep) if reference_trajectory.n_frames > 1 else None
    if dt_ps is not None and not dt_ps > 0:
        dt_ps = None  # formats without times (PDB, GRO): no time metrics
    shared_topology = None if candidate_topology is None else io.load_topology(candidate_topology)[0]

    matched: dict[str, np.ndarray] = {}
    paired_reference: dict[str, np.ndarray] = {}  # candidates scored on a subset of reference frames
    notes: dict[str, str] = {}
    reference_indices = None
    for path in map(Path, candidates):
        if path.suffix.lower() in SELF_DESCRIBING:
            own_topology, _ = io.load_topology(path)
        else:
            own_topology = shared_topology or reference_topology
        trajectory = io.load_trajectory(path, own_topology, stride=stride)
        match = match_atoms(reference_topology, own_topology, heavy_only=heavy_only, candidate_source=str(path))
        if reference_indices is not None and not np.array_equal(reference_indices, match.reference):
            raise BackmapError(f"{path}: matches a different set of reference atoms than the other candidates")
        reference_indices = match.reference
        name = path.name if path.name not in matched else str(path)
        matched[name] = trajectory.xyz[:, match.candidate]

    for name in peers:
        xyz, frames, note, match = _run_peer(name, reference_topology, reference_trajectory.xyz, Path(out_dir),
                                             peer_frames, heavy_only, seed)
        notes[name] = note
        if match is None:
            continue
        if reference_indices is not None and not np.array_equal(reference_indices, match.reference):
            raise BackmapError(f"peer {name}: matches a different set of reference atoms than the other candidates")
        reference_indices = match.reference
        matched[name] = xyz
        paired_reference[name] = frames
    if reference_indices is None:
        raise BackmapError("nothing to score: no candidate file given and no peer produced a structure")

    scored_topology = match.reference_topology(reference_topology)
    features = TopologyFeatures.from_topology(scored_topology)
    if heavy_only:  # without hydrogens no atom has four neighbours: take the centres from the full topology
        features = features.with_chiral_centres_from(TopologyFeatures.from_topology(reference_topology), reference_indices)
    reference_xyz = reference_trajectory.xyz[:, reference_indices]
    checker = None
    if readiness_frames > 0 and not heavy_only:
        checker = ReadinessChecker.from_topology(scored_topology, forcefield_files=tuple(forcefield_files))
    cards = {}
    for name, xyz in matched.items():
        if name in paired_reference:  # a peer: its frames pair with a subset of the reference, not in time
            cards[name] = score(xyz, reference_xyz[paired_reference[name]], features, readiness_checker=checker,
                                readiness_frames=readiness_frames, seed=seed)
        else:
            cards[name] = score(xyz, reference_xyz, features, readiness_checker=checker,
                                readiness_frames=readiness_frames, dt_ps=dt_ps, seed=seed)
    for name, note in notes.items():
        cards.setdefault(name, {})["peer"] = note
    provenance = {
        "openmm_backmap": __version__,
        "reference": f"{reference} (topology {topology}), {len(reference_xyz)} frames, stride {stride}",
        "candidates": ", ".join(f"{name} ({len(xyz)} frames)" for name, xyz in matched.items()),
        "atoms scored": f"{features.n_atoms}" + (" (heavy atoms only)" if heavy_only else ""),
        "time between frames": f"{dt_ps} ps" if dt_ps else "unknown (no time metrics)",
        "MD readiness": f"{readiness_frames} frames, {' + '.join(forcefield_files)}" if checker else "not scored",
        **{f"peer {name}": note for name, note in notes.items()},
    }
    written = write_report(out_dir, {n: c for n, c in cards.items() if "bonds" in c}, features=features,
                           reference=reference_xyz, candidates=matched, provenance=provenance)
    written["cards"] = cards
    return written


#: The mapping scheme that makes each kind of peer input from the reference.
PEER_INPUT_SCHEMES = {"ca": "ca", "martini": "martini3"}


def _run_peer(name: str, topology, reference_xyz: np.ndarray, out_dir: Path, n_frames: int,
              heavy_only: bool, seed: int):
    """Run one peer on CG images of evenly spaced reference frames.

    Returns (candidate xyz, reference frame indices, a note for the report, AtomMatch or None).
    A frame the tool fails on is counted in the note, not hidden; if every frame fails the
    peer has no scorecard, only its note.
    """
    from openmmbackmap.bench.peers import PeerError, get_peer
    from openmmbackmap.mapping import Mapping

    peer = get_peer(name, threads=1)
    available, reason = peer.available()
    if not available:
        raise BackmapError(f"peer {name} cannot run here: {reason}")
    mapping = Mapping.from_scheme(topology, PEER_INPUT_SCHEMES[peer.input_kind])
    frames = np.unique(np.linspace(0, len(reference_xyz) - 1, max(1, n_frames)).round().astype(int))
    workdir = out_dir / "peers" / name
    outputs, used, failures, match = [], [], [], None
    for frame in frames:
        cg_pdb = io.write_trajectory(workdir / f"frame{frame:06d}_cg.pdb", mapping.map(reference_xyz[frame]),
                                     mapping.cg_topology)
        try:
            result = peer.run(cg_pdb, workdir, seed=seed + int(frame))
        except PeerError as exc:
            failures.append(f"frame {frame}: {exc}")
            continue
        result_topology, result_positions = io.load_topology(result)
        match = match_atoms(topology, result_topology, heavy_only=heavy_only, candidate_source=str(result))
        outputs.append(result_positions[match.candidate])
        used.append(frame)
    note = (f"{peer.version()}, input {PEER_INPUT_SCHEMES[peer.input_kind]} CG of {len(frames)} reference "
            f"frames, {len(used)} backmapped" + (f"; failed: {'; '.join(failures)[:500]}" if failures else ""))
    if not outputs:
        return None, None, note, None
    return np.stack(outputs).astype(np.float32), np.array(used), note, match
