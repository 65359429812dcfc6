"""One candidate scored against the reference on every criterion: the benchmark's scorecard.

:func:`score` calls the metric modules and gathers their numbers into one nested dict of
plain numbers (JSON-ready). Wherever a metric has a value on the reference itself (clashes,
cis peptides, ring piercing, basin populations), the reference's value sits beside the
candidate's, because a clash count means little without the count of real structures.

Candidate frame ``i`` is assumed to be the backmapping of the CG image of reference frame
``i`` (same number of frames): accuracy metrics pair them; distribution metrics do not need
the pairing.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from openmmbackmap.bench import accuracy, distributions, kinetics, structural
from openmmbackmap.bench.readiness import ReadinessChecker, readiness
from openmmbackmap.bench.structure import TopologyFeatures


def score(
    candidate: np.ndarray,
    reference: np.ndarray,
    features: TopologyFeatures,
    *,
    samples: np.ndarray | None = None,
    readiness_checker: ReadinessChecker | None = None,
    readiness_frames: int = 20,
    dt_ps: float | None = None,
    kinetics_lag: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Score a backmapped trajectory against the reference.

    Parameters
    ----------
    candidate
        Backmapped coordinates (frames, atoms, 3), nm, atoms in the reference's order.
    reference
        Reference coordinates (frames, atoms, 3), nm.
    features
        :class:`TopologyFeatures` of the (matched) reference topology.
    samples
        Optional (n_samples, frames, atoms, 3): several backmappings of the same CG frames,
        for best-of-N accuracy and diversity.
    readiness_checker
        Optional :class:`ReadinessChecker` (an OpenMM System of the topology); MD readiness
        is scored on ``readiness_frames`` evenly spaced frames when given.
    dt_ps
        Time between frames; temporal coherence and kinetics are scored when given.
    kinetics_lag
        Lag (frames) of the Markov models compared.
    seed
        Seed of the MD-readiness runs.

    Returns
    -------
    dict
        Sections ``bonds``, ``clashes``, ``stereochemistry``, ``distributions``,
        ``accuracy`` (paired frames only), ``diversity`` (with samples), ``readiness`` (with a
        checker), ``time`` (with ``dt_ps``), and ``seconds`` spent on each section.
    """
    candidate = np.asarray(candidate)
    reference = np.asarray(reference)
    topology = features.topology
    result: dict[str, Any] = {"frames": int(len(candidate)), "reference_frames": int(len(reference))}
    seconds: dict[str, float] = {}

    def timed(section: str, compute) -> None:
        start = time.perf_counter()
        result[section] = compute()
        seconds[section] = time.perf_counter() - start

    timed("bonds", lambda: {
        "bond_score": structural.bond_score(candidate, reference, features),
        "bond_score_auc": structural.bond_score_auc(candidate, reference, features),
        "graph_edit_ratio": structural.graph_edit_ratio(candidate, features),
        "graph_edit_ratio_reference": structural.graph_edit_ratio(reference, features),
    })
    timed("clashes", lambda: {
        "severe_percent": structural.severe_clash_percentage(candidate, features),
        "severe_percent_reference": structural.severe_clash_percentage(reference, features),
        "clashscore": structural.clashscore(candidate, features),
        "clashscore_reference": structural.clashscore(reference, features),
    })
    timed("stereochemistry", lambda: {
        "chirality": structural.chirality_errors(candidate, reference, features),
        "cis_peptides": structural.cis_peptides(candidate, features),
        "cis_peptides_reference": structural.cis_peptides(reference, features),
        "ring_piercing": structural.ring_piercing(candidate, features),
        "ring_piercing_reference": structural.ring_piercing(reference, features),
    })
    timed("distributions", lambda: _distributions(candidate, reference, features))
    if len(candidate) == len(reference):
        timed("accuracy", lambda: {
            **_rmsd_summary(accuracy.heavy_atom_rmsd(candidate, reference, features)),
            "chi1_within_40_degrees": accuracy.chi1_accuracy(candidate, reference, topology),
        })
    if samples is not None:
        timed("diversity", lambda: {
            **accuracy.diversity(samples, reference, features),
            **{k: v for k, v in accuracy.best_of_n_rmsd(samples, reference, features).items() if np.ndim(v) == 0},
        })
    if readiness_checker is not None and readiness_frames > 0:
        timed("readiness", lambda: _summary(readiness(candidate, readiness_checker, n_frames=readiness_frames, seed=seed)))
    if dt_ps is not None and len(candidate) > 1:
        timed("time", lambda: _time(candidate, reference, features, dt_ps, kinetics_lag))
    result["seconds"] = seconds
    return _plain(result)


