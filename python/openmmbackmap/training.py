"""Training backmappers from atomistic trajectories, with time-block validation.

The data are *segments*: atomistic trajectories (frames, atoms, 3) in nm of one topology,
each a contiguous block of simulated time. Validation frames are never drawn at random
(neighbouring frames 1 ps apart are nearly copies of each other): the last
``validation_fraction`` of every segment is held out, and whole segments can be held out for
a final test (``--test`` on the command line).

Metrics (:func:`evaluate`) are the benchmark's own (:mod:`openmmbackmap.bench`), computed on
model output for the held-out CG frames against the atomistic frames they came from.

Command line (the exact command is recorded in the model's provenance)::

    python -m openmmbackmap.training --scheme residue_com \\
        --train reference-data/ala2/ala2_00[0-7].xtc --test reference-data/ala2/ala2_00[89].xtc \\
        --out python/openmmbackmap/data/models/ala2_residue_com_ic.pt

``--family cvae`` trains the temporally coherent family (:func:`train_cvae`) on pairs of frames
``--stride`` apart instead; its metrics run the model along the held-out blocks
(:func:`evaluate_temporal`).

Examples
--------
>>> import numpy as np
>>> train, validation = split_time_blocks([np.zeros((10, 2, 3)), np.zeros((5, 2, 3))], 0.2)
>>> [len(x) for x in train], [len(x) for x in validation]
([8, 4], [2, 1])
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import openmm.app as app
import torch

from openmmbackmap import __version__, io
from openmmbackmap.errors import InputError
from openmmbackmap.mapping import Mapping, check_same_topology
from openmmbackmap.models.base import run_temporal, save_backmapper
from openmmbackmap.models.cvae import CVAEBackmapper
from openmmbackmap.models.ic import (
    FREE_TORSION_SPREAD,
    N_BINS,
    ICBackmapper,
    build_zmatrix,
    circular_statistics,
    internal_coordinates,
)


@dataclass
class TrainingResult:
    """A trained model with what its file will say about it.

    Attributes
    ----------
    module
        The TorchScript module (contract of :mod:`openmmbackmap.models.base`).
    mapping
        The mapping it was trained on.
    family
        Registry name of its family.
    provenance
        Data, options, seeds, versions, timing.
    validation
        Metrics on the held-out frames (see :func:`evaluate`).
    history
        Per epoch: training and validation loss.
    """

    module: torch.jit.ScriptModule
    mapping: Mapping
    family: str
    provenance: dict
    validation: dict
    history: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------------- data


def load_segments(paths: Sequence[str | os.PathLike], topology: app.Topology | None = None) -> tuple[app.Topology, list[np.ndarray]]:
    """Read trajectory segments of one topology.

    Parameters
    ----------
    paths
        Trajectory files (.xtc, .dcd...), one segment each.
    topology
        Their topology; by default read from the ``.pdb`` next to each file (same stem), and
        every segment's must match the first one's.

    Returns
    -------
    topology, segments
        The topology and one float32 (frames, atoms, 3) array in nm per file.
    """
    segments = []
    first: app.Topology | None = topology
    for path in map(Path, paths):
        if topology is None:
            pdb = path.with_suffix(".pdb")
            if not pdb.is_file():
                raise InputError(f"segment {str(path)!r} has no topology {pdb.name!r} beside it; pass a topology")
            own, _ = io.load_topology(pdb)
            if first is None:
                first = own
            else:
                check_same_topology(io.topology_to_dict(first), own, f"segment {path.name}")
        segments.append(io.load_trajectory(path, first).xyz.astype(np.float32))
    if first is None:
        raise InputError("no trajectory segments given")
    return first, segments


def split_time_blocks(segments: Sequence[np.ndarray], validation_fraction: float = 0.2) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hold out the last ``validation_fraction`` of every segment (a block of time, never random frames)."""
    if not 0.0 < validation_fraction < 1.0:
        raise InputError(f"validation_fraction must lie in (0, 1); got {validation_fraction}")
    train, validation = [], []
    for segment in segments:
        cut = int(round(len(segment) * (1.0 - validation_fraction)))
        if cut == 0 or cut == len(segment):
            raise InputError(f"a segment of {len(segment)} frames cannot be split {1 - validation_fraction:.0%}/{validation_fraction:.0%}")
        train.append(segment[:cut])
        validation.append(segment[cut:])
    return train, validation


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------- metrics


def run_model(module: torch.nn.Module, cg: np.ndarray, seed: int = 0, batch_size: int = 1024) -> np.ndarray:
    """Backmap CG frames (frames, beads, 3) with a contract module; batch ``k`` uses ``seed + k`` (as :class:`Backmapper`)."""
    out = []
    with torch.inference_mode():
        for k, start in enumerate(range(0, len(cg), batch_size)):
            batch = torch.from_numpy(np.ascontiguousarray(cg[start : start + batch_size], dtype=np.float32))
            out.append(module(batch, None, seed + k).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0, 3), dtype=np.float32)


