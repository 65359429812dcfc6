"""Time: temporal coherence, basin kinetics, Markov state models, throughput.

A backmapper that treats frames independently can reproduce every static distribution and
still produce a trajectory that jitters from frame to frame; these metrics see that.

- :func:`temporal_coherence`: frame-to-frame heavy-atom RMSD of the candidate relative to the
  reference's (ideal 1).
- :func:`ramachandran_states`: a residue's phi/psi basins as integer states, with the
  basins of :func:`openmmbackmap.bench.distributions.basin_populations` (one definition).
- :func:`basin_transition_rates`, :func:`implied_timescales`, :func:`kinetics_comparison`:
  transitions per ns, dwell times, and Markov state model (deeptime, reversible maximum
  likelihood) implied timescales of a discrete state trajectory.
- :func:`throughput`: frames per second of a backmapping callable.

Candidate and reference must have the same time between frames (``dt_ps``): all these
numbers depend on it.

Examples
--------
>>> import numpy as np
>>> states = np.array([0, 0, 0, 1, 1, 0, 0, 0, 1, 1])
>>> rates = basin_transition_rates(states, dt_ps=1.0)
>>> rates["n_transitions"], rates["mean_dwell_ps"]
(3, [3.0, 2.0])
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np
import openmm.app as app

from openmmbackmap.bench.distributions import BASINS, basin_index, ramachandran
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.geometry import aligned_rmsd

__all__ = [
    "BETA",
    "ALPHA_R",
    "ALPHA_L",
    "mean_step_rmsd",
    "temporal_coherence",
    "ramachandran_states",
    "basin_transition_rates",
    "implied_timescales",
    "kinetics_comparison",
    "blockwise_time_metrics",
    "throughput",
]

#: State labels of :func:`ramachandran_states`: positions in :data:`distributions.BASINS`.
BETA, ALPHA_R, ALPHA_L = (BASINS.index(name) for name in ("beta", "alpha_R", "alpha_L"))


# -- temporal coherence -----------------------------------------------------------------------


def mean_step_rmsd(xyz: np.ndarray, features: TopologyFeatures) -> float:
    """Mean heavy-atom RMSD between consecutive frames, each pair Kabsch-fitted on the heavy atoms, nm.

    Parameters
    ----------
    xyz
        (frames, atoms, 3) trajectory in nm, at least 2 frames.
    features
        Its topology's features (heavy atoms).
    """
    xyz = _trajectory(xyz, features, "xyz")
    heavy = np.flatnonzero(features.heavy)
    return float(aligned_rmsd(xyz[1:], xyz[:-1], fit_indices=heavy).mean())


def temporal_coherence(candidate: np.ndarray, reference: np.ndarray, features: TopologyFeatures) -> float:
    """Frame-to-frame heavy-atom RMSD of the candidate over that of the reference (dimensionless).

    ``mean_step_rmsd(candidate) / mean_step_rmsd(reference)``, where the step RMSD is the
    Kabsch-fitted heavy-atom RMSD between frames t and t+1 (:func:`mean_step_rmsd`).

    Ideal: 1. Above 1, the candidate moves more between frames than the dynamics do: a
    backmapper that ignores time (each frame backmapped independently, so side chains and
    hydrogens-bearing groups jump between samples) gives >1; on the bundled alanine
    dipeptide (1 ps frames) a time-shuffled reference gives about 1.7. Below 1: frames too
    alike (a frozen or over-smoothed trajectory).

    Parameters
    ----------
    candidate, reference
        (frames, atoms, 3) trajectories in nm with the same time between frames (a
        different stride changes the value: it is not corrected for).
    features
        Features of the shared topology.

    Raises
    ------
    ValueError
        If a trajectory has fewer than 2 frames, the atom counts differ from the topology's,
        or the reference never moves (step RMSD 0).
    """
    denominator = mean_step_rmsd(reference, features)
    if denominator <= 0:
        raise ValueError("the reference's consecutive frames are identical: temporal coherence is undefined")
    return mean_step_rmsd(candidate, features) / denominator


def _trajectory(xyz: np.ndarray, features: TopologyFeatures, name: str) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[1:] != (features.n_atoms, 3):
        raise ValueError(f"{name} must have shape (frames, {features.n_atoms}, 3), got {xyz.shape}")
    if xyz.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 frames, got {xyz.shape[0]}")
    return xyz


# -- Ramachandran states ----------------------------------------------------------------------


def ramachandran_states(xyz: np.ndarray, topology: app.Topology, residue: int | None = None) -> np.ndarray:
    """Ramachandran basin of one residue in every frame, as ints (``BETA``, ``ALPHA_R``, ``ALPHA_L``).

    The basins are those of :func:`openmmbackmap.bench.distributions.basin_populations`.

    Parameters
    ----------
    xyz
        (frames, atoms, 3) in nm.
    topology
        All-atom topology with bonds.
    residue
        Index of the residue; default: the only residue with both phi and psi (alanine
        dipeptide's ALA).

    Raises
    ------
    ValueError
        If ``residue`` has no phi/psi, or it is None and the number of residues with both
        is not exactly one.
    """
    angles = ramachandran(np.asarray(xyz, dtype=np.float64).reshape(-1, *np.shape(xyz)[-2:]), topology)
    if residue is None:
        if len(angles.residue_indices) != 1:
            raise ValueError(
                f"{len(angles.residue_indices)} residues have both phi and psi "
                f"({list(angles.residue_indices)}); name one with residue="
            )
        residue = int(angles.residue_indices[0])
    if residue not in list(angles.residue_indices):
        raise ValueError(f"residue {residue} has no phi/psi pair; residues with both: {list(angles.residue_indices)}")
    column = list(angles.residue_indices).index(residue)
    return basin_index(angles.phi[:, column], angles.psi[:, column])


# -- basin kinetics ---------------------------------------------------------------------------


def _states(states: np.ndarray, name: str = "states") -> np.ndarray:
    array = np.asarray(states)
    if array.ndim != 1 or array.size < 2:
        raise ValueError(f"{name} must be a 1-D state trajectory of at least 2 frames, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"{name} must hold integer state labels")
    array = array.astype(np.int64)
    if array.min() < 0:
        raise ValueError(f"{name} must hold non-negative state labels")
    return array


def basin_transition_rates(states: np.ndarray, dt_ps: float, n_states: int | None = None) -> dict[str, Any]:
    """Transitions per ns between every pair of states, dwell times and populations.

    A transition is a change of state between consecutive frames (so with frames further
    apart, fast recrossings are missed: compare trajectories with the same ``dt_ps``).

    Parameters
    ----------
    states
        1-D integer state trajectory (labels 0 .. n_states-1).
    dt_ps
        Time between frames, ps.
    n_states
        Number of states (default: largest label + 1).

    Returns
    -------
    dict
        ``rate_per_ns``: (n_states, n_states) nested list, transitions i -> j per ns of
        trajectory time ((frames - 1) * dt_ps); ``n_transitions``: total count;
        ``total_rate_per_ns``; ``mean_dwell_ps``: mean length of the uninterrupted runs in
        each state, ps (runs cut by the start or end of the trajectory included; ``nan``
        for an unvisited state); ``populations``: fraction of frames in each state.
        Ideal: the reference trajectory's values.
    """
    array = _states(states)
    if dt_ps <= 0:
        raise ValueError(f"dt_ps must be positive, got {dt_ps}")
    n = int(array.max()) + 1 if n_states is None else int(n_states)
    if array.max() >= n:
        raise ValueError(f"state label {int(array.max())} is not below n_states={n}")
    total_ns = (array.size - 1) * dt_ps * 1e-3
    counts = np.zeros((n, n), dtype=np.int64)
    change = np.flatnonzero(array[1:] != array[:-1])
    np.add.at(counts, (array[change], array[change + 1]), 1)
    # Runs: boundaries at every change.
    starts = np.concatenate([[0], change + 1])
    lengths = np.diff(np.concatenate([starts, [array.size]]))
    run_states = array[starts]
    dwell = [
        float(lengths[run_states == s].mean() * dt_ps) if np.any(run_states == s) else math.nan for s in range(n)
    ]
    return {
        "n_states": n,
        "n_transitions": int(change.size),
        "total_rate_per_ns": change.size / total_ns,
        "rate_per_ns": (counts / total_ns).tolist(),
        "mean_dwell_ps": dwell,
        "populations": (np.bincount(array, minlength=n) / array.size).tolist(),
    }


def _msm_timescales(states: np.ndarray, lag: int) -> np.ndarray:
    """Implied timescales (in frames) of a reversible MLE MSM on the largest connected set."""
    from deeptime.markov import TransitionCountEstimator
    from deeptime.markov.msm import MaximumLikelihoodMSM

    if lag < 1 or lag >= states.size:
        raise ValueError(f"lag must be in 1..{states.size - 1} frames, got {lag}")
    counts = TransitionCountEstimator(lagtime=int(lag), count_mode="sliding").fit_fetch(states)
    counts = counts.submodel_largest()
    if counts.n_states < 2:
        return np.empty(0)
    msm = MaximumLikelihoodMSM(reversible=True).fit_fetch(counts)
    # deeptime scales by the model's lag time, so these are in frames.
    return np.asarray(msm.timescales(), dtype=np.float64)


def implied_timescales(states: np.ndarray, lag_times: Sequence[int], dt_ps: float) -> np.ndarray:
    """Implied timescales of Markov state models at several lag times, ps.

    For each lag (in frames), a reversible maximum-likelihood MSM (deeptime
    ``MaximumLikelihoodMSM`` on sliding-window counts, restricted to the largest connected
    set of states) is estimated and its implied timescales ``-lag * dt / ln |lambda_i|``
    reported, slowest first. Converged (lag-independent) timescales are the kinetics of the
    basins; ideal: the reference trajectory's.

    Parameters
    ----------
    states
        1-D integer state trajectory.
    lag_times
        Lag times in frames (each >= 1 and below the trajectory length).
    dt_ps
        Time between frames, ps.

    Returns
    -------
    numpy.ndarray
        (len(lag_times), n_states - 1), ps, NaN-padded where a lag's connected set has fewer
        states (an unvisited state gives a NaN column).
    """
    array = _states(states)
    if dt_ps <= 0:
        raise ValueError(f"dt_ps must be positive, got {dt_ps}")
    n_states = int(array.max()) + 1
    out = np.full((len(lag_times), max(n_states - 1, 1)), np.nan)
    for row, lag in enumerate(lag_times):
        timescales = _msm_timescales(array, int(lag)) * dt_ps
        out[row, : timescales.size] = timescales
    return out


def kinetics_comparison(
    candidate_states: np.ndarray, reference_states: np.ndarray, dt_ps: float, lag: int
) -> dict[str, float]:
    """Slowest MSM implied timescale of candidate and reference, and their ratio.

    Parameters
    ----------
    candidate_states, reference_states
        1-D integer state trajectories with the same time between frames, e.g. from
        :func:`ramachandran_states`.
    dt_ps
        Time between frames, ps.
    lag
        MSM lag time, frames (as in :func:`implied_timescales`).

    Returns
    -------
    dict
        ``candidate_timescale_ps``, ``reference_timescale_ps`` (slowest implied timescale,
        ps; ``nan`` if the trajectory's connected set has a single state), ``ratio``
        (candidate / reference; ideal 1, below 1 means faster kinetics than the reference,
        e.g. a backmapper that ignores time and so hops between basins every frame), and
        ``lag_ps``.
    """
    values = []
    for name, states in (("candidate_states", candidate_states), ("reference_states", reference_states)):
        array = _states(states, name)
        timescales = _msm_timescales(array, int(lag)) * dt_ps
        values.append(float(timescales[0]) if timescales.size else math.nan)
    candidate, reference = values
    ratio = candidate / reference if reference > 0 else math.nan
    return {
        "candidate_timescale_ps": candidate,
        "reference_timescale_ps": reference,
        "ratio": ratio,
        "lag_ps": int(lag) * dt_ps,
    }


def blockwise_time_metrics(
    candidate_blocks: Sequence[np.ndarray],
    reference_blocks: Sequence[np.ndarray],
    features: TopologyFeatures,
    dt_ps: float,
) -> dict[str, Any]:
    """Temporal coherence and basin transition rates pooled over separate blocks of time.

    Held-out data come as several blocks (the tail of every training segment, whole test
    segments); joined end to end they would add a jump at every junction. Here steps and
    transitions are counted inside each block and pooled over blocks: the step RMSD is the
    mean over all within-block steps (:func:`mean_step_rmsd`), a rate is the number of
    within-block transitions over the summed block time ``(frames - 1) * dt_ps``
    (:func:`basin_transition_rates`, basins of :func:`ramachandran_states`).

    Parameters
    ----------
    candidate_blocks, reference_blocks
        Trajectories (frames, atoms, 3) in nm; block ``k`` of the candidate backmaps the CG
        of block ``k`` of the reference (same frames, same ``dt_ps``).
    features
        Features of the shared topology.
    dt_ps
        Time between frames, ps.

    Returns
    -------
    dict
        ``step_rmsd_nm`` and ``step_rmsd_reference_nm``; ``temporal_coherence`` (their
        ratio, ideal 1). With exactly one residue that has phi and psi (alanine dipeptide):
        ``transitions_per_ns`` and ``transitions_per_ns_reference``, ``transition_rate_ratio``
        (ideal 1), ``rate_per_ns`` and ``rate_per_ns_reference`` ((3, 3) nested lists,
        ``i -> j`` in :data:`BASINS` order) and ``populations``/``populations_reference``.

    Examples
    --------
    >>> from openmmbackmap import io
    >>> from openmmbackmap.bench.structure import TopologyFeatures
    >>> topology, _ = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    >>> xyz = io.load_trajectory(io.bundled("alanine_dipeptide/ala2.xtc"), topology).xyz
    >>> blocks = [xyz[:500], xyz[500:]]
    >>> metrics = blockwise_time_metrics(blocks, blocks, TopologyFeatures.from_topology(topology), dt_ps=1.0)
    >>> metrics["temporal_coherence"], metrics["transition_rate_ratio"]
    (1.0, 1.0)
    """
    if len(candidate_blocks) != len(reference_blocks) or not len(reference_blocks):
        raise ValueError("give one candidate block per reference block (at least one)")
    if dt_ps <= 0:
        raise ValueError(f"dt_ps must be positive, got {dt_ps}")
    heavy = np.flatnonzero(features.heavy)

    def steps(blocks: Sequence[np.ndarray], name: str) -> np.ndarray:
        return np.concatenate([
            aligned_rmsd(block[1:], block[:-1], fit_indices=heavy)
            for block in (_trajectory(b, features, name) for b in blocks)
        ])

    candidate_steps, reference_steps = steps(candidate_blocks, "candidate block"), steps(reference_blocks, "reference block")
    if len(candidate_steps) != len(reference_steps):
        raise ValueError("candidate and reference blocks must have the same numbers of frames")
    out: dict[str, Any] = {
        "dt_ps": float(dt_ps),
        "blocks": len(reference_blocks),
        "frames": int(sum(len(b) for b in reference_blocks)),
        "step_rmsd_nm": float(candidate_steps.mean()),
        "step_rmsd_reference_nm": float(reference_steps.mean()),
        "temporal_coherence": float(candidate_steps.mean() / reference_steps.mean()),
    }
    topology = features.topology
    if len(ramachandran(np.asarray(reference_blocks[0][:1]), topology).residue_indices) != 1:
        return out
    total_ns = len(reference_steps) * dt_ps * 1e-3
    n = len(BASINS)
    for suffix, blocks in (("", candidate_blocks), ("_reference", reference_blocks)):
        counts = np.zeros((n, n), dtype=np.int64)
        populations = np.zeros(n)
        for block in blocks:
            states = ramachandran_states(block, topology)
            change = np.flatnonzero(states[1:] != states[:-1])
            np.add.at(counts, (states[change], states[change + 1]), 1)
            populations += np.bincount(states, minlength=n)
        out[f"transitions_per_ns{suffix}"] = float(counts.sum() / total_ns)
        out[f"rate_per_ns{suffix}"] = (counts / total_ns).tolist()
        out[f"populations{suffix}"] = (populations / populations.sum()).tolist()
    reference_rate = out["transitions_per_ns_reference"]
    out["transition_rate_ratio"] = out["transitions_per_ns"] / reference_rate if reference_rate > 0 else math.nan
    return out


# -- speed ------------------------------------------------------------------------------------


def throughput(fn: Callable[[np.ndarray], Any], batch: np.ndarray, repeats: int = 5, warmup: int = 1) -> float:
    """Atomistic frames per second produced by ``fn(batch)`` (median over repeats).

    Parameters
    ----------
    fn
        Backmapper: maps a coarse-grained batch (frames, beads, 3) to atomistic frames
        (frames', atoms, 3); the frames it returns are counted (a generative model may
        return several per input frame). An output with 2 dimensions counts as one frame.
    batch
        The input batch.
    repeats
        Timed calls (``time.perf_counter``); the median time is used.
    warmup
        Untimed calls first (caches, compilation).

    Returns
    -------
    float
        Frames per second; higher is better (there is no ideal, only the reference's cost of
        simulating, see ``ns_per_day`` in :mod:`openmmbackmap.data`).
    """
    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    for _ in range(warmup):
        fn(batch)
    times = []
    n_out = 0
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(batch)
        times.append(time.perf_counter() - start)
        shape = tuple(out.shape) if hasattr(out, "shape") else np.shape(out)
        n_out = shape[0] if len(shape) == 3 else 1
    elapsed = statistics.median(times)
    if elapsed <= 0:
        elapsed = time.get_clock_info("perf_counter").resolution
    return n_out / elapsed
