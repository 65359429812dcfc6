"""torch_geometry agrees with the numpy/mdtraj kernels of openmmbackmap.geometry and scripts."""

import numpy as np
import torch

from openmmbackmap import geometry, torch_geometry


def test_angles_and_dihedrals_match_mdtraj_and_script():
    rng = np.random.default_rng(3)
    xyz = rng.normal(scale=0.3, size=(50, 4, 3))
    expected_angle = geometry.angles(xyz, [[0, 1, 2]])[:, 0]
    expected_dihedral = geometry.dihedrals(xyz, [[0, 1, 2, 3]])[:, 0]
    x = torch.tensor(xyz, dtype=torch.float64, requires_grad=True)
    scripted = torch.jit.script(torch_geometry.dihedral)
    angle = torch_geometry.angle(x[:, 0], x[:, 1], x[:, 2])
    dihedral = scripted(x[:, 0], x[:, 1], x[:, 2], x[:, 3])
    np.testing.assert_allclose(angle.detach().numpy(), expected_angle, atol=1e-5)  # mdtraj works in float32
    np.testing.assert_allclose(dihedral.detach().numpy(), expected_dihedral, atol=1e-5)
    # differentiable: the gradient of the dihedral is finite and orthogonal to a rigid translation
    (grad,) = torch.autograd.grad(dihedral.sum(), x)
    assert torch.isfinite(grad).all()
    np.testing.assert_allclose(grad.sum(1).numpy(), 0.0, atol=1e-9)
    # a mirror image flips the sign of every dihedral
    mirrored = torch_geometry.dihedral(*(x[:, k] * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64) for k in range(4)))
    np.testing.assert_allclose(mirrored.detach().numpy(), -dihedral.detach().numpy(), atol=1e-9)