def evaluate(
    module: torch.nn.Module, mapping: Mapping, reference: np.ndarray, seed: int = 0, candidate: np.ndarray | None = None
) -> dict:
    """Backmap the CG image of ``reference`` and score the result against ``reference``.

    ``candidate``, if given, is that backmapping already made (a temporal model run along
    the reference's time blocks, :func:`evaluate_temporal`); ``module`` is then not called.

    Returns
    -------
    dict
        ``frames``; ``bond_score`` (fraction of bond lengths within 10 % of the reference
        length) and ``bond_deviation_mean``/``_max`` (relative); ``chirality_errors`` and
        ``chirality_frames_with_error``; ``cis_peptides`` (non-proline); ``basins`` (model and
        reference Ramachandran basin populations per residue,
        :func:`openmmbackmap.bench.distributions.basin_populations`) and
        ``basin_max_difference_pp``; ``basin_agreement`` (fraction of frames whose output is in
        the basin of its reference frame); ``ramachandran_jsd_bits``; ``cg_rmsd_nm`` (mean RMSD
        between the output's own CG image and the input beads); ``heavy_rmsd_nm`` (mean
        heavy-atom RMSD to the paired reference frame).
    """
    from openmmbackmap import geometry
    from openmmbackmap.bench import accuracy, distributions, structural
    from openmmbackmap.bench.structure import TopologyFeatures

    reference = np.asarray(reference, dtype=np.float32)
    cg = mapping.map(reference)
    candidate = run_model(module, cg, seed=seed) if candidate is None else np.asarray(candidate, dtype=np.float32)
    features = TopologyFeatures.from_topology(mapping.topology)
    ideal = geometry.distances(reference, features.bonds).mean(axis=0)
    deviation = np.abs(geometry.distances(candidate, features.bonds) - ideal) / ideal
    chirality = structural.chirality_errors(candidate, reference, features)
    model_basins = distributions.basin_populations(candidate, features)["residues"]
    reference_basins = distributions.basin_populations(reference, features)["residues"]
    differences = [
        abs(model_basins[r][b] - reference_basins[r][b]) for r in reference_basins for b in distributions.BASINS
    ]
    cg_rmsd = np.sqrt(((mapping.map(candidate) - cg) ** 2).sum(-1).mean(-1))

    def basin_labels(xyz: np.ndarray) -> np.ndarray:
        angles = distributions.ramachandran(xyz, features)
        return distributions.basin_index(angles.phi, angles.psi)

    agreement = float((basin_labels(candidate) == basin_labels(reference)).mean()) if model_basins else float("nan")
    return {
        "frames": int(len(reference)),
        "seed": int(seed),
        "bond_score": structural.bond_score(candidate, reference, features),
        "bond_deviation_mean": float(deviation.mean()),
        "bond_deviation_max": float(deviation.max()),
        "chirality_errors": chirality["total"],
        "chirality_frames_with_error": chirality["frames_with_error"],
        "cis_peptides": structural.cis_peptides(candidate, features)["total"],
        "basins": {"model": model_basins, "reference": reference_basins, "definition": "bench.distributions.basin_populations (ABEGO level 1: beta phi<0 & (psi>=50 | psi<-75); alpha_R phi<0 & -75<=psi<50; alpha_L phi>=0)"},
        "basin_max_difference_pp": 100.0 * max(differences) if differences else float("nan"),
        "basin_agreement": agreement,
        "ramachandran_jsd_bits": distributions.ramachandran_jsd(candidate, reference, features)["mean"],
        "cg_rmsd_nm": float(cg_rmsd.mean()),
        "heavy_rmsd_nm": accuracy.heavy_atom_rmsd(candidate, reference, features)["mean_heavy"],
    }


# ---------------------------------------------------------------------- the ic family


def _checked_segments(mapping: Mapping, segments: Sequence[np.ndarray]) -> list[np.ndarray]:
    segments = [np.asarray(s, dtype=np.float32) for s in segments]
    for s in segments:
        if s.ndim != 3 or s.shape[1:] != (mapping.n_atoms, 3):
            raise InputError(f"segments must have shape (frames, {mapping.n_atoms}, 3); got {s.shape}")
    return segments


