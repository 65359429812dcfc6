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
(:func:`evaluate_temporal`). ``--family gan`` trains the adversarial family (:func:`train_gan`,
``--prior-weight`` for its force-field prior, ``--checkpoint`` to resume); with
``--test-tail 0.3`` the last 30 % of every training file is held out for the final test::

    python -m openmmbackmap.training --family gan --scheme backbone \
        --train python/openmmbackmap/data/alanine_dipeptide/ala2.xtc --test-tail 0.3 --max-epochs 150 \
        --out python/openmmbackmap/data/models/ala2_backbone_gan.pt

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
import json
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
from openmmbackmap.models import rejection
from openmmbackmap.models.base import run_temporal, save_backmapper
from openmmbackmap.models.cvae import CVAEBackmapper
from openmmbackmap.models.ic import (
    FREE_TORSION_SPREAD,
    N_BINS,
    ICBackmapper,
    bond_graph,
    build_zmatrix,
    circular_statistics,
    closure_statistics,
    conditional_geometry,
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


def _fit_dependent_geometry(module, zmatrix, cg: torch.Tensor, r, theta, phi, stats, free_columns: np.ndarray) -> None:
    """Make the module's bonded geometry conditional on the CG and the free torsions (:func:`conditional_geometry`).

    Call after the feature standardisation is set: the regression is on standardised features.
    """
    with torch.no_grad():
        features = module.features(cg)
        condition = module.geometry_condition(features, torch.from_numpy(phi[:, free_columns]).to(features.dtype))
    means = tuple(s[0] for s in stats)
    regression, covariance = conditional_geometry(condition.double().numpy(), r, theta, phi, means)
    module.set_dependent_geometry(zmatrix, tuple(s[1] for s in stats), covariance, regression)


#: Bonds between the moving atoms of two free torsions whose steps the cvae couples (:func:`fit_step_coupling`).
STEP_COUPLING_REACH = 3
#: Ridge penalty per training pair of that coupling's regression.
STEP_COUPLING_RIDGE = 0.01


def torsion_steps(torsions: Sequence[np.ndarray], stride: int) -> np.ndarray:
    """How far every torsion moves over ``stride`` frames (pairs, torsions), wrapped to [-pi, pi), radians.

    ``torsions``: one (frames, torsions) array per contiguous block of time; pairs never span two.
    """
    return np.angle(np.exp(1j * np.concatenate([t[stride:] - t[:-stride] for t in torsions])))


def fit_step_coupling(
    mapping: Mapping,
    zmatrix,
    free_columns: np.ndarray,
    steps: np.ndarray,
    reach: int = STEP_COUPLING_REACH,
    ridge: float = STEP_COUPLING_RIDGE,
) -> np.ndarray:
    """Linear prediction of each free torsion's step from the steps of nearby free torsions drawn before it.

    A torsion is measured from reference atoms that other torsions move: the C of chignolin's
    terminal Tyr10 is placed by its torsion about the bond from the Trp9 peptide plane, so when
    that plane turns the torsion turns with it, although the atom stays (held-out R^2 0.45;
    drawn independently, the residue swung between frames). Ridge regression of ``sin(step_k)``
    on ``sin(step_j)`` for the torsions ``j`` whose moving atom is within ``reach`` bonds of
    ``k``'s and whose row is at an earlier level (drawn first).

    Parameters
    ----------
    mapping
        The model's mapping (its topology's bonds).
    zmatrix
        The model's Z-matrix.
    free_columns
        Its rows with free torsions, in the module's free-torsion order.
    steps
        (pairs, free) training steps, radians (:func:`torsion_steps`).
    reach, ridge
        Bonds within which torsions may couple; ridge penalty per pair on ``sin(step)``.

    Returns
    -------
    (free, free) coupling for :meth:`~openmmbackmap.models.cvae.CVAEBackmapper.set_step_coupling`.
    """
    _, hops = bond_graph(mapping.topology)
    moving = zmatrix.rows[free_columns, 0]
    level = zmatrix.level[free_columns]
    signal = np.sin(steps)
    coupling = np.zeros((len(free_columns), len(free_columns)))
    for k in range(len(free_columns)):
        inputs = np.flatnonzero((level < level[k]) & (hops[moving, moving[k]] <= reach))
        if len(inputs) == 0:
            continue
        a = signal[:, inputs]
        coupling[k, inputs] = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(len(inputs)), a.T @ signal[:, k])
    return coupling


