"""Accuracy metrics: how close is each backmapped frame to the reference frame it was made from?

Unlike :mod:`openmmbackmap.bench.distributions`, these metrics pair frames: candidate frame i
is compared with reference frame i (the atomistic frame whose coarse-grained image the model
was given). A model can reproduce every distribution and still be inaccurate frame by frame
(it may return the right ensemble in the wrong order), and the reverse.

Superposition is a proper rigid-body fit (Kabsch, rotation and translation, never a
reflection), so a mirror-image structure is never "fitted" onto its reference.

Examples
--------
>>> import numpy as np
>>> from openmmbackmap import io
>>> from openmmbackmap.bench.structure import TopologyFeatures
>>> topology, positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
>>> features = TopologyFeatures.from_topology(topology)
>>> [features.atom_names[i] for i in backbone_heavy_atoms(features)]
['CH3', 'C', 'O', 'N', 'CA', 'C', 'O', 'N', 'C']
>>> moved = positions[None] @ np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) + 1.0
>>> round(float(heavy_atom_rmsd(moved, positions[None], features)["mean_backbone"]), 6)
0.0
"""

from __future__ import annotations

import numpy as np
import openmm.app as app

from openmmbackmap import geometry
from openmmbackmap.bench.distributions import chi_indices
from openmmbackmap.bench.structure import TopologyFeatures

#: Backbone heavy-atom names of amino-acid residues (C-terminal oxygens included).
BACKBONE_NAMES = frozenset({"N", "CA", "C", "O", "OXT", "OT1", "OT2"})
#: Capping groups: all their heavy atoms count as backbone (ACE: CH3 C O; NME/NMA: N C/CH3; NH2: N).
CAP_RESIDUES = frozenset({"ACE", "NME", "NMA", "NH2"})


def backbone_heavy_atoms(features: TopologyFeatures) -> np.ndarray:
    """Indices of backbone heavy atoms: N, CA, C, O (and OXT) of amino acids, and the heavy atoms of caps.

    An amino acid is a residue with atoms named N, CA and C; capping groups are
    :data:`CAP_RESIDUES`. Empty when the molecule has no backbone.
    """
    by_residue: dict[int, set[str]] = {}
    for name, residue in zip(features.atom_names, features.residue_index):
        by_residue.setdefault(int(residue), set()).add(name)
    amino = {r for r, names in by_residue.items() if {"N", "CA", "C"} <= names}
    selected = [
        i
        for i, (name, residue, resname) in enumerate(zip(features.atom_names, features.residue_index, features.residue_names))
        if features.heavy[i] and ((int(residue) in amino and name in BACKBONE_NAMES) or resname in CAP_RESIDUES)
    ]
    return np.array(selected, dtype=np.int64)


def side_chain_heavy_atoms(features: TopologyFeatures) -> np.ndarray:
    """Indices of heavy atoms that are not :func:`backbone_heavy_atoms` (side chains, ligands)."""
    backbone = np.zeros(features.n_atoms, dtype=bool)
    backbone[backbone_heavy_atoms(features)] = True
    return np.flatnonzero(features.heavy & ~backbone)