def _versions() -> dict:
    return {
        "openmm_backmap": __version__, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _ic_statistics(zmatrix, r, theta, phi) -> tuple[tuple, tuple, tuple, np.ndarray]:
    """Gaussian parameters of every row and which torsions are free."""
    r_stats = (r.mean(0), r.std(0))
    theta_stats = (theta.mean(0), theta.std(0))
    phi_mean, phi_spread = circular_statistics(phi)
    # Deviations wrapped around the circular mean give the sigma of the wrapped Gaussian.
    deviation = np.angle(np.exp(1j * (phi - phi_mean)))
    phi_std = np.sqrt((deviation**2).mean(0))
    learnt = np.isnan(zmatrix.fixed_phi)
    free = learnt & ~zmatrix.improper & (phi_spread > FREE_TORSION_SPREAD)
    phi_mean = np.where(free, 0.0, phi_mean)
    phi_std = np.where(free | ~learnt, 0.0, phi_std)
    phi_mean = np.where(learnt, phi_mean, np.nan_to_num(zmatrix.fixed_phi))
    for values, fixed in ((r_stats, zmatrix.fixed_r), (theta_stats, zmatrix.fixed_theta)):
        known = ~np.isnan(fixed)
        values[0][known] = fixed[known]
        values[1][known] = 0.0
    return r_stats, theta_stats, (phi_mean, phi_std), free


def _bins(angles: np.ndarray, n_bins: int) -> np.ndarray:
    index = np.floor((np.asarray(angles) + math.pi) / (2 * math.pi / n_bins)).astype(np.int64)
    return np.clip(index, 0, n_bins - 1)


def _normalise_features(module: torch.nn.Module, cg: torch.Tensor) -> None:
    """Set the module's feature standardisation from the training frames' CG features."""
    with torch.no_grad():
        raw = module.features(cg)
        module.feature_mean.copy_(raw.mean(0))
        module.feature_std.copy_(raw.std(0).clamp_min(1e-3))


def _torsion_targets(torsions: np.ndarray, n_bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin/cos of each free torsion, flattened per frame; its bin) as training tensors."""
    sincos = np.stack([np.sin(torsions), np.cos(torsions)], axis=-1).reshape(len(torsions), -1)
    return torch.from_numpy(sincos.astype(np.float32)), torch.from_numpy(_bins(torsions, n_bins))


def _zmatrix_provenance(zmatrix, mapping: Mapping, free_columns: np.ndarray) -> dict:
    rows = zmatrix.describe(mapping)
    return {
        "anchored": bool(zmatrix.anchored),
        "rows": len(rows),
        "free_torsions": [rows[k] for k in free_columns],
        "dependent_torsions": int(np.isnan(zmatrix.fixed_phi).sum() - len(free_columns)),
    }


def train_ic(
    mapping: Mapping,
    segments: Sequence[np.ndarray],
    *,
    validation_fraction: float = 0.2,
    seed: int = 0,
    hidden: int = 64,
    n_bins: int = N_BINS,
    batch_size: int = 512,
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-5,
    max_epochs: int = 200,
    patience: int = 10,
    min_delta: float = 1e-4,
    evaluation_seed: int = 12345,
    log: Callable[[str], None] | None = print,
) -> TrainingResult:
    """Train an ``ic`` backmapper by maximum likelihood on atomistic segments.

    Bond lengths, angles and dependent torsions get their Gaussian parameters from the
    training frames; the free-torsion MLPs are fitted with Adam on the cross-entropy of the
    torsion bins (teacher forcing: each torsion sees the true earlier ones), with early
    stopping on the loss of the held-out block (the last ``validation_fraction`` of every
    segment); the parameters of the best validation epoch are kept.

    Parameters
    ----------
    mapping
        The CG mapping (its topology is the segments').
    segments
        Atomistic trajectories, (frames, atoms, 3) nm, each a contiguous block of time.
    validation_fraction
        Held-out tail of each segment.
    seed
        Seeds initialisation and batch order (the run is deterministic on one thread).
    hidden
        Width of the two hidden layers of each free torsion's MLP.
    n_bins
        Bins of each free torsion's categorical distribution.
    batch_size, learning_rate, weight_decay, max_epochs, patience, min_delta
        Optimisation: Adam, stop after ``patience`` epochs without a validation improvement
        of at least ``min_delta`` nats.
    evaluation_seed
        Sampling seed of the validation metrics.
    log
        Called with one progress line per epoch (None: silent).

    Returns
    -------
    TrainingResult
    """
    started = time.perf_counter()
    say = log or (lambda line: None)
    segments = _checked_segments(mapping, segments)
    train_blocks, validation_blocks = split_time_blocks(segments, validation_fraction)
    train_xyz, validation_xyz = np.concatenate(train_blocks), np.concatenate(validation_blocks)
    torch.manual_seed(seed)

    zmatrix = build_zmatrix(mapping)
    r, theta, phi = internal_coordinates(train_xyz, zmatrix)
    r_stats, theta_stats, phi_stats, free = _ic_statistics(zmatrix, r, theta, phi)
    free_columns = np.flatnonzero(free)  # placement order = autoregressive order
    matrix = mapping.matrix.toarray()
    n_features = zmatrix.n_features
    module = ICBackmapper(
        zmatrix, matrix, r_stats, theta_stats, phi_stats, free,
        (np.zeros(n_features), np.ones(n_features)), hidden=hidden, n_bins=n_bins,
    )
    train_cg = torch.from_numpy(mapping.map(train_xyz))
    validation_cg = torch.from_numpy(mapping.map(validation_xyz))
    _normalise_features(module, train_cg)

    def tensors(cg: torch.Tensor, torsions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            features = module.features(cg)
        return (features, *_torsion_targets(torsions[:, free_columns], n_bins))

    train_data = tensors(train_cg, phi)
    validation_data = tensors(validation_cg, internal_coordinates(validation_xyz, zmatrix)[2])
    parameters = [module.w1, module.b1, module.w2, module.b2, module.w3, module.b3]
    history: list[dict] = []
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(module.state_dict())

    def loss_of(features, sincos, labels) -> torch.Tensor:
        logits = module.all_torsion_logits(features, sincos)
        # Sum over torsions (the joint negative log-likelihood), mean over frames.
        return torch.nn.functional.cross_entropy(logits.reshape(-1, n_bins), labels.reshape(-1), reduction="sum") / len(labels)

    n_free = len(free_columns)
    if n_free:
        optimizer = torch.optim.Adam(parameters, lr=learning_rate, weight_decay=weight_decay)
        order_generator = torch.Generator().manual_seed(seed)
        n_train = len(train_data[0])
        for epoch in range(1, max_epochs + 1):
            tic = time.perf_counter()
            module.train()
            order = torch.randperm(n_train, generator=order_generator)
            total = 0.0
            for start in range(0, n_train, batch_size):
                batch = order[start : start + batch_size]
                loss = loss_of(*(t[batch] for t in train_data))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(batch)
            with torch.no_grad():
                validation_loss = float(loss_of(*validation_data))
            train_loss = total / n_train
            history.append({"epoch": epoch, "train_nll": train_loss, "validation_nll": validation_loss})
            improved = validation_loss < best_loss - min_delta
            if improved:
                best_loss, best_epoch, best_state = validation_loss, epoch, copy.deepcopy(module.state_dict())
            say(
                f"epoch {epoch:3d}  train NLL {train_loss / n_free:.4f}  validation NLL {validation_loss / n_free:.4f} "
                f"nats/torsion{'  *' if improved else ''}  ({time.perf_counter() - tic:.1f} s)"
            )
            if epoch - best_epoch >= patience:
                break
        module.load_state_dict(best_state)
    module.eval()
    scripted = torch.jit.script(module)
    train_time = time.perf_counter() - started

    rows = zmatrix.describe(mapping)
    validation = evaluate(scripted, mapping, validation_xyz, seed=evaluation_seed)
    per_torsion = {}
    if n_free:
        with torch.no_grad():
            logits = module.all_torsion_logits(*validation_data[:2])
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), validation_data[2], reduction="none").mean(0)
        per_torsion = {rows[k]: round(float(v), 4) for k, v in zip(free_columns, nll)}
    validation.update(
        {
            "split": f"last {validation_fraction:.0%} of each of {len(segments)} segments",
            "torsion_nll_nats": best_loss / n_free if n_free else None,
            "torsion_nll_nats_each": per_torsion,
            "uniform_nll_nats": math.log(n_bins),
        }
    )
    provenance = {
        "family": "ic",
        "mapping_scheme": mapping.scheme,
        "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "segments": len(segments),
        "frames_train": int(len(train_xyz)),
        "frames_validation": int(len(validation_xyz)),
        "options": {
            "validation_fraction": validation_fraction, "seed": seed, "hidden": hidden, "n_bins": n_bins,
            "batch_size": batch_size, "learning_rate": learning_rate, "weight_decay": weight_decay,
            "max_epochs": max_epochs, "patience": patience, "min_delta": min_delta,
            "evaluation_seed": evaluation_seed,
        },
        "epochs": len(history),
        "best_epoch": best_epoch,
        "train_seconds": round(train_time, 2),
        "zmatrix": _zmatrix_provenance(zmatrix, mapping, free_columns),
        "versions": _versions(),
    }
    return TrainingResult(scripted, mapping, "ic", provenance, validation, history)


# ---------------------------------------------------------------------- the cvae family


def evaluate_temporal(
    module: torch.nn.Module,
    mapping: Mapping,
    blocks: Sequence[np.ndarray],
    *,
    stride: int = 1,
    frame_interval_ps: float = 1.0,
    seed: int = 0,
) -> dict:
    """Score a temporal model run along held-out time blocks, and the same model frame by frame.

    Every block is taken at the model's frame spacing (``block[::stride]``), mapped to CG
    and backmapped autoregressively (:func:`openmmbackmap.models.base.run_temporal`: frame
    ``t`` conditioned on the generated frame ``t - 1``, the first on none). The result has
    the metrics of :func:`evaluate` on all frames, ``time``
    (:func:`openmmbackmap.bench.kinetics.blockwise_time_metrics`: temporal coherence and
    basin transition rates, pooled over blocks) and ``non_temporal``: the same metrics for
    the model with its temporal conditioning removed (``previous=None`` for every frame).

    Parameters
    ----------
    frame_interval_ps
        Time between the frames of the blocks as given, ps (before ``stride``).
    """
    from openmmbackmap.bench.kinetics import blockwise_time_metrics
    from openmmbackmap.bench.structure import TopologyFeatures

    features = TopologyFeatures.from_topology(mapping.topology)
    reference = [np.asarray(b[::stride], dtype=np.float32) for b in blocks]
    cg = [mapping.map(b) for b in reference]
    if len({len(b) for b in cg}) == 1:  # equal blocks advance side by side, one call per frame
        temporal = list(run_temporal(module, np.stack(cg), seed=seed))
    else:
        temporal = [run_temporal(module, c[None], seed=seed)[0] for c in cg]
    independent = [run_model(module, c, seed=seed) for c in cg]
    dt_ps = frame_interval_ps * stride
    everything = np.concatenate(reference)
    metrics = evaluate(module, mapping, everything, seed=seed, candidate=np.concatenate(temporal))
    metrics["time"] = blockwise_time_metrics(temporal, reference, features, dt_ps)
    non_temporal = evaluate(module, mapping, everything, seed=seed, candidate=np.concatenate(independent))
    non_temporal["time"] = blockwise_time_metrics(independent, reference, features, dt_ps)
    metrics["non_temporal"] = {k: v for k, v in non_temporal.items() if k != "basins"}
    metrics["blocks"] = len(blocks)
    return metrics


def train_cvae(
    mapping: Mapping,
    segments: Sequence[np.ndarray],
    *,
    stride: int = 1,
    frame_interval_ps: float | None = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    hidden: int = 128,
    latent: int = 8,
    n_bins: int = N_BINS,
    condition_dropout: float = 0.25,
    kl_warmup: int = 5,
    chain_first: bool = True,
    batch_size: int = 512,
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-5,
    max_epochs: int = 200,
    patience: int = 10,
    min_delta: float = 1e-3,
    evaluation_seed: int = 12345,
    log: Callable[[str], None] | None = print,
) -> TrainingResult:
    """Train a ``cvae`` backmapper on pairs of frames ``stride`` apart (:mod:`openmmbackmap.models.cvae`).

    The geometry (bonds, angles, dependent torsions) gets the ``ic`` family's Gaussian
    statistics; the CVAE over the free torsions is fitted with Adam on the negative evidence
    lower bound (bin cross-entropy plus the KL divergence of the encoder from the conditional
    prior, the KL weight rising linearly from 0 to 1 over the first ``kl_warmup`` epochs), on
    pairs (frame ``i``, frame ``i + stride``) inside the training part of every segment. The
    previous frame is dropped (the non-temporal path) for a random ``condition_dropout`` of
    every batch. Validation pairs come from the held-out tail of every segment (a block of
    time, never random frames); early stopping on their negative ELBO, weighted over both
    paths as in training; the parameters of the best epoch are kept. The validation metrics
    run the model along the held-out blocks (:func:`evaluate_temporal`).

    Parameters
    ----------
    mapping
        The CG mapping (its topology is the segments').
    segments
        Atomistic trajectories, (frames, atoms, 3) nm, each a contiguous block of time with
        a constant time between frames.
    stride
        Frames between the conditioning frame and the generated one; the model then
        backmaps trajectories with that spacing.
    frame_interval_ps
        Time between consecutive frames of ``segments``, ps (recorded; the model's spacing
        is ``stride * frame_interval_ps``); None if unknown (rates are then per 1000 frames).
    hidden, latent, n_bins
        Width of the MLPs' two hidden layers, dimension of the latent, torsion bins.
    condition_dropout
        Fraction of training pairs whose previous frame is hidden (trains the first-frame path).
    kl_warmup
        Epochs over which the KL weight rises to 1 (0: from the start).
    chain_first
        Build the Z-matrix with main-chain torsions free (:func:`~openmmbackmap.models.ic.build_zmatrix`):
        the generated torsions are then the backbone phi/psi themselves, whose persistence is
        what the previous frame carries.
    batch_size, learning_rate, weight_decay, max_epochs, patience, min_delta
        Optimisation: Adam; stop after ``patience`` epochs without a validation improvement of
        at least ``min_delta`` nats.
    evaluation_seed
        Sampling seed of the validation metrics.
    log
        Called with one progress line per epoch (None: silent).

    Returns
    -------
    TrainingResult
    """
    started = time.perf_counter()
    say = log or (lambda line: None)
    segments = _checked_segments(mapping, segments)
    if stride < 1:
        raise InputError(f"stride must be a positive number of frames; got {stride}")
    if not 0.0 <= condition_dropout < 1.0:
        raise InputError(f"condition_dropout must lie in [0, 1); got {condition_dropout}")
    train_blocks, validation_blocks = split_time_blocks(segments, validation_fraction)
    if min(len(b) for b in train_blocks + validation_blocks) <= stride:
        raise InputError(
            f"every training and validation block needs more than stride={stride} frames to make a pair; "
            f"the shortest has {min(len(b) for b in train_blocks + validation_blocks)}"
        )
    train_xyz = np.concatenate(train_blocks)
    torch.manual_seed(seed)

    zmatrix = build_zmatrix(mapping, chain_first=chain_first)
    r, theta, phi = internal_coordinates(train_xyz, zmatrix)
    r_stats, theta_stats, phi_stats, free = _ic_statistics(zmatrix, r, theta, phi)
    free_columns = np.flatnonzero(free)
    if not len(free_columns):
        raise InputError(f"mapping {mapping.scheme!r} leaves no free torsion to generate: use the ic family")
    n_features = zmatrix.n_features
    module = CVAEBackmapper(
        zmatrix, mapping.matrix.toarray(), r_stats, theta_stats, phi_stats, free,
        (np.zeros(n_features), np.ones(n_features)), hidden=hidden, latent=latent, n_bins=n_bins,
    )
    _normalise_features(module, torch.from_numpy(mapping.map(train_xyz)))

    def tensors(blocks: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        previous = np.concatenate([b[:-stride] for b in blocks])
        current = np.concatenate([b[stride:] for b in blocks])
        with torch.no_grad():
            condition = module.condition(torch.from_numpy(mapping.map(current)), torch.from_numpy(previous))
        torsions = internal_coordinates(current, zmatrix)[2][:, free_columns]
        return (condition, *_torsion_targets(torsions, n_bins))

    train_data = tensors(train_blocks)
    validation_data = tensors(validation_blocks)

    def without_previous(condition: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        condition = condition.clone()
        if drop is None:
            condition[:, n_features:] = 0.0
        else:
            condition[drop, n_features:] = 0.0
        return condition

    def negative_elbo(condition, sincos, labels, epsilon) -> tuple[torch.Tensor, torch.Tensor]:
        """Bin cross-entropy (summed over torsions) and KL divergence, each a mean over frames, nats."""
        mean_q, log_var_q = module.gaussian(module.encoder(torch.cat([condition, sincos], dim=1)))
        z = mean_q + torch.exp(0.5 * log_var_q) * epsilon
        nll = torch.nn.functional.cross_entropy(
            module.logits(condition, z).reshape(-1, n_bins), labels.reshape(-1), reduction="sum"
        ) / len(labels)
        mean_p, log_var_p = module.gaussian(module.prior(condition))
        kl = 0.5 * (log_var_p - log_var_q + (torch.exp(log_var_q) + (mean_q - mean_p) ** 2) / torch.exp(log_var_p) - 1.0)
        return nll, kl.sum(1).mean()

    validation_epsilon = torch.randn(len(validation_data[0]), latent, generator=torch.Generator().manual_seed(evaluation_seed))

    def validate() -> dict:
        with torch.no_grad():
            condition, sincos, labels = validation_data
            nll, kl = negative_elbo(condition, sincos, labels, validation_epsilon)
            nll0, kl0 = negative_elbo(without_previous(condition), sincos, labels, validation_epsilon)
        temporal, independent = float(nll + kl), float(nll0 + kl0)
        return {
            "temporal_nll": float(nll), "temporal_kl": float(kl), "temporal_negative_elbo": temporal,
            "non_temporal_nll": float(nll0), "non_temporal_kl": float(kl0), "non_temporal_negative_elbo": independent,
            "loss": (1.0 - condition_dropout) * temporal + condition_dropout * independent,
        }

    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    n_train = len(train_data[0])
    m = len(free_columns)
    history: list[dict] = []
    best_loss, best_epoch, best_state, best_validation = math.inf, 0, copy.deepcopy(module.state_dict()), {}
    warmup = min(kl_warmup, max_epochs)  # the last epoch at least optimises the true bound
    for epoch in range(1, max_epochs + 1):
        tic = time.perf_counter()
        kl_weight = min(1.0, epoch / warmup) if warmup > 0 else 1.0
        module.train()
        order = torch.randperm(n_train, generator=generator)
        total = 0.0
        for start in range(0, n_train, batch_size):
            batch = order[start : start + batch_size]
            condition, sincos, labels = (t[batch] for t in train_data)
            condition = without_previous(condition, torch.rand(len(batch), generator=generator) < condition_dropout)
            epsilon = torch.randn(len(batch), latent, generator=generator)
            nll, kl = negative_elbo(condition, sincos, labels, epsilon)
            loss = nll + kl_weight * kl
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float((nll + kl).detach()) * len(batch)
        module.eval()
        validation = validate()
        history.append({"epoch": epoch, "train_negative_elbo": total / n_train, "kl_weight": kl_weight, **validation})
        # Stop only once the bound is the true one (full KL weight).
        improved = kl_weight == 1.0 and validation["loss"] < best_loss - min_delta
        if improved:
            best_loss, best_epoch = validation["loss"], epoch
            best_state, best_validation = copy.deepcopy(module.state_dict()), validation
        say(
            f"epoch {epoch:3d}  train -ELBO {total / n_train / m:.4f}  validation -ELBO temporal "
            f"{validation['temporal_negative_elbo'] / m:.4f} (KL {validation['temporal_kl']:.2f} nats), first-frame path "
            f"{validation['non_temporal_negative_elbo'] / m:.4f} nats/torsion{'  *' if improved else ''}  "
            f"({time.perf_counter() - tic:.1f} s)"
        )
        if best_epoch and epoch - best_epoch >= patience:
            break
    module.load_state_dict(best_state)
    module.eval()
    scripted = torch.jit.script(module)
    train_time = time.perf_counter() - started

    interval = 1.0 if frame_interval_ps is None else float(frame_interval_ps)
    validation = evaluate_temporal(scripted, mapping, validation_blocks, stride=stride, frame_interval_ps=interval,
                                   seed=evaluation_seed)
    validation.update({
        "split": f"last {validation_fraction:.0%} of each of {len(segments)} segments, every {stride}. frame, "
                 "backmapped along each block",
        "elbo_nats": {k: v for k, v in best_validation.items()},
        "uniform_nll_nats_per_torsion": math.log(n_bins),
    })
    provenance = {
        "family": "cvae",
        "mapping_scheme": mapping.scheme,
        "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "segments": len(segments),
        "frames_train": int(len(train_xyz)),
        "pairs_train": int(n_train),
        "pairs_validation": int(len(validation_data[0])),
        "temporal": {
            "stride_frames": int(stride),
            "frame_interval_ps": None if frame_interval_ps is None else float(frame_interval_ps) * stride,
            "conditioned_on": "CG features of frame t; sin/cos of the free torsions of the atomistic frame generated before",
        },
        "options": {
            "stride": stride, "validation_fraction": validation_fraction, "seed": seed, "hidden": hidden,
            "latent": latent, "n_bins": n_bins, "condition_dropout": condition_dropout, "kl_warmup": kl_warmup,
            "chain_first": chain_first,
            "batch_size": batch_size, "learning_rate": learning_rate, "weight_decay": weight_decay,
            "max_epochs": max_epochs, "patience": patience, "min_delta": min_delta, "evaluation_seed": evaluation_seed,
        },
        "epochs": len(history),
        "best_epoch": best_epoch,
        "train_seconds": round(train_time, 2),
        "zmatrix": _zmatrix_provenance(zmatrix, mapping, free_columns),
        "versions": _versions(),
    }
    return TrainingResult(scripted, mapping, "cvae", provenance, validation, history)


def save_result(result: TrainingResult, path: str | os.PathLike) -> Path:
    """Write a trained model with its provenance and validation metrics."""
    return save_backmapper(
        result.module, path, family=result.family, mapping=result.mapping,
        provenance=result.provenance, validation=result.validation,
    )


# ---------------------------------------------------------------------- command line


def _summary(name: str, metrics: dict) -> str:
    basins = metrics["basins"]
    lines = [
        f"{name}: {metrics['frames']} frames, bond score {metrics['bond_score']:.4f}, chirality errors "
        f"{metrics['chirality_errors']}, cis {metrics['cis_peptides']}, CG RMSD {metrics['cg_rmsd_nm']:.4f} nm, "
        f"heavy RMSD {metrics['heavy_rmsd_nm']:.4f} nm, Ramachandran JSD {metrics['ramachandran_jsd_bits']:.3f} bits"
    ]
    for residue, reference in basins["reference"].items():
        model = basins["model"][residue]
        lines.append(
            f"  {residue}: " + ", ".join(f"{b} {100 * model[b]:.1f}% (ref {100 * reference[b]:.1f}%)" for b in reference)
        )
    lines.append(
        f"  largest basin difference {metrics['basin_max_difference_pp']:.2f} percentage points; "
        f"frame-wise basin agreement {100 * metrics['basin_agreement']:.1f}%"
    )
    for label, values in (("along the trajectory", metrics), ("first-frame path every frame", metrics.get("non_temporal"))):
        timing = (values or {}).get("time")
        if timing:
            line = f"  {label}: temporal coherence {timing['temporal_coherence']:.3f}"
            if "transitions_per_ns" in timing:
                line += (f", basin transitions {timing['transitions_per_ns']:.1f}/ns (reference "
                         f"{timing['transitions_per_ns_reference']:.1f}/ns, ratio {timing['transition_rate_ratio']:.3f})")
            if values is not metrics:
                line += f", largest basin difference {values['basin_max_difference_pp']:.2f} pp"
            lines.append(line)
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The training options, shared by ``backmap train`` and ``python -m openmmbackmap.training``."""
    parser.add_argument("--family", default="ic", choices=["ic", "cvae"],
                        help="backmapper family: ic (frame by frame) or cvae (temporally coherent: frame t conditioned "
                             "on frame t-1); default ic")
    parser.add_argument("--scheme", required=True, help="builtin mapping scheme (backbone, residue_com, ...)")
    parser.add_argument("--train", nargs="+", required=True, type=Path,
                        help="training trajectory segments (topology: the .pdb beside each); the last "
                             "--validation-fraction of each is held out as a time block")
    parser.add_argument("--test", nargs="*", default=[], type=Path, help="whole segments held out for the final test")
    parser.add_argument("--out", required=True, type=Path, help="model file to write (.pt)")
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=None, help="width of the MLPs (default: ic 64, cvae 128)")
    parser.add_argument("--n-bins", type=int, default=N_BINS, help="bins of a free torsion's distribution")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=10, help="epochs without validation improvement before stopping")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    cvae = parser.add_argument_group("cvae family")
    cvae.add_argument("--stride", type=int, default=1,
                      help="frames between the conditioning frame and the generated one; the model then backmaps "
                           "trajectories with that frame spacing (default 1)")
    cvae.add_argument("--latent", type=int, default=8, help="dimension of the latent (default 8)")
    cvae.add_argument("--condition-dropout", type=float, default=0.25,
                      help="fraction of training pairs without their previous frame: trains the first-frame path")
    cvae.add_argument("--kl-warmup", type=int, default=5, help="epochs over which the KL weight rises to 1")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m openmmbackmap.training``: the same as ``backmap train``."""
    parser = configure_parser(argparse.ArgumentParser(
        prog="python -m openmmbackmap.training", description="Train a backmapper on atomistic trajectory segments."
    ))
    args = parser.parse_args(argv)
    executable = os.path.relpath(sys.executable) if Path(sys.executable).is_relative_to(Path.cwd()) else sys.executable
    command = shlex.join([executable, "-m", "openmmbackmap.training", *(sys.argv[1:] if argv is None else argv)])
    return run(args, command)


def _frame_interval_ps(path: Path, topology: app.Topology) -> float | None:
    """Time between the frames of a trajectory file, ps (None when the file has no usable times)."""
    trajectory = io.load_trajectory(path, topology)
    if trajectory.n_frames < 2:
        return None
    steps = np.diff(trajectory.time)
    return float(np.median(steps)) if np.all(steps > 0) else None


def run(args: argparse.Namespace, command: str) -> int:
    """Train, test on held-out segments and save, as the parsed options say; ``command`` goes into the provenance."""
    torch.set_num_threads(args.threads)
    topology, segments = load_segments(args.train)
    mapping = Mapping.from_scheme(topology, args.scheme)
    print(f"{len(segments)} training segments, {sum(len(s) for s in segments)} frames; mapping {mapping}", flush=True)
    common = dict(
        validation_fraction=args.validation_fraction, seed=args.seed, n_bins=args.n_bins, batch_size=args.batch_size,
        learning_rate=args.learning_rate, max_epochs=args.max_epochs, patience=args.patience,
        log=lambda line: print(line, flush=True),
    )
    if args.family == "cvae":
        interval = _frame_interval_ps(args.train[0], topology)
        result = train_cvae(
            mapping, segments, stride=args.stride, frame_interval_ps=interval, hidden=args.hidden or 128,
            latent=args.latent, condition_dropout=args.condition_dropout, kl_warmup=args.kl_warmup, **common,
        )
    else:
        result = train_ic(mapping, segments, hidden=args.hidden or 64, **common)
    result.provenance["command"] = command
    result.provenance["data"] = {
        "train": [{"file": str(p), "sha256": _sha256(p), "frames": len(s)} for p, s in zip(args.train, segments)],
        "test": [{"file": str(p), "sha256": _sha256(p)} for p in args.test],
    }
    print(_summary("validation (held-out tail of each training segment)", result.validation), flush=True)
    if args.test:
        _, test_segments = load_segments(args.test, topology)
        seed = result.provenance["options"]["evaluation_seed"]
        if args.family == "cvae":
            test = evaluate_temporal(result.module, mapping, test_segments, stride=args.stride,
                                     frame_interval_ps=interval or 1.0, seed=seed)
        else:
            test = evaluate(result.module, mapping, np.concatenate(test_segments), seed=seed)
        test["files"] = [str(p) for p in args.test]
        result.validation["test"] = test
        print(_summary(f"test (held-out segments {', '.join(p.name for p in args.test)})", test), flush=True)
    path = save_result(result, args.out)
    print(f"saved {path} ({path.stat().st_size / 1024:.0f} KiB) after {result.provenance['train_seconds']:.0f} s of training", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
