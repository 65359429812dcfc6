"""Bond angles and dihedrals in torch: differentiable, TorchScript-compatible, one definition.

The numpy side of the package uses :mod:`openmmbackmap.geometry` (mdtraj's kernels); models
that run inside TorchScript (backmappers, CG force fields, force-field priors) use these, with
the same conventions: radians, dihedrals with the IUPAC sign that OpenMM and mdtraj use, in
(-pi, pi]. Points are tensors whose last axis is x, y, z; any leading shape broadcasts.

>>> import torch
>>> p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
>>> round(float(angle(p[0], p[1], p[2])), 6), round(float(dihedral(p[0], p[1], p[2], p[3])), 6)
(1.570796, -1.570796)
"""

from __future__ import annotations

import torch

__all__ = ["angle", "dihedral"]


def angle(p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """Angle p0-p1-p2 at p1, radians in [0, pi] (atan2 form: accurate near 0 and pi, unlike acos)."""
    v1, v2 = p0 - p1, p2 - p1
    return torch.atan2(torch.linalg.vector_norm(torch.linalg.cross(v1, v2), dim=-1), (v1 * v2).sum(-1))


def dihedral(p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, p3: torch.Tensor) -> torch.Tensor:
    """Dihedral p0-p1-p2-p3, radians in (-pi, pi], IUPAC sign (OpenMM's and mdtraj's convention)."""
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1 = torch.linalg.cross(b1, b2)
    n2 = torch.linalg.cross(b2, b3)
    x = (n1 * n2).sum(-1)
    y = (torch.linalg.cross(n1, n2) * b2).sum(-1) / torch.linalg.vector_norm(b2, dim=-1).clamp_min(1e-12)
    return torch.atan2(y, x)
