"""The pinned environment works: openmmtorch imports and a TorchForce gives energies on the CPU."""

import numpy as np
import pytest
import openmmbackmap  # noqa: F401  (loads the openmm-torch kernels, see plugins.py)
import openmm
import openmm.unit as unit
import torch


class _HarmonicWell(torch.nn.Module):
    """E = k * sum |x|^2 (kJ/mol, nm): a potential whose energy and forces we know."""

    def __init__(self, k: float):
        super().__init__()
        self.k = k

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.k * torch.sum(positions**2)


def test_pinned_versions():
    assert torch.__version__.startswith("2.9.1")
    assert openmm.version.short_version == "8.6.1"


def test_torchforce_energy_and_forces_on_cpu_platform(tmp_path):
    import openmmtorch

    path = tmp_path / "well.pt"
    torch.jit.script(_HarmonicWell(3.0)).save(str(path))
    system = openmm.System()
    n = 5
    for _ in range(n):
        system.addParticle(12.0)
    system.addForce(openmmtorch.TorchForce(str(path)))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    rng = np.random.default_rng(7)
    positions = rng.normal(size=(n, 3))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    assert energy == pytest.approx(3.0 * np.sum(positions**2), rel=1e-5)
    np.testing.assert_allclose(forces, -6.0 * positions, rtol=1e-5)


def test_torchforce_works_when_openmm_was_imported_before_torch(tmp_path):
    """A user script importing openmm first still gets TorchForce kernels once openmmbackmap is imported."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import openmm
        import openmmbackmap
        import torch, openmmtorch

        class Well(torch.nn.Module):
            def forward(self, positions):
                return torch.sum(positions ** 2)

        torch.jit.script(Well()).save({str(tmp_path / "well.pt")!r})
        system = openmm.System()
        for _ in range(2):
            system.addParticle(1.0)
        system.addForce(openmmtorch.TorchForce({str(tmp_path / "well.pt")!r}))
        for name in ("Reference", "CPU"):
            context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(name))
            context.setPositions([[1, 0, 0], [0, 2, 0]])
            print(name, context.getState(getEnergy=True).getPotentialEnergy()._value)
        """
    )
    script_path = tmp_path / "user_script.py"  # a file: torch.jit.script reads the class's source
    script_path.write_text(script)
    result = subprocess.run([sys.executable, str(script_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    energies = dict(line.split() for line in result.stdout.split("\n") if line)
    assert float(energies["Reference"]) == pytest.approx(5.0)
    assert float(energies["CPU"]) == pytest.approx(5.0)
