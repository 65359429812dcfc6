"""Learned CG force field (openmmbackmap.cgforce): TorchForce agreement, training, systems, stability, bad input."""

import json
import shutil

import numpy as np
import pytest
import torch

import openmmbackmap  # noqa: F401  (loads openmm-torch kernels)
import openmm
import openmm.app as app
import openmm.unit as unit

from openmmbackmap import cgforce, io
from openmmbackmap.errors import InputError
from openmmbackmap.mapping import Mapping

MODEL = cgforce.bundled_model()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Two short real segments (200 ps, 2,000 frames each) with unrounded positions and forces.

    Made here with run_reference_simulation, as the full sets are (examples/make_reference_data.py),
    so that CI trains on real data without shipping it.
    """
    from openmmbackmap.data import run_reference_simulation

    folder = tmp_path_factory.mktemp("ala2_segments")
    for segment in range(2):
        run_reference_simulation(io.bundled("alanine_dipeptide/ala2.pdb"), folder / f"ala2_{segment:03d}",
                                 n_steps=100_000, report_interval=50, seed=10 + segment, save_positions=True)
    return folder


@pytest.fixture(scope="module")
def mapping():
    topology, _ = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    return Mapping.from_scheme(topology, "backbone")


@pytest.fixture(scope="module")
def start(mapping):
    _, positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    return mapping.map(np.asarray(positions, dtype=np.float64))


def _context(system, platform, positions, seed=1, step=0.002):
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1.0 / unit.picosecond, step * unit.picosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    return context


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_torchforce_matches_module_autograd(mapping, start, platform):
    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    copies = 2
    positions = np.concatenate([start + rng.normal(scale=0.005, size=start.shape) + [1.5 * c, 0, 0] for c in range(copies)])
    system = cgforce.create_cg_system(mapping, MODEL, copies=copies)
    state = _context(system, platform, positions).getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)

    module = torch.jit.load(str(MODEL))
    x = torch.tensor(positions, dtype=torch.float64, requires_grad=True)
    e = module(x)
    (gradient,) = torch.autograd.grad(e, x)
    assert energy == pytest.approx(float(e.detach()), rel=1e-5, abs=1e-3)
    np.testing.assert_allclose(forces, -gradient.numpy(), rtol=1e-4, atol=1e-2)
    # the copies do not interact: the energy of two copies is the sum of each
    single = [float(module(torch.tensor(positions[5 * c : 5 * c + 5])).detach()) for c in range(copies)]
    assert float(e.detach()) == pytest.approx(sum(single), rel=1e-9)


def test_model_metadata(mapping):
    meta = cgforce.load_metadata(MODEL)
    assert meta["mapping_fingerprint"] == mapping.fingerprint
    assert meta["mapping_scheme"] == "backbone"
    assert "command" in meta["provenance"] and meta["provenance"]["validation_force_rmse_kj_mol_nm"] > 0
    assert MODEL.stat().st_size < 1_000_000


def test_system_uses_bead_masses(mapping):
    extra = openmm.CMMotionRemover()
    system = cgforce.create_cg_system(mapping, MODEL, extra_forces=[extra])
    masses = [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())]
    np.testing.assert_allclose(masses, mapping.bead_masses)
    assert masses[1] == pytest.approx(14.0067 + 1.00794, abs=0.01)  # N with its H
    assert system.getNumForces() == 2
    assert "TorchForce" in openmm.XmlSerializer.serialize(system)
    assert isinstance(system.getForce(1), openmm.CMMotionRemover)


def test_short_cg_simulation_is_stable(mapping, start):
    torch.set_num_threads(1)
    system = cgforce.create_cg_system(mapping, MODEL)
    integrator = openmm.LangevinMiddleIntegrator(300, 1.0, 0.002)
    integrator.setRandomNumberSeed(5)
    simulation = app.Simulation(mapping.cg_topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(start)
    frames = []
    cgforce.run_checked(simulation, 2000, chunk=200, mapping=mapping, callback=lambda step, x: frames.append(x))
    x = np.array(frames)
    bonds = np.linalg.norm(x[:, mapping.bead_bonds[:, 1]] - x[:, mapping.bead_bonds[:, 0]], axis=-1)
    assert np.isfinite(x).all()
    assert 0.12 < bonds.min() and bonds.max() < 0.17


def test_blow_up_names_step_and_bead(mapping, start):
    kick = openmm.CustomExternalForce("-1e8*x")  # throws bead 2 several nm in one step
    kick.addParticle(2, [])
    system = cgforce.create_cg_system(mapping, MODEL, extra_forces=[kick])
    integrator = openmm.LangevinMiddleIntegrator(300, 1.0, 0.002)
    simulation = app.Simulation(mapping.cg_topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(start)
    with pytest.raises(cgforce.CGSimulationError, match=r"step \d+.*bead 2 \(CA, ALA 2\)"):
        cgforce.run_checked(simulation, 10, chunk=1, mapping=mapping)


def test_model_for_another_mapping_is_rejected(mapping):
    other = Mapping.from_scheme(mapping.topology, "ca")
    with pytest.raises(InputError, match="trained for mapping"):
        cgforce.create_cg_system(other, MODEL)


# ---------------------------------------------------------------------- data and training


def _write_segment(tmp_path, name, positions, forces, units=None):
    prefix = tmp_path / name
    if positions is not None:
        np.save(str(prefix) + ".positions.npy", positions)
    if forces is not None:
        np.save(str(prefix) + ".forces.npy", forces)
    if units is not None:
        (tmp_path / f"{name}.json").write_text('{"units": %s}' % units)
    return prefix


def test_bad_training_data(mapping, tmp_path, reference):
    x = np.load(reference / "ala2_000.positions.npy", mmap_mode="r")[:300]
    f = np.load(reference / "ala2_000.forces.npy", mmap_mode="r")[:300]
    with pytest.raises(InputError, match="no forces"):
        cgforce.load_force_data([_write_segment(tmp_path, "a", x, None)], mapping)
    with pytest.raises(InputError, match="21 atoms but the mapping's topology has 22"):
        cgforce.load_force_data([_write_segment(tmp_path, "b", x[:, :21], f[:, :21])], mapping)
    with pytest.raises(InputError, match="virial temperature.*kJ/mol/nm"):  # kcal/mol/A
        cgforce.load_force_data([_write_segment(tmp_path, "c", x, f / 41.84)], mapping)
    # gradients instead of forces: the sign shows only beyond the estimate's noise (all 2,000 frames)
    x_all = np.load(reference / "ala2_000.positions.npy")
    f_all = np.load(reference / "ala2_000.forces.npy")
    with pytest.raises(InputError, match=r"virial temperature of -\d+ \+- \d+ K"):
        cgforce.load_force_data([_write_segment(tmp_path, "d", x_all, -f_all)], mapping)
    with pytest.raises(InputError, match="units"):
        cgforce.load_force_data([_write_segment(tmp_path, "e", x, f, '{"forces": "kcal/mol/A"}')], mapping)
    assert cgforce.load_force_data([_write_segment(tmp_path, "ok", x, f)], mapping).forces.shape == (300, 5, 3)


def test_mapped_bundle_loads_as_the_full_atom_segment(mapping, reference, tmp_path):
    """The compact form the chignolin data ship in gives the same training data as the full-atom files."""
    full = cgforce.load_force_data([reference / "ala2_000"], mapping)
    written = cgforce.save_mapped_force_data(reference / "ala2_000", mapping)
    bundle = tmp_path / "ala2_000"
    shutil.copy(written, cgforce.mapped_data_path(bundle, mapping))  # no full-atom files beside it
    compact = cgforce.load_force_data([bundle], mapping)
    np.testing.assert_allclose(compact.positions, full.positions, atol=1e-6)
    np.testing.assert_allclose(compact.forces, full.forces, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(cgforce.load_mapped_positions(bundle, mapping), full.positions, atol=1e-6)
    # a bundle mapped with another mapping of the same scheme is refused, not silently used
    with np.load(written) as stored:
        arrays = dict(stored)
    arrays["mapping_fingerprint"] = np.array("0" * 64)
    with open(cgforce.mapped_data_path(bundle, mapping), "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(InputError, match="fingerprint differs"):
        cgforce.load_force_data([bundle], mapping)


def test_short_training_reduces_force_error(mapping, reference):
    torch.set_num_threads(1)
    data = cgforce.load_force_data([reference / "ala2_000", reference / "ala2_001"], mapping)
    model, report = cgforce.train(
        data, mapping, test_segments=[1], epochs=3, hidden=16, batch_size=128, seed=0, log=lambda *_: None
    )
    assert report["frames"] == {"train": 1600, "validation": 400, "test": 2000}
    assert report["validation_mse"] < report["prior_only"]["validation_mse"]
    assert report["test_mse"] < report["prior_only_test_mse"]
    # the prior alone already explains much of the mapped force
    assert report["prior_only"]["validation_mse"] < 0.3 * report["force_variance"]


def test_torsion_refinement_runs_and_keeps_metadata(mapping, tmp_path, reference):
    torch.set_num_threads(1)
    mapped = mapping.map(np.load(reference / "ala2_000.positions.npy")[:2000].astype(np.float64))
    out = tmp_path / "refined.pt"
    result = cgforce.refine_torsions(
        MODEL, mapping, mapped, out, iterations=1, copies=4, production_ps=1, equilibration_ps=0.5, log=lambda *_: None
    )
    assert len(result["history"]) == 2
    meta = cgforce.load_metadata(out)
    assert meta["mapping_fingerprint"] == mapping.fingerprint
    assert len(meta["provenance"]["torsion_refinement"]["history"]) == 2
    before, after = torch.jit.load(str(MODEL)), torch.jit.load(str(out))
    assert not torch.equal(before.dih_cos, after.dih_cos)
    assert torch.equal(before.bond_k, after.bond_k)


def test_bundled_chignolin_reference_loads_for_force_matching():
    """The shipped chignolin segments (compact form) give C-alpha data at each segment's temperature."""
    folder = io.bundled("chignolin/reference")
    prefixes = sorted(p.with_suffix("") for p in folder.glob("cln025_*.json"))
    assert len(prefixes) >= 3
    topology, _ = io.load_topology(prefixes[0].with_suffix(".pdb"))
    mapping = Mapping.from_scheme(topology, "ca")
    for prefix in prefixes:
        provenance = json.loads(prefix.with_suffix(".json").read_text())
        data = cgforce.load_force_data([prefix], mapping, provenance["temperature_K"])
        assert data.positions.shape == data.forces.shape == (provenance["n_frames"], 10, 3)
        # the bundle holds every XTC frame: its beads are the XTC's C-alpha atoms (0.001 nm rounding)
        xtc = io.load_trajectory(prefix.with_suffix(".xtc"), topology)
        np.testing.assert_allclose(mapping.map(xtc.xyz.astype(np.float64)), data.positions, atol=1e-3)
