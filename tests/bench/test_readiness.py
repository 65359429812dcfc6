"""MD readiness with real OpenMM (CPU platform, amber99sbildn + OBC) on the bundled alanine dipeptide."""

import math

import numpy as np
import openmm.app as app
import openmm.unit as unit
import pytest

from openmmbackmap import io
from openmmbackmap.bench.readiness import ReadinessChecker, readiness, reference_system
from openmmbackmap.errors import InputError

GOOD = [0, 200, 400, 600, 800]


@pytest.fixture(scope="module")
def checker(ala2):
    topology, _ = ala2
    return ReadinessChecker.from_topology(topology, platform_properties={"Threads": "1"})


def _index(topology, residue, name):
    return next(a.index for a in topology.atoms() if a.residue.name == residue and a.name == name)


def test_reference_frames_are_md_ready(ala2, checker):
    _, xyz = ala2
    result = readiness(xyz[GOOD], checker, n_frames=None, seed=3)
    print(f"\nreadiness on {checker.platform}: {result['seconds_per_frame'] * 1e3:.0f} ms/frame "
          f"(minimisation + {checker.md_steps} MD steps); median E {result['median_energy_kj_mol']:.1f} "
          f"-> {result['median_minimized_energy_kj_mol']:.1f} kJ/mol, heavy RMSD {result['median_heavy_rmsd_nm']:.4f} nm")
    # Energies near the reference's: within the thermal spread of other frames of the same run.
    others = np.array([checker.energy(x) for x in xyz[5::25]])
    energies = np.array(result["energy_kj_mol"])
    assert np.isfinite(energies).all()
    assert np.all(np.abs(energies - others.mean()) < 5 * others.std())
    # Minimisation barely moves heavy atoms and lands in the same basin minimum every time.
    assert max(result["heavy_rmsd_nm"]) < 0.05 and max(result["heavy_max_displacement_nm"]) < 0.05
    # Hydrogens move more: a methyl group can turn by a whole staggered step (~0.1 nm).
    assert max(result["max_displacement_nm"]) < 0.2
    minimized = np.array(result["minimized_energy_kj_mol"])
    assert np.all(minimized < energies) and np.ptp(minimized) < 10.0
    assert result["fraction_stable"] == 1.0 and result["error"] == [None] * len(GOOD)
    assert all(0 < step < 0.05 for step in result["md_max_step_nm"])
    assert result["frame_indices"] == list(range(len(GOOD))) and result["n_frames"] == len(GOOD)


def test_hydrogen_on_a_carbon_of_another_residue(ala2, checker):
    topology, xyz = ala2
    good = checker.check(xyz[0])
    frame = xyz[0].astype(np.float64)
    hydrogen, carbon = _index(topology, "ALA", "H"), _index(topology, "NME", "C")
    frame[hydrogen] = frame[carbon] + [0.03, 0.0, 0.0]
    bad = checker.check(frame)
    assert bad.energy_kj_mol > good.energy_kj_mol + 1e4
    # The minimiser pulls the hydrogen back home: a large displacement, heavy atoms barely move.
    assert bad.minimization_max_displacement_nm > 0.3 > good.minimization_max_displacement_nm
    assert bad.minimization_heavy_rmsd_nm < 0.05
    assert bad.minimized_energy_kj_mol == pytest.approx(good.minimized_energy_kj_mol, abs=5.0)


def test_broken_frames_are_reported_and_the_context_recovers(ala2, checker):
    topology, xyz = ala2
    good = xyz[0].astype(np.float64)
    same_place = good.copy()
    same_place[_index(topology, "ALA", "H")] = same_place[_index(topology, "NME", "C")]
    stretched = good.copy()  # N-CA bond pulled to 1 nm: everything from CA on moves out
    n, ca = _index(topology, "ALA", "N"), _index(topology, "ALA", "CA")
    bond = good[ca] - good[n]
    stretched[ca:] += bond / np.linalg.norm(bond) * (1.0 - np.linalg.norm(bond))
    collapsed = np.zeros_like(good)
    not_a_number = good.copy()
    not_a_number[3] = np.nan
    frames = np.stack([same_place, stretched, collapsed, not_a_number, good])

    result = readiness(frames, checker, n_frames=None)
    energy = result["energy_kj_mol"]
    assert energy[0] == math.inf  # OpenMM's NaN for atoms at one position, reported as inf
    assert energy[1] > 1e4
    assert result["stable"][2:4] == [False, False]
    assert "minimisation failed" in result["error"][2] and "non-finite" in result["error"][3]
    assert result["max_displacement_nm"][2] == math.inf
    assert result["median_energy_kj_mol"] == math.inf  # failures count, they are not dropped
    # The good frame after the broken ones scores as on a fresh Context.
    fresh = ReadinessChecker.from_topology(topology, platform_properties={"Threads": "1"}).check(good)
    assert result["stable"][4] and result["error"][4] is None
    assert result["energy_kj_mol"][4] == pytest.approx(fresh.energy_kj_mol, abs=1e-6)
    assert result["minimized_energy_kj_mol"][4] == pytest.approx(fresh.minimized_energy_kj_mol, abs=1e-3)


def test_md_from_a_barely_minimised_clash_blows_up_without_crashing(ala2):
    topology, xyz = ala2
    checker = ReadinessChecker.from_topology(
        topology, platform_properties={"Threads": "1"}, max_iterations=1, md_steps=100
    )
    good = xyz[0].astype(np.float64)
    squeezed = good.mean(0) + (good - good.mean(0)) * 0.5
    bad = checker.check(squeezed)
    assert not bad.stable and bad.md_max_step_nm > checker.max_step_nm
    assert "moved" in bad.error or "non-finite" in bad.error or "OpenMM" in bad.error
    after = checker.check(good)
    assert after.stable and after.error is None and math.isfinite(after.minimized_energy_kj_mol)


def test_readiness_scores_evenly_spaced_frames(ala2, checker):
    _, xyz = ala2
    result = readiness(xyz[:10], checker, n_frames=3)
    assert result["frame_indices"] == [0, 4, 9] or result["frame_indices"] == [0, 5, 9]
    assert len(result["stable"]) == 3
    with pytest.raises(InputError, match="shape"):
        checker.check(xyz[0, :5])


def test_missing_template_names_the_residue():
    topology, positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    modeller = app.Modeller(topology, positions * unit.nanometer)
    modeller.delete([a for a in modeller.topology.atoms() if a.name == "HA"])  # templates match by graph
    with pytest.raises(InputError, match="no template for residue.*ALA 2"):
        reference_system(modeller.topology)