def _distributions(candidate: np.ndarray, reference: np.ndarray, features: TopologyFeatures) -> dict:
    jsd = distributions.internal_coordinate_jsd(candidate, reference, features)
    out = {
        "jsd_bonds": jsd["mean_bonds"],
        "jsd_angles": jsd["mean_angles"],
        "jsd_dihedrals": jsd["mean_dihedrals"],
        "jsd_worst": {kind: _worst(jsd[kind]) for kind in ("bonds", "angles", "dihedrals")},
    }
    rama = distributions.ramachandran(reference[:1], features.topology)
    if len(rama.residue_indices):
        out["ramachandran_jsd"] = distributions.ramachandran_jsd(candidate, reference, features.topology)["mean"]
        out["basin_populations"] = distributions.basin_populations(candidate, features.topology)["all"]
        out["basin_populations_reference"] = distributions.basin_populations(reference, features.topology)["all"]
        out["basin_difference_points"] = distributions.basin_population_difference(candidate, reference, features.topology)
    if distributions.chi_indices(features.topology):
        out["chi_jsd"] = distributions.chi_jsd(candidate, reference, features.topology)["mean"]
    return out


def _worst(per_type: dict[str, float]) -> dict[str, Any]:
    if not per_type:
        return {}
    label = max(per_type, key=per_type.get)
    return {"type": label, "jsd": per_type[label]}


def _rmsd_summary(rmsd: dict) -> dict:
    return {f"rmsd_{key[5:]}_nm": value for key, value in rmsd.items() if key.startswith("mean_")}


def _summary(values: dict) -> dict:
    """The scalar entries of a metric's result (per-frame lists stay out of the scorecard)."""
    return {key: value for key, value in values.items() if np.ndim(value) == 0}


def _time(candidate: np.ndarray, reference: np.ndarray, features: TopologyFeatures, dt_ps: float, lag: int) -> dict:
    out: dict[str, Any] = {
        "dt_ps": dt_ps,
        "temporal_coherence": kinetics.temporal_coherence(candidate, reference, features),
    }
    rama = distributions.ramachandran(reference[:1], features.topology)
    if len(rama.residue_indices) == 1 and len(candidate) > 2 * lag:
        # One backbone residue (alanine dipeptide): its basins are the states of the kinetics.
        states_candidate = kinetics.ramachandran_states(candidate, features.topology)
        states_reference = kinetics.ramachandran_states(reference, features.topology)
        out["kinetics"] = kinetics.kinetics_comparison(states_candidate, states_reference, dt_ps, lag)
        out["transitions_per_ns"] = kinetics.basin_transition_rates(states_candidate, dt_ps)["total_rate_per_ns"]
        out["transitions_per_ns_reference"] = kinetics.basin_transition_rates(states_reference, dt_ps)["total_rate_per_ns"]
    else:
        out["kinetics"] = "not scored: state definition exists for molecules with one backbone residue only"
    return out


def _plain(value: Any) -> Any:
    """numpy scalars and arrays -> Python numbers and lists, NaN -> None, recursively (JSON-ready)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else value  # NaN is not JSON; "not defined here" is null
    return value