def _initialise_persistence(module: torch.nn.Module, steps: np.ndarray) -> None:
    """Start each free torsion's persistence kappa at the von Mises fit of its steps (pairs, free), radians.

    The mean resultant length R of the steps gives kappa ~ R (2 - R^2) / (1 - R^2) (Banerjee et
    al. 2005): training then refines a value of the right size (10-20 for a side chain that
    moves 15 degrees between frames) instead of climbing to it from 0.7 in the few hundred
    optimiser steps a small reference allows.
    """
    length = np.clip(np.abs(np.exp(1j * steps).mean(0)), 0.0, 0.995)
    kappa = np.clip(length * (2.0 - length**2) / (1.0 - length**2), 1e-3, 100.0)
    with torch.no_grad():
        module.persistence.copy_(torch.as_tensor(np.log(np.expm1(kappa)), dtype=torch.float32))  # softplus^-1


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
        closure_stats=closure_statistics(train_xyz, zmatrix),
    )
    train_cg = torch.from_numpy(mapping.map(train_xyz))
    validation_cg = torch.from_numpy(mapping.map(validation_xyz))
    _normalise_features(module, train_cg)
    _fit_dependent_geometry(module, zmatrix, train_cg, r, theta, phi, (r_stats, theta_stats, phi_stats), free_columns)

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
    step_coupling: bool = True,
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
    step_coupling
        Centre each torsion's persistence kernel on its previous value shifted by the steps of
        nearby torsions drawn before it (:func:`fit_step_coupling`); False: on its previous value.
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
        closure_stats=closure_statistics(train_xyz, zmatrix),
    )
    train_cg = torch.from_numpy(mapping.map(train_xyz))
    _normalise_features(module, train_cg)
    _fit_dependent_geometry(module, zmatrix, train_cg, r, theta, phi, (r_stats, theta_stats, phi_stats), free_columns)
    # The free torsions of each block (training: phi of train_xyz, the blocks end to end, cut at the block ends).
    block_ends = np.cumsum([len(b) for b in train_blocks])[:-1]
    train_torsions = np.split(phi[:, free_columns], block_ends)
    validation_torsions = [internal_coordinates(b, zmatrix)[2][:, free_columns] for b in validation_blocks]
    steps = torsion_steps(train_torsions, stride)
    coupling = fit_step_coupling(mapping, zmatrix, free_columns, steps) if step_coupling else np.zeros((len(free_columns),) * 2)
    module.set_step_coupling(coupling)
    # kappa measures what the coupled centre leaves of each step.
    _initialise_persistence(module, steps - np.sin(steps) @ coupling.T)

    def tensors(blocks: list[np.ndarray], torsions: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
        """Condition, targets (sin/cos, bins) and true steps of every pair ``stride`` apart."""
        previous = np.concatenate([b[:-stride] for b in blocks])
        current = np.concatenate([b[stride:] for b in blocks])
        with torch.no_grad():
            condition = module.condition(torch.from_numpy(mapping.map(current)), torch.from_numpy(previous))
        moved = torsion_steps(torsions, stride)
        return (condition, *_torsion_targets(np.concatenate([t[stride:] for t in torsions]), n_bins),
                torch.from_numpy(moved.astype(np.float32)))

    train_data = tensors(train_blocks, train_torsions)
    validation_data = tensors(validation_blocks, validation_torsions)

    def without_previous(condition: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        condition = condition.clone()
        if drop is None:
            condition[:, n_features:] = 0.0
        else:
            condition[drop, n_features:] = 0.0
        return condition

    def negative_elbo(condition, sincos, labels, steps, epsilon) -> tuple[torch.Tensor, torch.Tensor]:
        """Bin cross-entropy (summed over torsions) and KL divergence, each a mean over frames, nats.

        ``steps``: the true steps of the torsions (teacher forcing: the coupled kernels see
        those of the earlier levels, as in sampling).
        """
        mean_q, log_var_q = module.gaussian(module.encoder(torch.cat([condition, sincos], dim=1)))
        z = mean_q + torch.exp(0.5 * log_var_q) * epsilon
        nll = torch.nn.functional.cross_entropy(
            module.logits(condition, z, steps).reshape(-1, n_bins), labels.reshape(-1), reduction="sum"
        ) / len(labels)
        mean_p, log_var_p = module.gaussian(module.prior(condition))
        kl = 0.5 * (log_var_p - log_var_q + (torch.exp(log_var_q) + (mean_q - mean_p) ** 2) / torch.exp(log_var_p) - 1.0)
        return nll, kl.sum(1).mean()

    validation_epsilon = torch.randn(len(validation_data[0]), latent, generator=torch.Generator().manual_seed(evaluation_seed))

    def validate() -> dict:
        with torch.no_grad():
            condition, sincos, labels, moved = validation_data
            nll, kl = negative_elbo(condition, sincos, labels, moved, validation_epsilon)
            nll0, kl0 = negative_elbo(without_previous(condition), sincos, labels, moved, validation_epsilon)
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
            condition, sincos, labels, moved = (t[batch] for t in train_data)
            condition = without_previous(condition, torch.rand(len(batch), generator=generator) < condition_dropout)
            epsilon = torch.randn(len(batch), latent, generator=generator)
            nll, kl = negative_elbo(condition, sincos, labels, moved, epsilon)
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
            "chain_first": chain_first, "step_coupling": step_coupling,
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


# ---------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write a training checkpoint atomically (a crash never leaves half a checkpoint)."""
    with io.atomic_output(path) as temporary:
        torch.save(state, temporary)


def load_checkpoint(path: str | os.PathLike | None, key: str) -> dict | None:
    """The checkpoint at ``path`` if it exists (None otherwise); it must belong to the run ``key`` describes.

    Raises
    ------
    InputError
        If the checkpoint was written by a run with other data or options.
    """
    if path is None or not Path(path).is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("key") != key:
        raise InputError(
            f"checkpoint {str(path)!r} belongs to another training run (data, mapping or options differ); "
            "delete it or name another to start again"
        )
    return state


def _run_key(**parts) -> str:
    """A digest of what makes two training runs the same run (arrays by their bytes)."""
    digest = hashlib.sha256()
    for name in sorted(parts):
        value = parts[name]
        digest.update(name.encode())
        if isinstance(value, np.ndarray):
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------- the gan family

#: Defaults of the gan family's optimisation: frames per step, Adam's step (generator and
#: critic), epochs without improvement before stopping.
GAN_BATCH_FRAMES = 16
GAN_LEARNING_RATE = 1e-3
GAN_PATIENCE = 40
#: Default weight of the force-field prior (kT per atom). The energy has no entropy term, so a
#: strong prior pulls every sample towards the lowest minimum: on alanine dipeptide
#: (``backbone``) weights 0.1 and 0.03 collapsed the three methyl rotamers of Ala onto one
#: (held-out dihedral JSD 0.27 and 0.21 bits), 0.01 did not (0.11, the sampling floor).
GAN_PRIOR_WEIGHT = 0.01


def _prior_terms(module, prior, n_rows: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Each force-field term charged to the row that places its last atom: (kind, point indices, parameters).

    Point indices address ``cat([true atoms, generated atoms of every row])`` (frames, atoms + rows, 3):
    a term's last-placed atom comes from the generator, the atoms placed before it are the data's
    (teacher forcing). Terms among anchors only are constants and are left out.
    """
    n = module.n_atoms
    rank = np.full(n, -1)
    row_of = np.full(n, -1)
    for k, x in enumerate(module.x_index.tolist()):
        rank[x], row_of[x] = k, k
    terms = []
    for kind, atoms_name, params_name in (
        ("bond", "bond_atoms", "bond_params"), ("bond", "constraint_atoms", "constraint_params"),
        ("angle", "angle_atoms", "angle_params"), ("torsion", "torsion_atoms", "torsion_params"),
        ("pair", "pair_atoms", "pair_params"),
    ):
        atoms = getattr(prior, atoms_name).numpy()
        params = getattr(prior, params_name)
        if not len(atoms):
            continue
        last = atoms[np.arange(len(atoms)), rank[atoms].argmax(axis=1)]
        keep = rank[last] >= 0
        points = np.where(atoms == last[:, None], n + row_of[last][:, None], atoms)[keep]
        terms.append((kind, torch.as_tensor(points), params[torch.as_tensor(np.flatnonzero(keep))].float()))
    return terms


def _prior_energy(terms, prior_cls, true_xyz: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """Energy (frames,) kJ/mol of the terms with the generated atoms among the data's."""
    points = torch.cat([true_xyz, generated], dim=1)
    total = torch.zeros(len(points))
    for kind, index, params in terms:
        p = points[:, index]
        if kind == "bond":
            total = total + prior_cls.bond_terms(p, params).sum(-1)
        elif kind == "angle":
            total = total + prior_cls.angle_terms(p, params).sum(-1)
        elif kind == "torsion":
            total = total + prior_cls.torsion_terms(p, params).sum(-1)
        else:  # soft core: a wild early sample must not blow the loss up
            total = total + prior_cls.pair_terms(p, params, min_sigma=0.7)[0].sum(-1)
    return total


def _structure_score(candidate: np.ndarray, reference: np.ndarray, features) -> dict:
    """Model-selection score of generated frames: mean bond, angle, dihedral JSD plus stereochemistry errors."""
    from openmmbackmap.bench import distributions, structural

    jsd = distributions.internal_coordinate_jsd(candidate, reference, features)
    chirality = structural.chirality_errors(candidate, reference, features)["total"]
    cis = structural.cis_peptides(candidate, features)["total"]
    bonds = structural.bond_score(candidate, reference, features)
    score = jsd["mean_bonds"] + jsd["mean_angles"] + jsd["mean_dihedrals"] + (chirality + cis) / len(candidate) + (1.0 - bonds)
    return {"score": float(score), "bond_jsd": float(jsd["mean_bonds"]), "angle_jsd": float(jsd["mean_angles"]),
            "dihedral_jsd": float(jsd["mean_dihedrals"]), "chirality_errors": int(chirality), "cis_peptides": int(cis),
            "bond_score": float(bonds)}


@dataclass
class _GANMolecule:
    """One training molecule of :func:`train_gan`: its module (sharing the generator), data and prior terms."""

    mapping: Mapping
    module: torch.nn.Module
    zmatrix: object
    train_xyz: np.ndarray
    validation_xyz: np.ndarray
    train_data: tuple
    terms: list
    features: object


def _sequence(topology: app.Topology) -> str:
    """Residue names of a topology, joined with dashes (what a molecule is, in a provenance record)."""
    return "-".join(residue.name for residue in topology.residues())


def train_gan(
    mapping: Mapping,
    segments: Sequence[np.ndarray],
    *,
    other_molecules: Sequence[tuple[Mapping, Sequence[np.ndarray]]] = (),
    geometry: str = "data",
    validation_fraction: float = 0.2,
    seed: int = 0,
    prior_weight: float = GAN_PRIOR_WEIGHT,
    temperature: float = 300.0,
    system=None,
    forcefield_files: Sequence[str] | None = None,
    hidden: int = 128,
    noise: int = 8,
    atom_slots: int = 8,
    bead_slots: int = 4,
    batch_size: int = GAN_BATCH_FRAMES,
    learning_rate: float = GAN_LEARNING_RATE,
    critic_learning_rate: float | None = None,
    gradient_penalty: float = 0.1,
    critic_steps: int = 2,
    max_epochs: int = 200,
    patience: int = GAN_PATIENCE,
    evaluation_seed: int = 12345,
    validation_samples: int = 4,
    checkpoint: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = print,
) -> TrainingResult:
    """Train a ``gan`` backmapper (:mod:`openmmbackmap.models.gan`) adversarially, with the force-field prior.

    Teacher forcing, as DeepBackmap: every atom of every training frame is generated in its
    true environment (the data's beads and atoms placed before it), all atoms at once. The
    critic judges the placed atom in that environment (logistic loss, R1 penalty on the data's
    atoms); the generator minimises ``softplus(-critic) + prior_weight * E / kT``, where ``E``
    is the force-field energy of the
    terms between each generated atom and the atoms placed before it
    (:class:`~openmmbackmap.models.gan.ForceFieldPrior`; Lennard-Jones with a soft core at 0.7
    sigma), per atom. Model selection: after every epoch the model generates the held-out
    block (the last ``validation_fraction`` of every segment) ``validation_samples`` times,
    sequentially, as in use, and is scored by the mean bond, angle and dihedral JSD plus
    chirality and cis errors per frame and the bond-score deficit
    (:func:`_structure_score`); the best epoch is kept, and training stops after ``patience``
    epochs without improvement. Deterministic on one thread, also across a resume from
    ``checkpoint``.

    Several molecules train one model: ``other_molecules`` join the first, each with its own
    environments, data and force field, and one generator and one critic serve them all (each
    step is a batch of one molecule; the validation score is the mean over molecules). With
    ``geometry="forcefield"`` the model can then be applied to molecules it never saw
    (:func:`transfer_gan`).

    Parameters
    ----------
    mapping
        The CG mapping (its topology is the segments').
    segments
        Atomistic trajectories, (frames, atoms, 3) nm, each a contiguous block of time.
    other_molecules
        Further (mapping, segments) pairs of other topologies, trained together with the first.
        The returned module backmaps the first.
    geometry
        The reference bond lengths and angles the generator works about
        (:func:`~openmmbackmap.models.gan.build_environment`): ``"data"``, the training frames'
        (a model of the molecules it was trained on); ``"forcefield"``, the force field's
        (transferable; the angles no force-field term holds are measured on each molecule's
        first training frame).
    validation_fraction
        Held-out tail of each segment.
    seed
        Seeds initialisation, batch order and noise (the run is deterministic on one thread).
    prior_weight
        Weight of the force-field energy (kT per atom) in the generator's loss; 0 switches the
        prior off (the ablation).
    temperature
        Kelvin of kT.
    system, forcefield_files
        The atomistic force field: an ``openmm.System`` of the (first) topology, or force field
        files for :func:`openmmbackmap.data.reference_system` (default: the reference setup,
        amber99sbildn; the other molecules' systems are always built from the files). Its bonds
        and angles also give the generator's reference geometry.
    hidden, noise, atom_slots, bead_slots
        Width of the networks, noise dimension, environment slots.
    batch_size
        Frames per step (every atom of each).
    learning_rate, critic_learning_rate, gradient_penalty, critic_steps
        Adam (betas 0.5, 0.9) for the generator and the critic (None: the generator's), the
        weight of the R1 penalty (squared gradient of the critic at the data's atoms, in the
        critic's standardised inputs), critic updates per generator update.
    max_epochs, patience
        Epoch limit (the learning rates decay to a tenth along a cosine over it) and early stopping.
    evaluation_seed, validation_samples
        Sampling seed of the validation metrics and samples per held-out frame for the choice of epoch.
    checkpoint
        File to save the training state to after every epoch, and to resume from if it exists
        (it must come from the same data and options).
    log
        Called with one progress line per epoch (None: silent).

    Returns
    -------
    TrainingResult
    """
    from openmmbackmap.bench.structure import TopologyFeatures
    from openmmbackmap.data import REFERENCE_FORCEFIELD, reference_system
    from openmmbackmap.models.gan import (
        BOLTZMANN, GEOMETRY_SOURCES, Discriminator, ForceFieldPrior, GANBackmapper, build_environment,
        forcefield_closure_statistics, placement_features,
    )

    started = time.perf_counter()
    say = log or (lambda line: None)
    if prior_weight < 0:
        raise InputError(f"prior_weight must be 0 (no prior) or positive; got {prior_weight}")
    if geometry not in GEOMETRY_SOURCES:
        raise InputError(f"geometry must be one of {', '.join(GEOMETRY_SOURCES)}; got {geometry!r}")
    forcefield_files = tuple(forcefield_files or REFERENCE_FORCEFIELD)
    torch.manual_seed(seed)
    molecules: list[_GANMolecule] = []
    for index, (mol_mapping, mol_segments) in enumerate([(mapping, segments), *other_molecules]):
        mol_segments = _checked_segments(mol_mapping, mol_segments)
        train_blocks, validation_blocks = split_time_blocks(mol_segments, validation_fraction)
        train_xyz, validation_xyz = np.concatenate(train_blocks), np.concatenate(validation_blocks)
        mol_system = system if index == 0 and system is not None else reference_system(mol_mapping.topology, forcefield_files)
        prior = ForceFieldPrior(mol_system)
        if prior.n_atoms != mol_mapping.n_atoms:
            raise InputError(f"the force field's system has {prior.n_atoms} particles; the topology {mol_mapping.n_atoms} atoms")
        if geometry == "data":
            environment = build_environment(mol_mapping, prior, train_xyz, atom_slots=atom_slots, bead_slots=bead_slots)
            closure = closure_statistics(train_xyz, environment.zmatrix)
        else:
            environment = build_environment(mol_mapping, prior, None, atom_slots=atom_slots, bead_slots=bead_slots,
                                            template=train_xyz[0], temperature=temperature)
            closure = forcefield_closure_statistics(environment.zmatrix, prior, temperature)
        module = GANBackmapper(environment, mol_mapping.matrix.toarray(), hidden=hidden, noise=noise, closure_stats=closure)
        if molecules:
            module.generator = molecules[0].module.generator  # one generator for every molecule
        molecules.append(_GANMolecule(mol_mapping, module, environment.zmatrix, train_xyz, validation_xyz, (), _prior_terms(module, prior, module.n_rows),
                                      TopologyFeatures.from_topology(mol_mapping.topology)))
    module = molecules[0].module
    condition_size = module.generator[0].in_features - noise - 2
    critic = Discriminator(condition_size, module.n_slots, hidden=hidden)

    def teacher_forced(molecule: _GANMolecule) -> tuple[torch.Tensor, ...]:
        """Conditions, true local coordinates, frames and origins of every row, true coordinates."""
        xyz, mol_module = molecule.train_xyz, molecule.module
        true = torch.from_numpy(np.ascontiguousarray(xyz, dtype=np.float32))
        with torch.no_grad():
            points = mol_module.points(torch.from_numpy(molecule.mapping.map(xyz).astype(np.float32)))
            points[:, : mol_module.n_atoms] = true
            frames, origin, local = mol_module.environment(points, 0, mol_module.n_rows)
            condition = mol_module.condition(local, 0, mol_module.n_rows)
            x = true.index_select(1, mol_module.x_index)
            u = torch.einsum("frj,frij->fri", x - origin, frames)
        return condition, u, local, frames, origin, true

    for molecule in molecules:
        molecule.train_data = teacher_forced(molecule)
    kt = BOLTZMANN * temperature

    generator_optimizer = torch.optim.Adam(module.generator.parameters(), lr=learning_rate, betas=(0.5, 0.9))
    critic_learning_rate = learning_rate if critic_learning_rate is None else critic_learning_rate
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=critic_learning_rate, betas=(0.5, 0.9))
    rng = torch.Generator().manual_seed(seed)
    options = {
        "validation_fraction": validation_fraction, "seed": seed, "prior_weight": prior_weight, "temperature": temperature,
        "forcefield_files": list(forcefield_files), "hidden": hidden, "noise": noise, "atom_slots": atom_slots,
        "bead_slots": bead_slots, "batch_size": batch_size, "learning_rate": learning_rate,
        "critic_learning_rate": critic_learning_rate, "gradient_penalty": gradient_penalty, "critic_steps": critic_steps,
        "max_epochs": max_epochs, "patience": patience, "evaluation_seed": evaluation_seed,
        "validation_samples": validation_samples, "learning_rate_schedule": "cosine to 0.1x over max_epochs",
        "geometry": geometry,
    }
    others = tuple((m.mapping.fingerprint, _run_key(data=np.concatenate([m.train_xyz, m.validation_xyz]))) for m in molecules[1:])
    first = molecules[0]
    key = _run_key(family="gan", fingerprint=mapping.fingerprint, data=np.concatenate([first.train_xyz, first.validation_xyz]),
                   **options, **({"other_molecules": others} if others else {}))
    history: list[dict] = []
    best_score, best_epoch, best_state, best_metrics = math.inf, 0, copy.deepcopy(module.state_dict()), {}
    earlier_seconds = 0.0  # training time of the runs this one resumes
    resumed = load_checkpoint(checkpoint, key)
    if resumed is not None:
        module.load_state_dict(resumed["generator"])
        critic.load_state_dict(resumed["critic"])
        generator_optimizer.load_state_dict(resumed["generator_optimizer"])
        critic_optimizer.load_state_dict(resumed["critic_optimizer"])
        rng.set_state(resumed["rng"])
        history = resumed["history"]
        best_score, best_epoch, best_state, best_metrics = (resumed["best_score"], resumed["best_epoch"],
                                                            resumed["best_state"], resumed["best_metrics"])
        earlier_seconds = resumed.get("seconds", 0.0)
        say(f"resumed from {checkpoint} after epoch {len(history)}")

    def placement(mol_module, u: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        return placement_features(u, local, mol_module.r0, mol_module.r_scale, mol_module.theta0, mol_module.theta_scale)

    def critic_loss(molecule: _GANMolecule, batch: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Logistic loss of the critic with the R1 penalty (gradient on real samples) that keeps it smooth."""
        mol_module = molecule.module
        condition, u_real, local = (t[batch] for t in molecule.train_data[:3])
        with torch.no_grad():
            fake_placement = placement(mol_module, mol_module.generate(condition, local, z, 0, mol_module.n_rows, False), local)
        real_placement = placement(mol_module, u_real, local).requires_grad_(True)
        real = critic(condition, real_placement)
        fake = critic(condition, fake_placement)
        (gradient,) = torch.autograd.grad(real.sum(), real_placement, create_graph=True)
        penalty = gradient.pow(2).sum(-1).mean()
        loss = torch.nn.functional.softplus(-real).mean() + torch.nn.functional.softplus(fake).mean()
        return loss + 0.5 * gradient_penalty * penalty

    def generator_loss(molecule: _GANMolecule, batch: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Non-saturating adversarial loss and the prior energy, kT per atom."""
        mol_module = molecule.module
        condition, _, local, frames, origin, true = (t[batch] for t in molecule.train_data)
        u_fake = mol_module.generate(condition, local, z, 0, mol_module.n_rows, False)
        adversarial = torch.nn.functional.softplus(-critic(condition, placement(mol_module, u_fake, local))).mean()
        if prior_weight == 0.0:
            return adversarial, torch.zeros(())
        generated = origin + torch.einsum("fri,frij->frj", u_fake, frames)
        energy = _prior_energy(molecule.terms, ForceFieldPrior, true, generated) / (kt * mol_module.n_rows)
        return adversarial, energy.mean()

    def validate() -> dict:
        """The structure score of every molecule's held-out frames, generated as in use; their mean when several."""
        scores = []
        for molecule in molecules:
            cg = torch.from_numpy(molecule.mapping.map(molecule.validation_xyz))
            with torch.no_grad():  # several samples of every frame: less noise in the choice of epoch
                candidate = np.concatenate([molecule.module(cg, None, evaluation_seed + k).numpy()
                                            for k in range(validation_samples)])
            scores.append(_structure_score(candidate, np.concatenate([molecule.validation_xyz] * validation_samples),
                                           molecule.features))
        if len(scores) == 1:
            return scores[0]
        combined = {name: float(np.mean([s[name] for s in scores])) for name in scores[0]}
        combined.update({name: int(sum(s[name] for s in scores)) for name in ("chirality_errors", "cis_peptides")})
        return {**combined, "molecules": scores}

    first_epoch = len(history) + 1
    for epoch in range(first_epoch, max_epochs + 1):
        if best_epoch and epoch - best_epoch > patience:
            break
        tic = time.perf_counter()
        # Cosine decay of both steps to a tenth over max_epochs, so the game settles instead of
        # orbiting the equilibrium; a function of the epoch alone, so a resumed run takes the same steps.
        decay = 0.1 + 0.45 * (1.0 + math.cos(math.pi * (epoch - 1) / max(max_epochs - 1, 1)))
        for optimizer, rate in ((generator_optimizer, learning_rate), (critic_optimizer, critic_learning_rate)):
            for group in optimizer.param_groups:
                group["lr"] = rate * decay
        for molecule in molecules:
            molecule.module.train()
        # Every molecule's frames in random batches; with several molecules the batches are
        # shuffled together, so no molecule has the last word in an epoch.
        schedule = []
        for molecule in molecules:
            order = torch.randperm(len(molecule.train_xyz), generator=rng)
            schedule += [(molecule, order[start : start + batch_size]) for start in range(0, len(order), batch_size)]
        if len(molecules) > 1:
            schedule = [schedule[i] for i in torch.randperm(len(schedule), generator=rng).tolist()]
        totals = {"critic": 0.0, "adversarial": 0.0, "prior_kt_per_atom": 0.0}
        for molecule, batch in schedule:
            for _ in range(critic_steps):
                loss = critic_loss(molecule, batch, molecule.module.sample_noise(len(batch), rng))
                critic_optimizer.zero_grad()
                loss.backward()
                critic_optimizer.step()
            adversarial, energy = generator_loss(molecule, batch, molecule.module.sample_noise(len(batch), rng))
            generator_optimizer.zero_grad()
            (adversarial + prior_weight * energy).backward()
            generator_optimizer.step()
            totals["critic"] += float(loss.detach())
            totals["adversarial"] += float(adversarial.detach())
            totals["prior_kt_per_atom"] += float(energy.detach())
        for molecule in molecules:
            molecule.module.eval()
        metrics = validate()
        entry = {"epoch": epoch, **{k: v / len(schedule) for k, v in totals.items()}, **metrics}
        history.append(entry)
        improved = metrics["score"] < best_score
        if improved:
            best_score, best_epoch, best_state, best_metrics = metrics["score"], epoch, copy.deepcopy(module.state_dict()), metrics
        if checkpoint is not None:
            save_checkpoint(checkpoint, {
                "key": key, "generator": module.state_dict(), "critic": critic.state_dict(),
                "generator_optimizer": generator_optimizer.state_dict(), "critic_optimizer": critic_optimizer.state_dict(),
                "rng": rng.get_state(), "history": history, "best_score": best_score, "best_epoch": best_epoch,
                "best_state": best_state, "best_metrics": best_metrics,
                "seconds": earlier_seconds + time.perf_counter() - started,
            })
        say(
            f"epoch {epoch:3d}  critic {entry['critic']:+.3f}  generator {entry['adversarial']:+.3f}  prior "
            f"{entry['prior_kt_per_atom']:.3f} kT/atom  validation JSD bonds {metrics['bond_jsd']:.4f} angles "
            f"{metrics['angle_jsd']:.4f} dihedrals {metrics['dihedral_jsd']:.4f}, chirality {metrics['chirality_errors']}, "
            f"bond score {metrics['bond_score']:.4f}{'  *' if improved else ''}  ({time.perf_counter() - tic:.1f} s)"
        )
    module.load_state_dict(best_state)
    module.eval()
    scripted = torch.jit.script(module)
    train_time = earlier_seconds + time.perf_counter() - started

    validation = evaluate(scripted, mapping, first.validation_xyz, seed=evaluation_seed)
    validation.update({
        "split": f"last {validation_fraction:.0%} of each of {len(segments)} segments (model selection)",
        "selection": best_metrics,
    })
    rows = first.zmatrix.describe(mapping)
    provenance = {
        "family": "gan",
        "mapping_scheme": mapping.scheme,
        "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "segments": len(segments),
        "frames_train": int(len(first.train_xyz)),
        "frames_validation": int(len(first.validation_xyz)),
        "options": options,
        "epochs": len(history),
        "best_epoch": best_epoch,
        "train_seconds": round(train_time, 2),
        "resumed_from_epoch": None if resumed is None else first_epoch - 1,
        "force_field": {"files": list(forcefield_files), "terms": {kind: int(len(index)) for kind, index, _ in first.terms}},
        "placement": {"anchored": bool(module.anchored), "rows": rows, "levels": int(len(module.level_starts) - 1)},
        "versions": _versions(),
    }
    if len(molecules) > 1:
        provenance["molecules"] = [
            {"residues": _sequence(m.mapping.topology), "atoms": m.mapping.n_atoms, "mapping_scheme": m.mapping.scheme,
             "frames_train": int(len(m.train_xyz)), "frames_validation": int(len(m.validation_xyz))}
            for m in molecules
        ]
    return TrainingResult(scripted, mapping, "gan", provenance, validation, history)


def transfer_gan(
    source: str | os.PathLike,
    mapping: Mapping,
    template: np.ndarray,
    *,
    system=None,
    forcefield_files: Sequence[str] | None = None,
) -> TrainingResult:
    """A ``gan`` model of a molecule it was never trained on, from a model trained with force-field geometry.

    The generator holds no weight of one atom of one molecule (its inputs are environments:
    element, bond-graph distance and position of the atoms and beads around the atom to
    place), so a model trained on other molecules with ``geometry="forcefield"``
    (:func:`train_gan`) runs on any topology once the new molecule's environments, reference
    geometry and closures are built from its force field: nothing of the new molecule's
    trajectories is used.

    Parameters
    ----------
    source
        Model file of a ``gan`` trained with ``geometry="forcefield"``.
    mapping
        The new molecule's CG mapping (an anchored one, such as ``ca`` or ``backbone``).
    template
        (atoms, 3) nm, one structure of the new molecule (e.g. the PDB its topology came from):
        the reference of angles no force-field term holds.
    system, forcefield_files
        The new molecule's force field (default: the source model's files).

    Returns
    -------
    TrainingResult
        The module and its provenance (``transferred_from``); ``validation`` is empty: the
        model saw no data of this molecule (score it with the benchmark).

    Raises
    ------
    InputError
        If ``source`` is not a ``gan`` or was trained with the data's geometry.
    """
    from openmmbackmap.data import reference_system
    from openmmbackmap.models import load_backmapper
    from openmmbackmap.models.gan import ForceFieldPrior, GANBackmapper, build_environment, forcefield_closure_statistics

    trained = rejection.without_rejection(load_backmapper(source))  # the generator, not the redraws around it
    provenance = trained.metadata.provenance
    options = provenance.get("options", {})
    if trained.family != "gan" or options.get("geometry") != "forcefield":
        raise InputError(
            f"{source}: transfer needs a gan trained with force-field geometry (train_gan(geometry='forcefield'), "
            f"--transferable); this is a {trained.family} with geometry {options.get('geometry', 'data')!r}"
        )
    forcefield_files = tuple(forcefield_files or options["forcefield_files"])
    system = system if system is not None else reference_system(mapping.topology, forcefield_files)
    prior = ForceFieldPrior(system)
    if prior.n_atoms != mapping.n_atoms:
        raise InputError(f"the force field's system has {prior.n_atoms} particles; the topology {mapping.n_atoms} atoms")
    template = np.asarray(template, dtype=np.float64)
    if template.shape != (mapping.n_atoms, 3):
        raise InputError(f"template must have shape ({mapping.n_atoms}, 3); got {template.shape}")
    temperature = options["temperature"]
    environment = build_environment(mapping, prior, None, atom_slots=options["atom_slots"], bead_slots=options["bead_slots"],
                                    template=template, temperature=temperature)
    module = GANBackmapper(environment, mapping.matrix.toarray(), hidden=options["hidden"], noise=options["noise"],
                           closure_stats=forcefield_closure_statistics(environment.zmatrix, prior, temperature))
    weights = {name[len("generator."):]: value for name, value in trained.module.state_dict().items()
               if name.startswith("generator.")}
    module.generator.load_state_dict(weights)
    module.eval()
    new_provenance = {
        "family": "gan",
        "mapping_scheme": mapping.scheme,
        "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": options,
        "transferred_from": {
            "file": str(source), "sha256": io.file_sha256(source), "molecules": provenance.get("molecules"),
            "command": provenance.get("command"), "data": provenance.get("data"),
        },
        "residues": _sequence(mapping.topology),
        "force_field": {"files": list(forcefield_files)},
        "placement": {"anchored": bool(module.anchored), "levels": int(len(module.level_starts) - 1)},
        "versions": _versions(),
    }
    return TrainingResult(torch.jit.script(module), mapping, "gan", new_provenance, {})


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
    parser.add_argument("--family", default="ic", choices=["ic", "cvae", "gan"],
                        help="backmapper family: ic (frame by frame), cvae (temporally coherent: frame t conditioned "
                             "on frame t-1) or gan (adversarial, atom by atom in its local environment, force-field "
                             "prior); default ic")
    parser.add_argument("--scheme", required=True, help="builtin mapping scheme (backbone, residue_com, ...)")
    parser.add_argument("--train", nargs="+", required=True, type=Path,
                        help="training trajectory segments (topology: the .pdb beside each); the last "
                             "--validation-fraction of each is held out as a time block")
    parser.add_argument("--test", nargs="*", default=[], type=Path, help="whole segments held out for the final test")
    parser.add_argument("--test-tail", type=float, default=0.0, metavar="FRACTION",
                        help="hold out the last FRACTION of every --train segment for the final test (a block of time, "
                             "cut before the validation split), for data that come as one run; default 0: none")
    parser.add_argument("--out", required=True, type=Path, help="model file to write (.pt)")
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=None, help="width of the MLPs (default: ic 64, cvae 128, gan 128)")
    parser.add_argument("--n-bins", type=int, default=N_BINS, help="bins of a free torsion's distribution")
    parser.add_argument("--batch-size", type=int, default=None, help="frames per step (default: ic, cvae 512; gan 16)")
    parser.add_argument("--learning-rate", type=float, default=None, help="Adam's step (default: ic, cvae 2e-3; gan 1e-3)")
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=None,
                        help="epochs without validation improvement before stopping (default: ic, cvae 10; gan 40)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="train on every Nth frame of each segment, thinned before any --test-tail split (ic, "
                             "gan: decorrelated frames from long runs at a fraction of the cost; the cvae takes its "
                             "frame spacing from --stride)")
    rejection.configure_parser(parser)
    cvae = parser.add_argument_group("cvae family")
    cvae.add_argument("--stride", type=int, default=1,
                      help="frames between the conditioning frame and the generated one; the model then backmaps "
                           "trajectories with that frame spacing (default 1)")
    cvae.add_argument("--latent", type=int, default=8, help="dimension of the latent (default 8)")
    cvae.add_argument("--condition-dropout", type=float, default=0.25,
                      help="fraction of training pairs without their previous frame: trains the first-frame path")
    cvae.add_argument("--kl-warmup", type=int, default=5, help="epochs over which the KL weight rises to 1")
    gan = parser.add_argument_group("gan family")
    gan.add_argument("--prior-weight", type=float, default=GAN_PRIOR_WEIGHT,
                     help="weight of the force-field energy (kT per atom) in the generator's loss; 0 switches the "
                          f"prior off (the ablation); default {GAN_PRIOR_WEIGHT}")
    gan.add_argument("--forcefield", nargs="+", default=None, metavar="XML",
                     help="OpenMM force field files of the prior (default: the reference setup, amber99sbildn.xml "
                          "amber99_obc.xml)")
    gan.add_argument("--noise", type=int, default=8, help="noise dimension of the generator (default 8)")
    gan.add_argument("--transferable", action="store_true",
                     help="a model for molecules it never saw (`backmap transfer`): reference bond lengths and angles "
                          "from the force field instead of the data, and the --train files may hold several molecules "
                          "(the .pdb beside each says which); the written model backmaps the first file's molecule")
    gan.add_argument("--checkpoint", type=Path, default=None,
                     help="save the training state here after every epoch and resume from it if it exists")
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


def _segment_temperature(path: Path) -> float | None:
    """Temperature (K) of a training file from the provenance JSON beside it (reference data), or None."""
    provenance = Path(path).with_suffix(".json")
    if not provenance.is_file():
        return None
    try:
        value = json.loads(provenance.read_text()).get("temperature_K")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _frame_interval_ps(path: Path, topology: app.Topology) -> float | None:
    """Time between the frames of a trajectory file, ps (None when the file has no usable times)."""
    trajectory = io.load_trajectory(path, topology)
    if trajectory.n_frames < 2:
        return None
    steps = np.diff(trajectory.time)
    return float(np.median(steps)) if np.all(steps > 0) else None


def _group_by_topology(paths: Sequence[Path]) -> list[tuple[list[Path], app.Topology, list[np.ndarray]]]:
    """Training files grouped by molecule (the ``.pdb`` beside each), in the order molecules first appear."""
    groups: dict[str, tuple[app.Topology, list[Path]]] = {}
    for path in map(Path, paths):
        pdb = path.with_suffix(".pdb")
        if not pdb.is_file():
            raise InputError(f"segment {str(path)!r} has no topology {pdb.name!r} beside it")
        topology, _ = io.load_topology(pdb)
        groups.setdefault(json.dumps(io.topology_to_dict(topology), sort_keys=True), (topology, []))[1].append(path)
    return [(group, *load_segments(group, topology)) for topology, group in groups.values()]


def run(args: argparse.Namespace, command: str) -> int:
    """Train, test on held-out segments and save, as the parsed options say; ``command`` goes into the provenance."""
    torch.set_num_threads(args.threads)
    rejection.check_options(args)
    if args.transferable and args.family != "gan":
        raise InputError("--transferable is an option of the gan family (--family gan)")
    if args.every < 1:
        raise InputError(f"--every must be a positive number of frames; got {args.every}")
    if args.every > 1 and args.family == "cvae":
        raise InputError("--every thins the frames of frame-by-frame families; the cvae learns from pairs --stride frames apart")
    groups = _group_by_topology(args.train) if args.transferable else [(args.train, *load_segments(args.train))]
    groups = [(paths, group_topology, [s[:: args.every] for s in group]) for paths, group_topology, group in groups]
    train_paths, topology, segments = groups[0]
    test_tail: list[np.ndarray] = []
    if args.test_tail:
        if not 0.0 < args.test_tail < 1.0:
            raise InputError(f"--test-tail must lie in (0, 1); got {args.test_tail}")
        segments, test_tail = split_time_blocks(segments, args.test_tail)
    mapping = Mapping.from_scheme(topology, args.scheme)
    print(f"{len(segments)} training segments, {sum(len(s) for s in segments)} frames; mapping {mapping}", flush=True)
    temperatures = {str(p): _segment_temperature(p) for p in args.train}
    if len(set(temperatures.values()) - {None}) > 1:
        print(f"warning: the training files were simulated at {', '.join(f'{t:g}' for t in sorted(set(temperatures.values()) - {None}))} K "
              "(their provenance JSON): the model learns the mixture of those ensembles, and backmaps a trajectory at "
              "one of them with geometry and rotamers too broad for it (chignolin cvae, 300 K held out: frame-to-frame "
              "motion 1.20-1.30x the reference's trained on 300-450 K, 1.02-1.08x trained on 300 K only)", flush=True)
    gan = args.family == "gan"
    common = dict(
        validation_fraction=args.validation_fraction, seed=args.seed, max_epochs=args.max_epochs,
        batch_size=args.batch_size or (GAN_BATCH_FRAMES if gan else 512),
        learning_rate=args.learning_rate or (GAN_LEARNING_RATE if gan else 2e-3),
        patience=args.patience or (GAN_PATIENCE if gan else 10),
        log=lambda line: print(line, flush=True),
    )
    if gan:
        others = [(Mapping.from_scheme(other, args.scheme), other_segments) for _, other, other_segments in groups[1:]]
        if others:
            print(f"and {len(others)} more molecules: " + "; ".join(
                f"{_sequence(m.topology)}, {sum(len(s) for s in segs)} frames" for m, segs in others), flush=True)
        result = train_gan(
            mapping, segments, other_molecules=others, geometry="forcefield" if args.transferable else "data",
            hidden=args.hidden or 128, prior_weight=args.prior_weight,
            forcefield_files=args.forcefield, noise=args.noise, checkpoint=args.checkpoint, **common,
        )
    elif args.family == "cvae":
        interval = _frame_interval_ps(args.train[0], topology)
        result = train_cvae(
            mapping, segments, stride=args.stride, frame_interval_ps=interval, hidden=args.hidden or 128,
            latent=args.latent, condition_dropout=args.condition_dropout, kl_warmup=args.kl_warmup, n_bins=args.n_bins,
            **common,
        )
    else:
        result = train_ic(mapping, segments, hidden=args.hidden or 64, n_bins=args.n_bins, **common)
    result.provenance["command"] = command
    result.provenance["data"] = {
        "train": [{"file": str(p), "sha256": io.file_sha256(p), "frames": len(s), "temperature_K": temperatures[str(p)]}
                  for p, s in zip(train_paths, segments)]
        + [{"file": str(p), "sha256": io.file_sha256(p), "frames": len(s), "temperature_K": temperatures[str(p)]}
           for paths, _, group in groups[1:] for p, s in zip(paths, group)],
        "every": args.every,
        "test": [{"file": str(p), "sha256": io.file_sha256(p)} for p in args.test],
    }
    if test_tail:
        result.provenance["data"]["test_tail"] = {
            "fraction": args.test_tail, "frames": [len(t) for t in test_tail],
            "note": "the last frames of every training file, held out before the validation split",
        }
    print(_summary("validation (held-out tail of each training segment)", result.validation), flush=True)
    if args.test or test_tail:
        test_segments = test_tail + (load_segments(args.test, topology)[1] if args.test else [])
        seed = result.provenance["options"]["evaluation_seed"]
        if args.family == "cvae":
            test = evaluate_temporal(result.module, mapping, test_segments, stride=args.stride,
                                     frame_interval_ps=interval or 1.0, seed=seed)
        else:
            test = evaluate(result.module, mapping, np.concatenate(test_segments), seed=seed)
        test["files"] = [str(p) for p in args.test] + ([f"last {args.test_tail:.0%} of each --train file"] if test_tail else [])
        result.validation["test"] = test
        print(_summary(f"test (held out: {', '.join(test['files'])})", test), flush=True)
    rejection.apply_options(result, args)  # the held-out metrics above stay the model's own draws
    path = save_result(result, args.out)
    print(f"saved {path} ({path.stat().st_size / 1024:.0f} KiB) after {result.provenance['train_seconds']:.0f} s of training", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
