"""Tests of openmmbackmap.data: real short OpenMM simulations on the bundled alanine dipeptide."""

from __future__ import annotations

import json
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

import openmmbackmap
from openmmbackmap.data import run_reference_simulation
from openmmbackmap.errors import InputError

ALA2_PDB = Path(openmmbackmap.__file__).parent / "data" / "alanine_dipeptide" / "ala2.pdb"


def _run(prefix: Path, **kwargs) -> dict:
    return run_reference_simulation(
        ALA2_PDB, prefix, n_steps=200, report_interval=50, seed=7, **kwargs
    )


def test_short_run_outputs_and_reproducibility(tmp_path: Path) -> None:
    prov = _run(tmp_path / "a", save_positions=True)
    _run(tmp_path / "b")

    traj_a = md.load(str(tmp_path / "a.xtc"), top=str(tmp_path / "a.pdb"))
    traj_b = md.load(str(tmp_path / "b.xtc"), top=str(tmp_path / "b.pdb"))
    assert traj_a.n_frames == 4 and traj_a.n_atoms == 22
    assert np.all(np.isfinite(traj_a.xyz))
    np.testing.assert_array_equal(traj_a.xyz, traj_b.xyz)  # same seed, same trajectory

    forces = np.load(tmp_path / "a.forces.npy")
    assert forces.shape == (4, 22, 3) and forces.dtype == np.float32
    assert np.all(np.isfinite(forces)) and np.abs(forces).max() > 0
    np.testing.assert_array_equal(forces, np.load(tmp_path / "b.forces.npy"))

    positions = np.load(tmp_path / "a.positions.npy")
    assert positions.shape == (4, 22, 3)
    np.testing.assert_allclose(positions, traj_a.xyz, atol=6e-4)  # XTC rounds to 0.001 nm

    on_disk = json.loads((tmp_path / "a.json").read_text())
    assert on_disk == prov
    assert prov["n_frames"] == 4 and prov["seed"] == 7 and prov["platform"] == "Reference"
    assert prov["ns_per_day"] > 0
    assert not list(tmp_path.glob(".*.part"))  # no temporary files left behind


def test_other_seed_gives_other_trajectory(tmp_path: Path) -> None:
    run_reference_simulation(ALA2_PDB, tmp_path / "a", n_steps=50, report_interval=50, seed=1)
    run_reference_simulation(ALA2_PDB, tmp_path / "b", n_steps=50, report_interval=50, seed=2)
    a = np.load(tmp_path / "a.forces.npy")
    b = np.load(tmp_path / "b.forces.npy")
    assert not np.array_equal(a, b)


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_structure.pdb"
    with pytest.raises(InputError, match="no_such_structure.pdb"):
        run_reference_simulation(missing, tmp_path / "out", n_steps=10, report_interval=5, seed=1)
    assert not list(tmp_path.iterdir())


def test_missing_template_names_residue(tmp_path: Path) -> None:
    # Heavy atoms only: amber99sbildn has no template for an ACE without hydrogens.
    heavy = tmp_path / "heavy.pdb"
    lines = [
        line for line in ALA2_PDB.read_text().splitlines()
        if not (line.startswith(("ATOM", "HETATM")) and line[76:78].strip() == "H")
        and not line.startswith("CONECT")
    ]
    heavy.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"heavy\.pdb.*ACE"):
        run_reference_simulation(heavy, tmp_path / "out", n_steps=10, report_interval=5, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heavy.pdb"]
