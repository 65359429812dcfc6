"""Learned coarse-grained (CG) force fields by force matching, run in OpenMM through openmm-torch.

A CG force field here is a TorchScript module ``forward(positions) -> energy`` (nm in,
kJ/mol out) that :class:`openmmtorch.TorchForce` evaluates; OpenMM takes the forces from
its autograd gradient. The energy is a physical prior plus a small neural network:

- prior: harmonic bonds between bonded beads, restricted-bending angles over bonded triplets
  (``k (cos theta - cos theta_0)^2 / (2 sin^2 theta)``: harmonic near theta_0, infinite at 180
  degrees, so that the dihedrals stay defined), a cosine series (orders 1-3, cosine and sine
  terms, so chirality is kept) over bonded quadruplets (for the ``backbone`` mapping of the
  alanine dipeptide these are phi and psi), and a repulsion ``kT (sigma / r)^12`` between
  beads three or more bonds apart. Its parameters come from Boltzmann inversion of the mapped
  reference distributions.
- network: an MLP on rotation- and translation-invariant features (bond lengths, angles,
  sine and cosine of the dihedrals, distances of non-bonded pairs), trained so that the
  total force matches the mapped atomistic forces (mean squared force error).

Force matching fits gradients. The free-energy offset between torsional basins is the
integral of the mean force across sparsely sampled barriers, which it pins down poorly: the
force-matched alanine dipeptide model gave alpha_R 14 % instead of 42 %. :func:`refine_torsions`
therefore corrects the prior's dihedral series by iterative Boltzmann inversion against the
reference's dihedral distributions (network unchanged), as in hybrid force-matching /
structure-based CG workflows.

Simulations: a model evaluates ``k`` non-interacting copies of the molecule at once (positions
``(k * n_beads, 3)``), :func:`create_cg_system` ``copies=k``. TorchForce costs about 1 ms per
step however small the model, so parallel copies in one Context are what make CG sampling
cheaper than the atomistic run.

Reproduce the shipped ``data/models/ala2_backbone_cgff.pt`` (commands are in its metadata)::

    python -m openmmbackmap.cgforce train --data reference-data/ala2/ala2_00{0..9} \
        --test-segments 8 9 --epochs 40 --patience 5 --max-seconds 720 --seed 0 --out ff.pt
    python -m openmmbackmap.cgforce refine --model ff.pt --data reference-data/ala2/ala2_00{0..7} \
        --iterations 3 --copies 100 --production-ps 50 --out ala2_backbone_cgff.pt

Force map. The reference forces come from simulations with bonds to hydrogen constrained
(``getForces`` returns the force-field forces, without constraint forces). A force map is
statistically consistent (its mapped force is an unbiased estimate of the mean force, the
negative gradient of the CG free energy) when (i) ``W M^T = I`` for the coordinate map ``M``
and (ii) it annihilates every constraint force (Ciccotti et al. 2005; Kramer et al.,
"Statistically optimal force aggregation for coarse-graining molecular dynamics", JPCL 14,
3970 (2023)). The *basic* map (bead force = force on the mapped atom) fails (ii): the N-H
and CA-HA constraints pull on the N and CA atoms. We use the *aggregated* map: the force
on a bead is the sum of the forces on all the atoms it owns (:attr:`Mapping.atom_owner`).
Every constrained pair lies within one bead, so constraint forces cancel, and ``W M^T = I``
holds because each bead atom is owned by its own bead. It also cancels the stiff
intra-bead bond forces, so it is less noisy (RMS mapped force 821 vs 1094 kJ/mol/nm on the
alanine dipeptide data) and the net force on the molecule is zero. A check of consistency
and of units: the CG virial ``-<sum_I (X_I - X_c) . F_I> / (3 (n - 1) k_B)`` estimates the
temperature; on the reference data it gives about 270-300 K with the aggregated map and
about 360 K with the basic map. :func:`load_force_data` uses this estimate to reject
forces in the wrong units (kcal/mol/A is off by 41.84).

Units: nm, ps, kJ/mol, K, dalton.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import openmm
import openmm.app as app
import openmm.unit as unit

from openmmbackmap import geometry, io, plugins, torch_geometry  # plugins loads the openmm-torch kernels too
from openmmbackmap.errors import BackmapError, InputError
from openmmbackmap.mapping import Mapping

__all__ = [
    "FORMAT",
    "CGForceField",
    "CGSimulationError",
    "ForceData",
    "load_force_data",
    "load_mapped_positions",
    "mapped_data_path",
    "save_mapped_force_data",
    "map_forces",
    "fit_prior",
    "train",
    "save_model",
    "load_metadata",
    "create_cg_system",
    "run_checked",
    "bundled_model",
]

FORMAT = "openmm-backmap/cgforce"
FORMAT_VERSION = 1
#: Boltzmann constant, kJ/mol/K.
KB = 0.00831446261815324


class CGSimulationError(BackmapError, RuntimeError):
    """A CG simulation became unstable; the message names the step and the bead."""


# ---------------------------------------------------------------------- topology of the beads


def bead_terms(mapping: Mapping) -> dict[str, np.ndarray]:
    """Bonded terms of the bead graph: bonds, angles, dihedrals (bonded chains), non-bonded pairs (>= 3 bonds apart)."""
    n = mapping.n_beads
    bonds = np.asarray(mapping.bead_bonds, dtype=np.int64).reshape(-1, 2)
    neighbours: list[set[int]] = [set() for _ in range(n)]
    for i, j in bonds:
        neighbours[i].add(int(j))
        neighbours[j].add(int(i))
    angles = sorted(
        {(min(i, k), j, max(i, k)) for j in range(n) for i in neighbours[j] for k in neighbours[j] if i != k}
    )
    dihedrals = set()
    for j, k in bonds:
        for i in neighbours[j] - {k}:
            for l in neighbours[k] - {j, i}:
                quad = (i, int(j), int(k), l)
                dihedrals.add(min(quad, quad[::-1]))
    close = {tuple(b) for b in bonds.tolist()} | {(a, c) for a, _, c in angles}
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if (i, j) not in close]
    return {
        "bonds": bonds,
        "angles": np.array(angles, dtype=np.int64).reshape(-1, 3),
        "dihedrals": np.array(sorted(dihedrals), dtype=np.int64).reshape(-1, 4),
        "pairs": np.array(pairs, dtype=np.int64).reshape(-1, 2),
    }


# ---------------------------------------------------------------------- geometry (numpy)


# ---------------------------------------------------------------------- the model


class CGForceField(torch.nn.Module):
    """Prior + MLP energy of one or more copies of a CG molecule.

    ``forward(positions)`` takes positions of shape (k * n_beads, 3) in nm (k independent,
    non-interacting copies; k = 1 for one molecule) and returns the total energy in kJ/mol,
    the signature :class:`openmmtorch.TorchForce` expects. :meth:`energies` gives the
    energy of each configuration of a batch (frames, n_beads, 3).
    """

    def __init__(
        self,
        n_beads: int,
        terms: dict[str, np.ndarray],
        prior: dict[str, Any],
        hidden: int = 32,
        feature_mean: np.ndarray | None = None,
        feature_std: np.ndarray | None = None,
    ):
        super().__init__()
        dt = torch.float64
        self.n_beads = n_beads
        t = lambda a, d=dt: torch.as_tensor(np.asarray(a), dtype=d)  # noqa: E731
        self.register_buffer("bonds", t(terms["bonds"], torch.long).reshape(-1, 2))
        self.register_buffer("angles", t(terms["angles"], torch.long).reshape(-1, 3))
        self.register_buffer("dihedrals", t(terms["dihedrals"], torch.long).reshape(-1, 4))
        self.register_buffer("pairs", t(terms["pairs"], torch.long).reshape(-1, 2))
        self.register_buffer("bond_r0", t(prior["bond_r0"]))
        self.register_buffer("bond_k", t(prior["bond_k"]))
        self.register_buffer("angle_t0", t(prior["angle_t0"]))
        self.register_buffer("angle_k", t(prior["angle_k"]))
        self.register_buffer("orders", t(np.arange(1, 4)))
        self.register_buffer("dih_cos", t(prior["dih_cos"]).reshape(-1, 3))
        self.register_buffer("dih_sin", t(prior["dih_sin"]).reshape(-1, 3))
        self.register_buffer("rep_sigma", t(prior["rep_sigma"]))
        self.rep_eps = float(prior["rep_eps"])
        n_features = len(terms["bonds"]) + len(terms["angles"]) + 2 * len(terms["dihedrals"]) + len(terms["pairs"])
        if feature_mean is None:
            feature_mean = np.zeros(n_features)
        if feature_std is None:
            feature_std = np.ones(n_features)
        self.register_buffer("feature_mean", t(feature_mean))
        self.register_buffer("feature_std", t(feature_std))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_features, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, 1),
        ).to(dt)
        # start from the prior alone: the network's output layer is zero
        torch.nn.init.zeros_(self.net[4].weight)
        torch.nn.init.zeros_(self.net[4].bias)

    def _internal(self, x: torch.Tensor) -> list[torch.Tensor]:
        d = x[:, self.bonds[:, 1]] - x[:, self.bonds[:, 0]]
        r = torch.linalg.norm(d, dim=-1)
        theta = torch_geometry.angle(x[:, self.angles[:, 0]], x[:, self.angles[:, 1]], x[:, self.angles[:, 2]])
        phi = torch_geometry.dihedral(x[:, self.dihedrals[:, 0]], x[:, self.dihedrals[:, 1]],
                                      x[:, self.dihedrals[:, 2]], x[:, self.dihedrals[:, 3]])
        p = x[:, self.pairs[:, 1]] - x[:, self.pairs[:, 0]]
        rp = torch.linalg.norm(p, dim=-1)
        return [r, theta, phi, rp]

    def prior_energies(self, x: torch.Tensor) -> torch.Tensor:
        r, theta, phi, rp = self._internal(x)
        return self._prior(r, theta, phi, rp)

    def _prior(self, r: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor, rp: torch.Tensor) -> torch.Tensor:
        e = 0.5 * (self.bond_k * (r - self.bond_r0) ** 2).sum(-1)
        # restricted bending (GROMACS angle type 10, as Martini uses it): harmonic in theta near
        # angle_t0 with the same k, but infinite at 180 degrees, where the dihedrals through the
        # angle lose their definition and their forces diverge (C-alpha chains reached it)
        sin2 = torch.sin(theta) ** 2
        e = e + 0.5 * (self.angle_k * (torch.cos(theta) - torch.cos(self.angle_t0)) ** 2 / sin2.clamp_min(1e-8)).sum(-1)
        nphi = phi.unsqueeze(-1) * self.orders
        e = e + (self.dih_cos * torch.cos(nphi) + self.dih_sin * torch.sin(nphi)).sum(-1).sum(-1)
        e = e + self.rep_eps * ((self.rep_sigma / rp) ** 12).sum(-1)
        return e

    def energies(self, x: torch.Tensor) -> torch.Tensor:
        """Energy (kJ/mol) of each configuration of ``x`` (frames, n_beads, 3), nm."""
        r, theta, phi, rp = self._internal(x)
        features = torch.cat([r, theta, torch.cos(phi), torch.sin(phi), rp], dim=-1)
        features = (features - self.feature_mean) / self.feature_std
        return self._prior(r, theta, phi, rp) + self.net(features).squeeze(-1)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        x = positions.to(torch.float64).reshape(-1, self.n_beads, 3)
        return self.energies(x).sum()


# ---------------------------------------------------------------------- data


@dataclass
class ForceData:
    """Mapped training data: bead positions (frames, beads, 3) nm, forces kJ/mol/nm, and the segment of each frame."""

    positions: np.ndarray
    forces: np.ndarray
    segment: np.ndarray
    sources: list[str]
    virial_temperature: float


def map_forces(mapping: Mapping, forces: np.ndarray) -> np.ndarray:
    """Aggregated force map: the force on each bead is the sum of the forces on the atoms it owns.

    Raises
    ------
    InputError
        If an atom belongs to no bead (its force would be lost) or a bead is not a single atom
        (the aggregated map is consistent with ``W M^T = I`` only when every bead's weighted
        atoms are owned by it; multi-atom beads need an optimised map, not implemented).
    """
    owner = np.asarray(mapping.atom_owner)
    if (owner < 0).any():
        raise InputError(f"atom {int(np.flatnonzero(owner < 0)[0])} belongs to no bead: no force map")
    dense = mapping.matrix.toarray()
    for b in range(mapping.n_beads):
        if np.count_nonzero(dense[b]) != 1:
            raise InputError(
                f"bead {b} ({mapping.beads[b].name}) has several weighted atoms; the aggregated force map "
                "implemented here is statistically consistent only for single-atom beads"
            )
    weights = np.zeros((mapping.n_beads, mapping.n_atoms))
    weights[owner, np.arange(mapping.n_atoms)] = 1.0
    return np.einsum("ba,fak->fbk", weights, np.asarray(forces, dtype=np.float64))


def virial_temperature(positions: np.ndarray, forces: np.ndarray) -> float:
    """Temperature (K) from the CG virial, ``-<sum (X - X_c) . F> / (3 (n - 1) k_B)``."""
    return float(_virial_temperatures(positions, forces).mean())


def _virial_temperatures(positions: np.ndarray, forces: np.ndarray) -> np.ndarray:
    """The virial temperature estimate of each frame (K); their mean is :func:`virial_temperature`."""
    centred = positions - positions.mean(1, keepdims=True)
    n = positions.shape[1]
    return -(centred * forces).sum((1, 2)) / (3 * (n - 1) * KB)


def mapped_data_path(prefix: str | os.PathLike, mapping: Mapping) -> Path:
    """Where a segment's mapped positions and forces for ``mapping``'s scheme are bundled: ``<prefix>.<scheme>.cg.npz``."""
    return Path(f"{prefix}.{mapping.scheme}.cg.npz")


def save_mapped_force_data(
    prefix: str | os.PathLike,
    mapping: Mapping,
    temperature: float = 300.0,
    out_prefix: str | os.PathLike | None = None,
) -> Path:
    """Map one segment's atomistic positions and forces and save them compactly for force matching.

    The full-atom ``<prefix>.positions.npy`` and ``.forces.npy`` are too big to ship (chignolin:
    12 MB per 5 ns); force matching with a given mapping needs only the bead positions and the
    aggregated bead forces, which this writes to :func:`mapped_data_path` (float32, with the
    mapping's fingerprint so that another mapping cannot load them). :func:`load_force_data` reads
    the file when the full-atom files are absent. Checked as :func:`load_force_data` checks them
    (``temperature``: the segment's, for the virial check). Written beside ``out_prefix``
    (default: ``prefix``).
    """
    data = load_force_data([prefix], mapping, temperature)
    path = mapped_data_path(prefix if out_prefix is None else out_prefix, mapping)
    with io.atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, positions=data.positions.astype(np.float32),
                                forces=data.forces.astype(np.float32),
                                mapping_fingerprint=np.array(mapping.fingerprint))
    return path


def _segment_arrays(prefix: str, mapping: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """Bead positions and aggregated bead forces of one segment, from full-atom files or a mapped bundle."""
    pos_path, force_path = Path(prefix + ".positions.npy"), Path(prefix + ".forces.npy")
    bundle = mapped_data_path(prefix, mapping)
    if not force_path.exists() and bundle.exists():
        with np.load(bundle) as stored:
            if str(stored["mapping_fingerprint"]) != mapping.fingerprint:
                raise InputError(f"{bundle}: mapped with another {mapping.scheme} mapping (fingerprint differs); "
                                 "remap the segment's full-atom data")
            x, f = stored["positions"].astype(np.float64), stored["forces"].astype(np.float64)
        if x.ndim != 3 or x.shape != f.shape or x.shape[1:] != (mapping.n_beads, 3):
            raise InputError(f"{bundle}: positions {x.shape} and forces {f.shape}; expected (frames, {mapping.n_beads}, 3)")
        return x, f
    if not force_path.exists():
        raise InputError(
            f"{prefix}: no forces ({force_path} missing); force matching needs the forces at every frame "
            "(run_reference_simulation writes them)"
        )
    if not pos_path.exists():
        raise InputError(
            f"{prefix}: no unrounded positions ({pos_path} missing); XTC positions are rounded to 0.001 nm, "
            "which corrupts force matching (run_reference_simulation(save_positions=True))"
        )
    x = np.load(pos_path)
    f = np.load(force_path)
    for name, a in (("positions", x), ("forces", f)):
        if a.ndim != 3 or a.shape[2] != 3:
            raise InputError(f"{prefix}: {name} have shape {a.shape}; expected (frames, atoms, 3)")
        if a.shape[1] != mapping.n_atoms:
            raise InputError(
                f"{prefix}: {name} have {a.shape[1]} atoms but the mapping's topology has {mapping.n_atoms}"
            )
    if x.shape != f.shape:
        raise InputError(f"{prefix}: positions {x.shape} and forces {f.shape} differ in shape")
    return mapping.map(x.astype(np.float64)), map_forces(mapping, f)


def load_mapped_positions(prefix: str | os.PathLike, mapping: Mapping) -> np.ndarray:
    """Bead positions (frames, beads, 3) nm of one segment: unrounded full-atom positions mapped, or the mapped bundle."""
    prefix = str(prefix)
    if Path(prefix + ".positions.npy").exists():
        return mapping.map(np.load(prefix + ".positions.npy").astype(np.float64))
    return _segment_arrays(prefix, mapping)[0]


def load_force_data(
    prefixes: Sequence[str | os.PathLike],
    mapping: Mapping,
    temperature: float = 300.0,
) -> ForceData:
    """Load each segment's positions and forces and map them.

    A segment is either full-atom (``<prefix>.positions.npy`` and ``<prefix>.forces.npy``, as
    run_reference_simulation writes them) or already mapped (:func:`save_mapped_force_data`,
    how the bundled chignolin data ship).

    Raises
    ------
    InputError
        If a segment has no forces or positions file, their shapes disagree with each other or
        with the mapping's atom count, a mapped bundle was made with another mapping, the
        provenance JSON names other units, a value is not finite, or the mapped forces' virial
        temperature is off by more than a factor 2 (and four standard errors) from
        ``temperature`` (forces in kcal/mol/A, or a sign error).
    """
    xs, fs, seg, sources = [], [], [], []
    for k, prefix in enumerate(prefixes):
        prefix = str(prefix)
        meta_path = Path(prefix + ".json")
        if meta_path.exists():
            units = json.loads(meta_path.read_text()).get("units", {})
            if units.get("forces", "kJ/mol/nm") != "kJ/mol/nm" or units.get("positions", "nm") != "nm":
                raise InputError(f"{meta_path}: units {units}; expected positions in nm and forces in kJ/mol/nm")
        cg_x, cg_f = _segment_arrays(prefix, mapping)
        for name, a in (("positions", cg_x), ("forces", cg_f)):
            if not np.isfinite(a).all():
                raise InputError(f"{prefix}: {name} contain NaN or infinite values")
        # The per-frame estimate is noisy (thousands of K for a 10-bead chain), so a short
        # segment is rejected only when it is off by a factor of 2 *and* by more than four
        # standard errors (frames taken as independent: mapped forces decorrelate within a ps).
        per_frame = _virial_temperatures(cg_x, cg_f)
        t_vir = float(per_frame.mean())
        error = float(per_frame.std() / np.sqrt(len(per_frame)))
        if not 0.5 * temperature <= t_vir <= 2.0 * temperature and abs(t_vir - temperature) > 4 * error:
            raise InputError(
                f"{prefix}: the mapped forces give a virial temperature of {t_vir:.0f} +- {error:.0f} K, not about "
                f"{temperature:.0f} K; forces must be in kJ/mol/nm (kcal/mol/A is 41.84x smaller) and be forces, "
                "not gradients"
            )
        xs.append(cg_x)
        fs.append(cg_f)
        seg.append(np.full(len(cg_x), k))
        sources.append(prefix)
    positions, forces = np.concatenate(xs), np.concatenate(fs)
    return ForceData(positions, forces, np.concatenate(seg), sources, virial_temperature(positions, forces))


# ---------------------------------------------------------------------- prior by Boltzmann inversion


def fit_prior(positions: np.ndarray, terms: dict[str, np.ndarray], temperature: float = 300.0) -> dict[str, Any]:
    """Prior parameters from the mapped distributions (Boltzmann inversion).

    Bonds and angles: the mean and ``k = kT / variance`` (harmonic bonds; angles restricted
    bending, harmonic near the mean). Dihedrals: a cosine
    series (orders 1-3, cosine and sine) least-squares fitted to ``-kT ln p`` of all 36
    10-degree histogram bins, each with one pseudo-count (an unvisited bin gets a finite high
    free energy). Repulsion: ``kT (sigma / r)^12`` with sigma the 0.1th percentile of each
    non-bonded pair distance, less 0.02 nm.
    """
    kt = KB * temperature
    x = np.asarray(positions, dtype=np.float64)
    b = terms["bonds"]
    r = np.linalg.norm(x[:, b[:, 1]] - x[:, b[:, 0]], axis=-1)
    theta = geometry.angles(x, terms["angles"])
    phi = geometry.dihedrals(x, terms["dihedrals"])
    edges = np.linspace(-np.pi, np.pi, 37)
    centres = 0.5 * (edges[1:] + edges[:-1])
    dih_cos, dih_sin = [], []
    for d in range(phi.shape[1]):
        counts, _ = np.histogram(phi[:, d], edges)
        # Boltzmann inversion over every bin, one pseudo-count each: a bin the data never visit
        # gets a finite high free energy instead of dropping out of the fit. Dropped, a narrow
        # (folded-only) distribution let the series dive by thousands of kJ/mol in the unvisited
        # bins and the CG chain fell into those artificial wells (chignolin ``ca``, 500 frames).
        u = -kt * np.log((counts + 1.0) / (counts.sum() + len(counts)))
        c, s_ = _fourier_fit(centres, u, np.ones_like(u))
        dih_cos.append(c)
        dih_sin.append(s_)
    p = terms["pairs"]
    rp = np.linalg.norm(x[:, p[:, 1]] - x[:, p[:, 0]], axis=-1)
    return {
        "bond_r0": r.mean(0),
        "bond_k": kt / r.var(0),
        "angle_t0": theta.mean(0),
        "angle_k": kt / theta.var(0),
        "dih_cos": np.array(dih_cos).reshape(-1, 3),
        "dih_sin": np.array(dih_sin).reshape(-1, 3),
        "rep_sigma": np.percentile(rp, 0.1, axis=0) - 0.02,
        "rep_eps": kt,
    }


# ---------------------------------------------------------------------- training


def _features(model: CGForceField, x: torch.Tensor) -> torch.Tensor:
    r, theta, phi, rp = model._internal(x)
    return torch.cat([r, theta, torch.cos(phi), torch.sin(phi), rp], dim=-1)


def force_error(model: CGForceField, x: np.ndarray, f: np.ndarray, batch: int = 4096) -> float:
    """Mean squared force error per component, (kJ/mol/nm)^2."""
    total, count = 0.0, 0
    for s in range(0, len(x), batch):
        xb = torch.tensor(x[s : s + batch], dtype=torch.float64, requires_grad=True)
        e = model.energies(xb).sum()
        (g,) = torch.autograd.grad(e, xb)
        total += float(((-g - torch.as_tensor(f[s : s + batch])) ** 2).sum())
        count += g.numel()
    return total / count


def split_frames(segment: np.ndarray, test_segments: Sequence[int], validation_fraction: float = 0.2):
    """Time-block split: whole held-out segments for test; the last fraction of each other segment for validation."""
    train, val, test = [], [], []
    for s in np.unique(segment):
        idx = np.flatnonzero(segment == s)
        if s in test_segments:
            test.append(idx)
            continue
        cut = int(round(len(idx) * (1 - validation_fraction)))
        train.append(idx[:cut])
        val.append(idx[cut:])
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
    return cat(train), cat(val), cat(test)


def train(
    data: ForceData,
    mapping: Mapping,
    *,
    test_segments: Sequence[int] = (),
    validation_fraction: float = 0.2,
    hidden: int = 32,
    epochs: int = 30,
    batch_size: int = 256,
    learning_rate: float = 3e-3,
    patience: int = 5,
    seed: int = 0,
    temperature: float = 300.0,
    max_seconds: float | None = None,
    log=print,
) -> tuple[CGForceField, dict[str, Any]]:
    """Fit the prior by Boltzmann inversion, then train the network by force matching.

    Early stopping on the validation force error (the best epoch's weights are kept).
    Returns the model and a report (errors in (kJ/mol/nm)^2 per component, epochs, seconds).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tr, va, te = split_frames(data.segment, test_segments, validation_fraction)
    if len(tr) == 0 or len(va) == 0:
        raise InputError("training needs frames for training and validation after the time-block split")
    terms = bead_terms(mapping)
    prior = fit_prior(data.positions[tr], terms, temperature)
    model = CGForceField(mapping.n_beads, terms, prior, hidden=hidden)
    with torch.no_grad():
        feats = _features(model, torch.as_tensor(data.positions[tr]))
        model.feature_mean.copy_(feats.mean(0))
        model.feature_std.copy_(feats.std(0) + 1e-8)
    x_tr, f_tr = data.positions[tr], data.forces[tr]
    x_va, f_va = data.positions[va], data.forces[va]
    report: dict[str, Any] = {
        "frames": {"train": int(len(tr)), "validation": int(len(va)), "test": int(len(te))},
        "force_variance": float(f_va.var()),
        "prior_only": {"train_mse": force_error(model, x_tr, f_tr), "validation_mse": force_error(model, x_va, f_va)},
    }
    log(f"prior only: validation force MSE {report['prior_only']['validation_mse']:.1f}")
    optimiser = torch.optim.Adam(model.net.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.5, patience=2)
    best = (math.inf, None, -1)
    history = []
    start = time.perf_counter()
    xt = torch.as_tensor(x_tr)
    ft = torch.as_tensor(f_tr)
    for epoch in range(epochs):
        order = torch.as_tensor(rng.permutation(len(tr)))
        running = 0.0
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            xb = xt[idx].clone().requires_grad_(True)
            e = model.energies(xb).sum()
            (g,) = torch.autograd.grad(e, xb, create_graph=True)
            loss = ((-g - ft[idx]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            running += float(loss.detach()) * len(idx)
        val = force_error(model, x_va, f_va)
        scheduler.step(val)
        history.append({"epoch": epoch, "train_mse": running / len(tr), "validation_mse": val})
        log(f"epoch {epoch}: train {running / len(tr):.1f} validation {val:.1f}")
        if val < best[0]:
            best = (val, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
        elif epoch - best[2] >= patience:
            break
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            log("time limit reached")
            break
    model.load_state_dict(best[1])
    report.update(
        {
            "best_epoch": best[2],
            "epochs_run": len(history),
            "history": history,
            "train_seconds": time.perf_counter() - start,
            "validation_mse": force_error(model, x_va, f_va),
            "test_mse": force_error(model, data.positions[te], data.forces[te]) if len(te) else None,
            "prior_only_test_mse": None,
        }
    )
    if len(te):
        report["prior_only_test_mse"] = force_error(
            CGForceField(mapping.n_beads, terms, prior, hidden=hidden), data.positions[te], data.forces[te]
        )
    return model, report


# ---------------------------------------------------------------------- export / load


def save_model(model: CGForceField, path: str | os.PathLike, mapping: Mapping, provenance: dict[str, Any]) -> Path:
    """Script the model and save it with ``cgforce.json`` metadata (mapping fingerprint and scheme, provenance)."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "mapping_fingerprint": mapping.fingerprint,
        "mapping_scheme": mapping.scheme,
        "n_beads": mapping.n_beads,
        "bead_names": [b.name for b in mapping.beads],
        "bead_masses": [float(m) for m in mapping.bead_masses],
        "units": {"positions": "nm", "energy": "kJ/mol"},
        "signature": "forward(positions[k * n_beads, 3]) -> energy (k non-interacting copies)",
        "force_map": "aggregated (sum of forces on the atoms each bead owns, Mapping.atom_owner)",
        "provenance": provenance,
    }
    return _save_module(torch.jit.script(model.eval()), path, meta)


def _save_module(module: torch.jit.ScriptModule, path: str | os.PathLike, meta: dict) -> Path:
    """Save a scripted model with its ``cgforce.json``, atomically (a crash leaves no half file)."""
    path = Path(path)
    with io.atomic_output(path) as temporary:
        torch.jit.save(module, str(temporary), _extra_files={"cgforce.json": json.dumps(meta, indent=1, default=float)})
    return path


def load_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``cgforce.json`` metadata of a saved model."""
    extra = {"cgforce.json": ""}
    try:
        torch.jit.load(str(path), _extra_files=extra)
    except Exception as exc:  # torch raises RuntimeError/ValueError for a bad file
        raise InputError(f"{path}: not a TorchScript CG force field: {exc}") from exc
    if not extra["cgforce.json"]:
        raise InputError(f"{path}: no cgforce.json metadata; not saved by openmmbackmap.cgforce.save_model")
    meta = json.loads(extra["cgforce.json"])
    if meta.get("format") != FORMAT:
        raise InputError(f"{path}: metadata format {meta.get('format')!r} is not {FORMAT!r}")
    return meta


def bundled_model(name: str = "ala2_backbone_cgff.pt") -> Path:
    """Path of a CG force field shipped in ``openmmbackmap/data/models``."""
    return Path(__file__).resolve().parent / "data" / "models" / name


def create_cg_system(
    mapping: Mapping,
    model_path: str | os.PathLike,
    extra_forces: Sequence[openmm.Force] = (),
    copies: int = 1,
) -> openmm.System:
    """OpenMM System of the CG molecule: one particle per bead with :attr:`Mapping.bead_masses`, the TorchForce.

    Parameters
    ----------
    mapping
        The mapping the model was trained for (its fingerprint must match the model's metadata).
    model_path
        A model saved by :func:`save_model`.
    extra_forces
        Further forces added to the system (e.g. restraints); they must fit ``copies * n_beads`` particles.
    copies
        Independent, non-interacting copies of the molecule in one system (particle ``c * n_beads + b``
        is bead ``b`` of copy ``c``): parallel sampling in one Context, which amortises TorchForce's
        per-step overhead.
    """
    import openmmtorch

    meta = load_metadata(model_path)
    if meta["mapping_fingerprint"] != mapping.fingerprint:
        raise InputError(
            f"{model_path}: trained for mapping {meta['mapping_fingerprint'][:12]} ({meta.get('mapping_scheme')}); "
            f"this mapping is {mapping.fingerprint[:12]} ({mapping.scheme})"
        )
    system = openmm.System()
    for _ in range(copies):
        for mass in mapping.bead_masses:
            system.addParticle(float(mass))
    system.addForce(openmmtorch.TorchForce(str(model_path)))
    for force in extra_forces:
        system.addForce(force)
    return system


# ---------------------------------------------------------------------- checked simulation


def _bead_label(mapping: Mapping | None, particle: int) -> str:
    if mapping is None:
        return f"particle {particle}"
    copy, b = divmod(particle, mapping.n_beads)
    bead = mapping.beads[b]
    residue = list(mapping.topology.residues())[bead.residue_index]
    where = f" of copy {copy}" if particle >= mapping.n_beads else ""
    return f"bead {b} ({bead.name}, {residue.name} {residue.id}){where}"


def run_checked(
    simulation: app.Simulation,
    n_steps: int,
    *,
    chunk: int = 500,
    max_displacement: float = 2.0,
    max_bond_length: float = 0.5,
    mapping: Mapping | None = None,
    callback=None,
) -> int:
    """Run ``n_steps`` in chunks, checking positions after each chunk.

    After every ``chunk`` steps the positions must be finite, no particle may move more
    than ``max_displacement`` nm during the chunk and (with ``mapping``) no bonded bead pair,
    in any copy, may be further apart than ``max_bond_length`` nm; ``callback(step, positions_nm)``
    is called with the checked positions.

    Raises
    ------
    CGSimulationError
        Naming the step (the end of the first bad chunk, or the step OpenMM failed at) and the
        bead (first non-finite, or the one that moved furthest).
    """
    previous = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    done = 0
    while done < n_steps:
        steps = min(chunk, n_steps - done)
        start_step = simulation.currentStep
        try:
            simulation.step(steps)
        except openmm.OpenMMException as exc:
            positions = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)._value
            bad = np.flatnonzero(~np.isfinite(np.asarray(positions)).all(-1))
            who = _bead_label(mapping, int(bad[0])) if len(bad) else "unknown bead"
            raise CGSimulationError(
                f"CG simulation failed between steps {start_step} and {start_step + steps}: {who} "
                f"is not finite (OpenMM: {exc})"
            ) from None
        positions = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        positions = np.asarray(positions)
        finite = np.isfinite(positions).all(-1)
        if not finite.all():
            who = _bead_label(mapping, int(np.flatnonzero(~finite)[0]))
            raise CGSimulationError(f"CG simulation blew up by step {simulation.currentStep}: {who} is not finite")
        moved = np.linalg.norm(positions - previous, axis=-1)
        if moved.max() > max_displacement:
            worst = int(moved.argmax())
            raise CGSimulationError(
                f"CG simulation blew up by step {simulation.currentStep}: {_bead_label(mapping, worst)} moved "
                f"{moved.max():.2f} nm in {steps} steps (limit {max_displacement} nm)"
            )
        if mapping is not None and len(mapping.bead_bonds):
            n = mapping.n_beads
            x = positions.reshape(-1, n, 3)
            bonds = mapping.bead_bonds
            lengths = np.linalg.norm(x[:, bonds[:, 1]] - x[:, bonds[:, 0]], axis=-1)
            if lengths.max() > max_bond_length:
                copy, k = np.unravel_index(int(lengths.argmax()), lengths.shape)
                i, j = (int(copy) * n + int(b) for b in bonds[k])
                raise CGSimulationError(
                    f"CG simulation blew up by step {simulation.currentStep}: the bond between "
                    f"{_bead_label(mapping, i)} and {_bead_label(mapping, j)} is {lengths.max():.2f} nm "
                    f"(limit {max_bond_length} nm)"
                )
        previous = positions
        done += steps
        if callback is not None:
            callback(simulation.currentStep, positions)
    return done


# ---------------------------------------------------------------------- torsion refinement


def simulate_copies(
    mapping: Mapping,
    model_path: str | os.PathLike,
    start: np.ndarray,
    *,
    copies: int,
    production_ps: float,
    equilibration_ps: float = 20.0,
    timestep_fs: float = 2.0,
    temperature: float = 300.0,
    friction: float = 1.0,
    platform: str = "CPU",
    seed: int = 1,
) -> np.ndarray:
    """Run ``copies`` non-interacting copies (LangevinMiddle) and return frames every ps, (frames * copies, beads, 3) nm.

    ``start`` is one bead configuration (beads, 3) or one per copy (copies, beads, 3).
    Raises :class:`CGSimulationError` if the simulation becomes unstable.
    """
    n = mapping.n_beads
    start = np.broadcast_to(np.asarray(start, dtype=np.float64), (copies, n, 3))
    system = create_cg_system(mapping, model_path, copies=copies)
    dt = timestep_fs / 1000.0
    integrator = openmm.LangevinMiddleIntegrator(temperature, friction, dt)
    integrator.setRandomNumberSeed(seed)
    simulation = app.Simulation(mapping.cg_topology, system, integrator, plugins.platform(platform))
    simulation.context.setPositions((start + np.arange(copies)[:, None, None] * np.array([2.0, 0, 0])).reshape(-1, 3))
    simulation.context.setVelocitiesToTemperature(temperature, seed)
    per_ps = int(round(1.0 / dt))
    run_checked(simulation, int(round(equilibration_ps * per_ps)), chunk=per_ps, mapping=mapping)
    frames: list[np.ndarray] = []
    run_checked(
        simulation, int(round(production_ps * per_ps)), chunk=per_ps, mapping=mapping,
        callback=lambda step, x: frames.append(x.reshape(copies, n, 3).copy()),
    )
    return np.concatenate(frames) if frames else np.zeros((0, n, 3))


def _fourier_fit(angles: np.ndarray, values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    basis = np.concatenate(
        [np.ones((len(angles), 1))] + [np.stack([np.cos(k * angles), np.sin(k * angles)], 1) for k in (1, 2, 3)], axis=1
    )
    w = np.sqrt(weights)[:, None]
    coef, *_ = np.linalg.lstsq(basis * w, values * w[:, 0], rcond=None)
    return coef[1::2], coef[2::2]


def refine_torsions(
    model_path: str | os.PathLike,
    mapping: Mapping,
    reference_positions: np.ndarray,
    out_path: str | os.PathLike,
    *,
    iterations: int = 3,
    copies: int = 100,
    production_ps: float = 50.0,
    equilibration_ps: float = 20.0,
    temperature: float = 300.0,
    damping: float = 1.0,
    seed: int = 1,
    command: str | None = None,
    log=print,
) -> dict[str, Any]:
    """Iterative Boltzmann inversion of the dihedral series, on top of a force-matched model.

    Force matching fits gradients; the free-energy difference between torsional basins is the
    integral of the mean force across the sparsely sampled barrier, which it determines
    poorly (here: alpha_R 15 % instead of 42 %). Each iteration simulates the current model
    from ``start`` (the first reference configuration), histograms every bead dihedral
    (10 degree bins, one pseudo-count each) and adds ``damping * kT ln(p_CG / p_ref)``, projected
    on the prior's cosine series (orders 1-3, weighted by the two histograms plus a uniform
    floor), to the prior's dihedral coefficients. The network is not changed. Writes
    ``out_path`` with the refinement history in its metadata.
    """
    kt = KB * temperature
    terms = bead_terms(mapping)
    ref_dih = geometry.dihedrals(np.asarray(reference_positions), terms["dihedrals"])
    edges = np.linspace(-np.pi, np.pi, 37)
    centres = 0.5 * (edges[1:] + edges[:-1])
    module = torch.jit.load(str(model_path))
    meta = load_metadata(model_path)
    history = []
    current = Path(model_path)
    out_path = Path(out_path)
    for it in range(iterations + 1):
        frames = simulate_copies(
            mapping, current, reference_positions[0], copies=copies, production_ps=production_ps,
            equilibration_ps=equilibration_ps, temperature=temperature, seed=seed + it,
        )
        cg_dih = geometry.dihedrals(frames, terms["dihedrals"])
        from openmmbackmap.bench.distributions import DIHEDRAL_BINS, basin_index, jensen_shannon

        jsd = [jensen_shannon(np.degrees(cg_dih[:, d]), np.degrees(ref_dih[:, d]), DIHEDRAL_BINS) for d in range(ref_dih.shape[1])]
        entry = {"iteration": it, "dihedral_jsd": jsd}
        if ref_dih.shape[1] == 2:
            b = basin_index(np.degrees(cg_dih[:, 0]), np.degrees(cg_dih[:, 1]))
            entry["basins"] = [float(np.mean(b == k)) for k in range(3)]
        history.append(entry)
        log(f"refinement iteration {it}: {entry}")
        if it == iterations:
            break
        with torch.no_grad():
            for d in range(ref_dih.shape[1]):
                p_cg, _ = np.histogram(cg_dih[:, d], edges)
                p_ref, _ = np.histogram(ref_dih[:, d], edges)
                # every bin, one pseudo-count each (as fit_prior): a correction fitted on the few
                # bins a narrow distribution visits dives without bound in the others
                q_cg = (p_cg + 1.0) / (p_cg.sum() + len(p_cg))
                q_ref = (p_ref + 1.0) / (p_ref.sum() + len(p_ref))
                delta = kt * np.log(q_cg / q_ref)
                c, s_ = _fourier_fit(centres, delta, q_cg + q_ref + 1.0 / len(centres))
                module.dih_cos[d] += torch.as_tensor(damping * c, dtype=module.dih_cos.dtype)
                module.dih_sin[d] += torch.as_tensor(damping * s_, dtype=module.dih_sin.dtype)
        meta["provenance"]["torsion_refinement"] = {
            "method": "iterative Boltzmann inversion of the dihedral cosine series (network unchanged)",
            "copies": copies, "production_ps_per_copy": production_ps, "equilibration_ps": equilibration_ps,
            "damping": damping, "seed": seed, "history": history, "command": command,
        }
        _save_module(module, out_path, meta)
        current = out_path
    meta["provenance"]["torsion_refinement"]["history"] = history
    _save_module(module, out_path, meta)
    return {"history": history}


# ---------------------------------------------------------------------- command line


def configure_parser(parser) -> None:
    """The ``train`` and ``refine`` commands, shared by ``backmap cgforce`` and ``python -m openmmbackmap.cgforce``."""
    sub = parser.add_subparsers(dest="cgforce_command", required=True, metavar="{train,refine}")
    t = sub.add_parser("train", help="force-match a CG force field and save it as TorchScript")
    t.add_argument("--data", nargs="+", required=True, help="segment prefixes: <prefix>.pdb and either <prefix>.positions.npy/.forces.npy or <prefix>.<scheme>.cg.npz")
    t.add_argument("--scheme", default="backbone")
    t.add_argument("--test-segments", type=int, nargs="*", default=[], help="indices of --data held out for test")
    t.add_argument("--hidden", type=int, default=32)
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--patience", type=int, default=5)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--temperature", type=float, default=300.0)
    t.add_argument("--max-seconds", type=float, default=None)
    t.add_argument("--stride", type=int, default=1, help="use every stride-th frame")
    t.add_argument("--out", required=True)
    r = sub.add_parser("refine", help="iterative Boltzmann inversion of the dihedral terms of a trained model")
    r.add_argument("--model", required=True)
    r.add_argument("--data", nargs="+", required=True, help="reference segment prefixes (.pdb and positions.npy or <scheme>.cg.npz)")
    r.add_argument("--scheme", default="backbone")
    r.add_argument("--iterations", type=int, default=3)
    r.add_argument("--copies", type=int, default=100)
    r.add_argument("--production-ps", type=float, default=50.0)
    r.add_argument("--equilibration-ps", type=float, default=20.0)
    r.add_argument("--damping", type=float, default=1.0)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--out", required=True)


def _main(argv: Sequence[str] | None = None) -> None:
    """``python -m openmmbackmap.cgforce train --data PREFIX... --out MODEL.pt``: the same as ``backmap cgforce``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m openmmbackmap.cgforce")
    configure_parser(parser)
    args = parser.parse_args(argv)
    run(args, "python -m openmmbackmap.cgforce " + " ".join(sys.argv[1:] if argv is None else argv))


def run(args, command: str) -> int:
    """Train or refine as the parsed options say; ``command`` goes into the model's provenance."""
    torch.set_num_threads(1)
    if args.cgforce_command == "refine":
        topology, _ = io.load_topology(args.data[0] + ".pdb")
        mapping = Mapping.from_scheme(topology, args.scheme)
        reference = np.concatenate([load_mapped_positions(p, mapping) for p in args.data])
        result = refine_torsions(
            args.model, mapping, reference, args.out, iterations=args.iterations, copies=args.copies,
            production_ps=args.production_ps, equilibration_ps=args.equilibration_ps, damping=args.damping,
            seed=args.seed, command=command,
        )
        print(json.dumps(result, indent=1))
        return 0
    topology, _ = io.load_topology(args.data[0] + ".pdb")
    mapping = Mapping.from_scheme(topology, args.scheme)
    data = load_force_data(args.data, mapping, args.temperature)
    if args.stride > 1:
        data = ForceData(data.positions[:: args.stride], data.forces[:: args.stride], data.segment[:: args.stride],
                         data.sources, data.virial_temperature)
    model, report = train(
        data, mapping, test_segments=args.test_segments, hidden=args.hidden, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.lr, patience=args.patience, seed=args.seed,
        temperature=args.temperature, max_seconds=args.max_seconds,
    )
    provenance = {
        "command": command,
        "data": [os.path.relpath(p) for p in data.sources],
        "virial_temperature_K": data.virial_temperature,
        "torch": torch.__version__,
        "openmm": openmm.__version__,
        "seed": args.seed,
        "split": "time blocks: test = whole segments " + str(args.test_segments)
        + "; validation = last 20% of each other segment",
        "training": {k: v for k, v in report.items() if k != "history"},
        "validation_force_rmse_kj_mol_nm": math.sqrt(report["validation_mse"]),
        "test_force_rmse_kj_mol_nm": None if report["test_mse"] is None else math.sqrt(report["test_mse"]),
    }
    save_model(model, args.out, mapping, provenance)
    print(json.dumps(provenance, indent=1, default=float))
    return 0


if __name__ == "__main__":
    _main()