def _selections(features: TopologyFeatures) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fit atoms, backbone atoms, side-chain atoms, heavy atoms); with no backbone the fit uses all heavy atoms."""
    heavy = np.flatnonzero(features.heavy)
    backbone = backbone_heavy_atoms(features)
    side_chain = side_chain_heavy_atoms(features)
    if len(backbone) < 3:
        backbone, side_chain = heavy, np.zeros(0, dtype=np.int64)
    return backbone, backbone, side_chain, heavy


def _rmsd(a: np.ndarray, b: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    if len(atoms) == 0:
        return np.full(len(a), np.nan)
    return np.sqrt(((a[:, atoms] - b[:, atoms]) ** 2).sum(-1).mean(-1))


def _superpose(mobile: np.ndarray, target: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """Kabsch superposition of ``mobile`` on ``target`` by the atoms ``fit``; frames equal to their target stay as they are.

    (A fit of identical frames would leave rounding noise of order 1e-16 nm; this way a
    reference scored against itself gives exactly 0.)
    """
    fitted = geometry.superpose(mobile, target, fit)
    same = np.all(mobile == target, axis=(1, 2))
    fitted[same] = mobile[same]
    return fitted


def _fitted_rmsds(candidate: np.ndarray, reference: np.ndarray, features: TopologyFeatures) -> dict[str, np.ndarray]:
    fit, backbone, side_chain, heavy = _selections(features)
    fitted = _superpose(candidate, reference, fit)
    return {
        "backbone": _rmsd(fitted, reference, backbone),
        "side_chain": _rmsd(fitted, reference, side_chain),
        "heavy": _rmsd(fitted, reference, heavy),
    }


def _paired(candidate: np.ndarray, reference: np.ndarray, features: TopologyFeatures) -> tuple[np.ndarray, np.ndarray]:
    candidate = np.asarray(candidate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if reference.ndim == 2:
        reference = reference[None]
    if candidate.ndim != 3 or candidate.shape[1:] != (features.n_atoms, 3):
        raise ValueError(f"candidate has shape {candidate.shape}, expected (frames, {features.n_atoms}, 3)")
    if reference.shape[1:] != (features.n_atoms, 3) or len(reference) not in (1, len(candidate)):
        raise ValueError(f"reference has shape {reference.shape}, expected ({len(candidate)}, {features.n_atoms}, 3)")
    return candidate, np.broadcast_to(reference, candidate.shape)


def heavy_atom_rmsd(
    candidate: np.ndarray,
    reference: np.ndarray,
    features: TopologyFeatures,
) -> dict[str, np.ndarray | float]:
    """Per-frame heavy-atom RMSD to the paired reference frame, backbone and side chains separately.

    Each candidate frame is superposed on its reference frame by the Kabsch fit (rotation and
    translation only) of the backbone heavy atoms (:func:`backbone_heavy_atoms`); all RMSDs
    are then measured after that same fit, so a side chain placed on the wrong side of a
    correct backbone counts fully. A molecule without backbone is fitted and measured on all
    heavy atoms, reported as ``backbone``, and its side-chain RMSD is NaN.

    Parameters
    ----------
    candidate
        (frames, atoms, 3) in nm.
    reference
        (frames, atoms, 3) in nm, frame i paired with candidate frame i; a single frame
        (atoms, 3) or (1, atoms, 3) is paired with every candidate frame.
    features
        Features of the shared topology.

    Returns
    -------
    dict
        ``"backbone"``, ``"side_chain"``, ``"heavy"`` (all heavy atoms): per-frame RMSD (frames,)
        in nm; ``"mean_backbone"``, ``"mean_side_chain"``, ``"mean_heavy"``: their means over
        frames. Ideal value 0 nm. For scale: thermal fluctuation within one conformational basin
        is a few hundredths of a nm, a wrong rotamer about 0.1 nm or more on its side chain.
    """
    candidate, reference = _paired(candidate, reference, features)
    per_frame = _fitted_rmsds(candidate, reference, features)
    return {**per_frame, **{f"mean_{key}": float(np.mean(value)) for key, value in per_frame.items()}}


def best_of_n_rmsd(
    samples: np.ndarray,
    reference: np.ndarray,
    features: TopologyFeatures,
) -> dict[str, np.ndarray | float]:
    """RMSD of the best of n samples per frame, and of the average sample, for a stochastic model.

    Every sample of frame i is fitted to reference frame i as in :func:`heavy_atom_rmsd`.

    Parameters
    ----------
    samples
        (n_samples, frames, atoms, 3) in nm: n backmapped samples of each reference frame.
    reference
        (frames, atoms, 3) in nm.
    features
        Features of the shared topology.

    Returns
    -------
    dict
        For ``key`` in backbone, side_chain, heavy: ``"best_<key>"``, the mean over frames of
        the smallest RMSD among the samples (an oracle picking the best sample; chosen per key,
        so the best backbone and best side-chain sample may differ); ``"mean_<key>"``, the mean
        over samples and frames; and ``"<key>"``, the per-sample per-frame RMSDs
        (n_samples, frames). nm; ideal value 0. ``best`` <= ``mean``; a gap between them
        measures how much the samples differ in quality.
    """
    samples = np.asarray(samples, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if samples.ndim != 4 or samples.shape[1:] != reference.shape:
        raise ValueError(f"samples have shape {samples.shape}, expected (n_samples, *{reference.shape})")
    n, frames = samples.shape[:2]
    flat = samples.reshape(n * frames, *samples.shape[2:])
    per = _fitted_rmsds(flat, np.tile(reference, (n, 1, 1)), features)
    out: dict[str, np.ndarray | float] = {}
    for key, value in per.items():
        value = value.reshape(n, frames)
        out[key] = value
        out[f"best_{key}"] = float(np.mean(value.min(axis=0)))
        out[f"mean_{key}"] = float(np.mean(value))
    return out


def _angle_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Periodic difference a - b in degrees, in [-180, 180)."""
    return (np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0


def chi1_accuracy(
    candidate: np.ndarray,
    reference: np.ndarray,
    topology: app.Topology | TopologyFeatures,
    tolerance_deg: float = 40.0,
) -> float:
    """Fraction of side-chain chi1 angles within ``tolerance_deg`` of the paired reference frame.

    Counts every (frame, residue with a chi1) pair, chi1 as in mdtraj's ``compute_chi1``; the
    difference is periodic (179 and -179 degrees are 2 degrees apart). 40 degrees is the usual
    tolerance of side-chain packing benchmarks. VAL's CG1/CG2 names are taken as given: a model
    that swaps them is scored as placing the wrong rotamer.

    Parameters
    ----------
    candidate, reference
        (frames, atoms, 3) in nm, frame i paired with frame i.
    topology
        Shared topology (OpenMM, or its :class:`TopologyFeatures`).
    tolerance_deg
        Largest accepted absolute difference, degrees.

    Returns
    -------
    float
        Fraction in [0, 1]; ideal value 1. NaN when no residue has a chi1 (e.g. the alanine
        dipeptide).
    """
    candidate = np.asarray(candidate)
    reference = np.asarray(reference)
    if candidate.shape != reference.shape:
        raise ValueError(f"candidate {candidate.shape} and reference {reference.shape} are not paired frame by frame")
    rows = [r for label, r in chi_indices(topology).items() if label.endswith(":chi1")]
    if not rows:
        return float("nan")
    rows = np.concatenate(rows)
    difference = _angle_difference(
        np.degrees(geometry.dihedrals(candidate, rows)), np.degrees(geometry.dihedrals(reference, rows))
    )
    return float(np.mean(np.abs(difference) <= tolerance_deg))


def diversity(
    samples: np.ndarray,
    reference: np.ndarray,
    features: TopologyFeatures,
) -> dict[str, float]:
    """Sample diversity DIV = 1 - <RMSD between samples> / <RMSD from sample to reference>.

    The diversity score of generative backmapping papers (e.g. GenZProt, Yang and
    Gomez-Bombarelli, 2023). Both RMSDs are heavy-atom RMSDs after a Kabsch fit on the heavy
    atoms of the pair; ``<RMSD between samples>`` averages over all unordered pairs of samples
    of the same frame and over frames, ``<RMSD to reference>`` over all samples and frames.

    What values mean:

    - DIV = 1: the samples of a frame are identical (a deterministic model), however far from
      the reference they are.
    - DIV = 0: samples differ from each other as much as from the reference, as if the
      reference were one more sample: what an ideal generative model of the conditional
      ensemble gives.
    - 0 < DIV < 1: the samples are more alike than the ensemble (under-dispersed), or they
      share a bias away from the reference.
    - DIV < 0: the samples spread more among themselves than around the reference; for
      independent isotropic noise around the reference it tends to 1 - sqrt(2) = -0.41.

    Read it with the accuracy: DIV says how the spread compares with the error, not whether
    either is small.

    Parameters
    ----------
    samples
        (n_samples, frames, atoms, 3) in nm, n_samples >= 2.
    reference
        (frames, atoms, 3) in nm.
    features
        Features of the shared topology.

    Returns
    -------
    dict
        ``"div"``; ``"rmsd_between_samples"`` and ``"rmsd_to_reference"`` (nm), the two means.
        NaN for ``"div"`` when every sample equals the reference.
    """
    samples = np.asarray(samples, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if samples.ndim != 4 or samples.shape[1:] != reference.shape or len(samples) < 2:
        raise ValueError(f"samples have shape {samples.shape}, expected (n_samples >= 2, *{reference.shape})")
    heavy = np.flatnonzero(features.heavy)
    n = len(samples)
    samples, reference = samples[:, :, heavy], reference[:, heavy]
    everything = np.arange(len(heavy))

    def fitted_rmsd(mobile: np.ndarray, target: np.ndarray) -> np.ndarray:
        mobile = mobile.reshape(-1, len(heavy), 3)
        target = target.reshape(-1, len(heavy), 3)
        return _rmsd(_superpose(mobile, target, everything), target, everything)

    to_reference = fitted_rmsd(samples, np.broadcast_to(reference, samples.shape))
    first, second = np.triu_indices(n, k=1)
    between = fitted_rmsd(samples[first], samples[second])
    mean_between, mean_to_reference = float(between.mean()), float(to_reference.mean())
    div = 1.0 - mean_between / mean_to_reference if mean_to_reference > 0 else float("nan")
    return {"div": div, "rmsd_between_samples": mean_between, "rmsd_to_reference": mean_to_reference}
