"""Geometry on batches of frames: optimal superposition (Kabsch), RMSD, internal coordinates.

Arrays are (frames, atoms, 3) in nm, as everywhere in the package. Internal coordinates
(distances, angles, dihedrals) are mdtraj's compiled kernels applied to plain numpy arrays, so
numbers agree with what users compute with mdtraj.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> reference = rng.normal(size=(1, 10, 3))
>>> rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
>>> moved = reference @ rotation.T + 3.0
>>> float(np.round(aligned_rmsd(moved, reference)[0], 6))
0.0
"""

from __future__ import annotations

import mdtraj
import numpy as np


def kabsch(mobile: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rotations and translations that best superpose ``mobile`` onto ``target``, frame by frame.

    Parameters
    ----------
    mobile, target
        Coordinates, shape (frames, atoms, 3); ``target`` may have one frame, which is then
        used for every frame of ``mobile``.
    weights
        Per-atom weights (atoms,), default equal.

    Returns
    -------
    rotation
        (frames, 3, 3) proper rotations (determinant +1: a mirror image is never "fitted").
    translation
        (frames, 3), such that ``mobile @ rotation.transpose(0, 2, 1) + translation[:, None]``
        is the superposed structure.
    """
    mobile = np.asarray(mobile, dtype=np.float64)
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), mobile.shape)
    w = np.ones(mobile.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mobile_centre = np.einsum("a,fai->fi", w, mobile)
    target_centre = np.einsum("a,fai->fi", w, target)
    covariance = np.einsum("a,fai,faj->fij", w, mobile - mobile_centre[:, None], target - target_centre[:, None])
    u, _, vt = np.linalg.svd(covariance)
    # Flip the smallest singular direction where needed so that the result is a rotation.
    sign = np.sign(np.linalg.det(np.einsum("fij,fjk->fik", u, vt)))
    sign[sign == 0] = 1.0
    u[:, :, -1] *= sign[:, None]
    rotation = np.einsum("fij,fjk->fki", u, vt)
    translation = target_centre - np.einsum("fij,fj->fi", rotation, mobile_centre)
    return rotation, translation


def superpose(mobile: np.ndarray, target: np.ndarray, atom_indices: np.ndarray | None = None) -> np.ndarray:
    """``mobile`` moved onto ``target`` by the Kabsch fit of ``atom_indices`` (default: all atoms)."""
    mobile = np.asarray(mobile, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    select = slice(None) if atom_indices is None else np.asarray(atom_indices)
    rotation, translation = kabsch(mobile[:, select], target[:, select])
    return np.einsum("fij,faj->fai", rotation, mobile) + translation[:, None]


def aligned_rmsd(
    mobile: np.ndarray,
    target: np.ndarray,
    fit_indices: np.ndarray | None = None,
    rmsd_indices: np.ndarray | None = None,
) -> np.ndarray:
    """Per-frame RMSD after a Kabsch fit, in nm.

    Parameters
    ----------
    mobile, target
        (frames, atoms, 3); ``target`` may have a single frame.
    fit_indices
        Atoms used for the fit (default all).
    rmsd_indices
        Atoms the RMSD is measured on (default ``fit_indices``): fitting on the backbone and
        measuring side chains, for example.
    """
    mobile = np.asarray(mobile, dtype=np.float64)
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), mobile.shape)
    fitted = superpose(mobile, target, fit_indices)
    select = fit_indices if rmsd_indices is None else rmsd_indices
    select = slice(None) if select is None else np.asarray(select)
    return np.sqrt(((fitted[:, select] - target[:, select]) ** 2).sum(-1).mean(-1))


def _trajectory(xyz: np.ndarray) -> mdtraj.Trajectory:
    # mdtraj's compiled kernels need a Trajectory; one without topology costs nothing to build
    return mdtraj.Trajectory(np.asarray(xyz, dtype=np.float32), None)


def distances(xyz: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Distances (frames, pairs) in nm between atom pairs (pairs, 2); mdtraj's kernel, float32."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return mdtraj.compute_distances(_trajectory(xyz), pairs, periodic=False)


def angles(xyz: np.ndarray, triplets: np.ndarray) -> np.ndarray:
    """Angles (frames, triplets) in radians at the middle atom of each triplet (triplets, 3); mdtraj, float32."""
    triplets = np.asarray(triplets, dtype=np.int64).reshape(-1, 3)
    return mdtraj.compute_angles(_trajectory(xyz), triplets, periodic=False)


def dihedrals(xyz: np.ndarray, quadruplets: np.ndarray) -> np.ndarray:
    """Dihedral angles (frames, quadruplets) in radians, in [-pi, pi]; mdtraj's kernel and convention, float32."""
    quadruplets = np.asarray(quadruplets, dtype=np.int64).reshape(-1, 4)
    return mdtraj.compute_dihedrals(_trajectory(xyz), quadruplets, periodic=False)


def signed_volumes(xyz: np.ndarray, quadruplets: np.ndarray) -> np.ndarray:
    """Signed volume (frames, quadruplets) of each centre and three neighbours: its chirality.

    For a quadruplet (centre, a, b, c) the value is ``(a - centre) . ((b - centre) x (c - centre))``;
    a mirror image flips its sign.
    """
    quadruplets = np.asarray(quadruplets, dtype=np.int64).reshape(-1, 4)
    centre = xyz[:, quadruplets[:, 0]]
    a, b, c = (xyz[:, quadruplets[:, k]] - centre for k in (1, 2, 3))
    return (a * np.cross(b, c)).sum(-1)
