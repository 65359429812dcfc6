"""The multiscale driver: real CG and atomistic OpenMM Contexts, shipped TorchScript backmappers.

Alanine dipeptide runs its learned CG force field (TorchForce) and the shipped backbone ``ic``
model; chignolin runs an elastic network of its C-alpha beads and the shipped ``ca`` model.
Deterministic comparisons (resume, kill) use the CPU platform with one thread: its Contexts each
have their own random generator, whereas the Reference platform's Contexts share one per process,
so there one Context's Langevin steps change another's noise.
"""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import pytest
import yaml
from test_plugin import PLATFORMS as RESTRAINT_PLATFORMS

from openmmbackmap import io, plugins
from openmmbackmap.cgforce import bundled_model, create_cg_system
from openmmbackmap.cgsystems import elastic_network_system
from openmmbackmap.data import reference_system
from openmmbackmap.errors import InputError
from openmmbackmap.models import load_backmapper
from openmmbackmap.relax import RelaxationSettings, RestrainedRelaxation, flexible_copy
from openmmbackmap.restraints import NativePluginWarning
from openmmbackmap.switch_config import load_config
from openmmbackmap.switching import (
    AtomisticTrajectoryReporter,
    MultiscaleSimulation,
    SwitchError,
    SwitchLogReporter,
)

BACKMAP = str(Path(sys.executable).with_name("backmap"))


@pytest.fixture(scope="module")
def ala2_model():
    return load_backmapper(io.bundled("models/ala2_backbone_ic.pt"))


@pytest.fixture(scope="module")
def ala2_start():
    return io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))[1]


def _ala2(model, start, platform="CPU", seed=1, **options) -> MultiscaleSimulation:
    mapping = model.mapping
    integrator = openmm.LangevinMiddleIntegrator(300, 1, 0.002)
    integrator.setRandomNumberSeed(seed)
    properties = {"Threads": "1"} if platform == "CPU" else {}
    cg = app.Simulation(mapping.cg_topology, create_cg_system(mapping, bundled_model()), integrator,
                        openmm.Platform.getPlatformByName(platform), properties)
    cg.context.setPositions(mapping.map(start))
    cg.context.setVelocitiesToTemperature(300, seed)
    options.setdefault("platform", platform)
    options.setdefault("platform_properties", properties)
    return MultiscaleSimulation(cg, model, reference_positions=start, seed=seed, **options)


# ---------------------------------------------------------------------- relaxation


def test_flexible_copy_turns_constraints_into_bonds(ala2_start):
    topology, _ = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    system = reference_system(topology)
    flexible = flexible_copy(system)
    assert system.getNumConstraints() == 12 and flexible.getNumConstraints() == 0
    bonds = flexible.getForce(flexible.getNumForces() - 1)
    assert isinstance(bonds, openmm.HarmonicBondForce) and bonds.getNumBonds() == 12


def test_relaxation_holds_beads_and_reports_energies_without_the_restraint(ala2_start):
    topology, _ = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    from openmmbackmap.mapping import Mapping

    mapping = Mapping.from_scheme(topology, "residue_com")
    system = reference_system(topology)
    relaxation = RestrainedRelaxation(system, topology, mapping, RelaxationSettings(restraint_k=20000.0),
                                      platform="Reference")
    rng = np.random.default_rng(0)
    noisy = ala2_start + rng.normal(0, 0.02, ala2_start.shape)
    targets = mapping.map(ala2_start)
    result = relaxation.relax(noisy, targets)
    plain = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    plain.setPositions(result.positions)
    assert result.energy_after == pytest.approx(plain.getState(getEnergy=True).getPotentialEnergy()._value, rel=1e-9)
    assert result.energy_after < result.energy_before
    assert result.bead_rmsd < 0.01
    assert np.abs(mapping.map(result.positions) - targets).max() < 0.02
    # constraints hold in the relaxed structure: every X-H bond at its constrained length
    for index in range(system.getNumConstraints()):
        i, j, length = system.getConstraintParameters(index)
        assert np.linalg.norm(result.positions[i] - result.positions[j]) == pytest.approx(length._value, abs=1e-4)
    # moving the targets moves the relaxed centroids: the restraint is live in the reused Context
    shifted = relaxation.relax(result.positions, targets + np.array([0.05, 0.0, 0.0]))
    assert np.abs(mapping.map(shifted.positions) - targets - [0.05, 0, 0]).max() < 0.02


@pytest.mark.skipif("OpenCL" not in RESTRAINT_PLATFORMS, reason="no native OpenCL kernels, driver or device here")
def test_relaxation_on_opencl_uses_the_native_gpu_kernels(ala2_start):
    """A relaxation on a GPU platform picks the native force when its kernels are built (CI: OpenCL
    on pocl, an OpenCL driver for the CPU), and they give the CPU kernels' energy. Not minimised
    here: OpenMM 8.6.1's own minimiser crashes on pocl (a plain chignolin System, no plugin force)."""
    topology, _ = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    from openmmbackmap.mapping import Mapping

    mapping = Mapping.from_scheme(topology, "residue_com")
    system = reference_system(topology)
    noisy = ala2_start + np.random.default_rng(0).normal(0, 0.02, ala2_start.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NativePluginWarning)
        relaxation = RestrainedRelaxation(system, topology, mapping, RelaxationSettings(restraint_k=20000.0),
                                          platform="OpenCL", platform_properties={"Precision": "double"})
    assert isinstance(relaxation.restraint, plugins.native_restraint_force_class())
    relaxation.restraint.setTargets(mapping.map(ala2_start))
    energies = []
    for name, properties in (("OpenCL", {"Precision": "double"}), ("CPU", {})):
        restrained = openmm.System()
        for index in range(system.getNumParticles()):
            restrained.addParticle(system.getParticleMass(index))
        restrained.addForce(openmm.XmlSerializer.clone(relaxation.restraint))
        context = openmm.Context(restrained, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(name), properties)
        context.setPositions(noisy)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy()._value)
    assert energies[0] > 1.0 and energies[0] == pytest.approx(energies[1], rel=1e-9)


def test_chirality_hold_restores_an_inverted_centre(ala2_start):
    """Planted defect: the mirror image (ALA 2's C-alpha inverted, every bond length and angle intact)
    while the hold remembers the original handedness; minimising with the hold inverts it back, without
    it the D-alanine stays: the minimiser alone never repairs chirality."""
    topology, _ = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    from openmmbackmap.bench.structure import TopologyFeatures
    from openmmbackmap.geometry import signed_volumes
    from openmmbackmap.relax import chirality_hold_force

    features = TopologyFeatures.from_topology(topology)
    centres = features.chiral_centres
    assert len(centres) == 1
    native_sign = np.sign(signed_volumes(ala2_start[None], centres))[0]
    force = chirality_hold_force(centres)
    force.setBondParameters(0, [int(i) for i in centres[0]], [float(native_sign[0])])
    inverted = ala2_start * np.array([-1.0, 1.0, 1.0])
    assert np.sign(signed_volumes(inverted[None], centres))[0, 0] == -native_sign[0]

    def minimised(with_hold: bool) -> np.ndarray:
        system = flexible_copy(reference_system(topology))
        if with_hold:
            system.addForce(copy.deepcopy(force))
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(inverted)
        if with_hold:
            assert context.getState(getEnergy=True).getPotentialEnergy()._value > 0
        openmm.LocalEnergyMinimizer.minimize(context, 1.0, 2000)
        return context.getState(getPositions=True).getPositions(asNumpy=True)._value

    assert np.sign(signed_volumes(minimised(True)[None], centres))[0, 0] == native_sign[0]
    assert np.sign(signed_volumes(minimised(False)[None], centres))[0, 0] == -native_sign[0]
    # a sane structure costs nothing
    context = openmm.Context(_system_with(force), openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(ala2_start)
    assert context.getState(getEnergy=True).getPotentialEnergy()._value == 0.0


def test_omega_hold_keeps_peptide_bonds_trans_during_relaxation():
    """Planted case, a real one: a chignolin reconstruction by the shipped gan (``tests/data``, how it
    was made in its REMARKs) whose Tyr2 ring sits on Gly7; the default restrained minimisation pushes
    it away and, without the omega hold, drags the THR 6 - GLY 7 peptide bond cis. With the hold
    (default) every bond stays trans, and the hold costs nothing in the structure handed in."""
    from openmmbackmap.bench.structural import cis_peptides
    from openmmbackmap.bench.structure import TopologyFeatures
    from openmmbackmap.relax import omega_hold_force

    topology, frame = io.load_topology(Path(__file__).parent / "data" / "cln025_gan_frame_turns_cis.pdb")
    features = TopologyFeatures.from_topology(topology)
    mapping = load_backmapper(io.bundled("models/cln025_ca_gan.pt")).mapping
    system = reference_system(topology)
    assert cis_peptides(frame, features)["total"] == 0

    def relaxed(hold_omega: bool) -> np.ndarray:
        relaxation = RestrainedRelaxation(system, topology, mapping, RelaxationSettings(hold_omega=hold_omega),
                                          platform="Reference")
        return relaxation.relax(frame, mapping.map(frame)).positions

    assert cis_peptides(relaxed(False), features)["total"] == 1
    assert cis_peptides(relaxed(True), features)["total"] == 0
    force = omega_hold_force(features.omegas)

    def hold_energy() -> float:
        context = openmm.Context(_system_with(force, len(frame)), openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(frame)
        return context.getState(getEnergy=True).getPotentialEnergy()._value

    for index, row in enumerate(features.omegas):
        force.setTorsionParameters(index, *(int(i) for i in row), [1.0])  # held trans ...
    assert hold_energy() == 0.0
    force.setTorsionParameters(5, *(int(i) for i in features.omegas[5]), [-1.0])  # ... and held cis, it pulls
    assert hold_energy() > 1000.0


def _system_with(force: openmm.Force, particles: int = 22) -> openmm.System:
    system = openmm.System()
    for _ in range(particles):
        system.addParticle(12.0)
    system.addForce(copy.deepcopy(force))
    return system


# ---------------------------------------------------------------------- the driver


def test_scheduled_switches_map_back_positions_and_velocities(ala2_model, ala2_start):
    simulation = _ala2(ala2_model, ala2_start, switch_interval=50, atomistic_steps=20, map_back=True, samples=3)
    simulation.run(120)
    assert [r.step for r in simulation.switches] == [50, 100]
    assert simulation.currentStep == 120 and simulation.atomistic.currentStep == 40
    for record in simulation.switches:
        assert record.accepted and record.mapped_back and record.samples == 3
        assert record.chirality_errors == 0 and record.cis_peptides == 0
        assert record.energy_relaxed < record.energy_backmapped
        assert record.bead_rmsd_nm < 0.05
        assert 0 < record.inference_s < record.total_s
    # right after a map back, the beads are the mapped atomistic structure, velocities included
    simulation.switch_interval = 10
    simulation.run(10)
    atomistic = simulation.atomistic.context.getState(getPositions=True, getVelocities=True)
    cg = simulation.cg.context.getState(getPositions=True, getVelocities=True)
    mapping = ala2_model.mapping
    np.testing.assert_allclose(cg.getPositions(asNumpy=True)._value,
                               mapping.map(atomistic.getPositions(asNumpy=True)._value), atol=1e-6)
    np.testing.assert_allclose(cg.getVelocities(asNumpy=True)._value,
                               mapping.map(atomistic.getVelocities(asNumpy=True)._value), atol=1e-6)


def test_without_map_back_the_cg_trajectory_is_untouched(ala2_model, ala2_start):
    plain = _ala2(ala2_model, ala2_start)
    switching = _ala2(ala2_model, ala2_start, switch_interval=25, atomistic_steps=10, map_back=False)
    plain.run(100)
    switching.run(100)
    assert len(switching.switches) == 4 and not plain.switches
    np.testing.assert_array_equal(plain.cg_bead_positions(), switching.cg_bead_positions())


def test_on_demand_switches_and_callbacks(ala2_model, ala2_start):
    calls = []

    def when(simulation):
        calls.append(simulation.currentStep)
        return simulation.currentStep == 60

    simulation = _ala2(ala2_model, ala2_start, switch_when=when, check_interval=20)
    simulation.run(80)
    assert calls == [20, 40, 60, 80] and [r.step for r in simulation.switches] == [60]
    record = simulation.switch_to_atomistic()
    assert simulation.resolution == "atomistic" and record.step == 80
    simulation.run(15)  # atomistic MD now
    assert simulation.atomistic.currentStep == 15 and simulation.currentStep == 80
    simulation.switch_to_cg()
    assert simulation.resolution == "cg" and simulation.switches[-1].mapped_back
    simulation.run(5)
    assert simulation.currentStep == 85


def test_chirality_check_counts_a_mirrored_structure(ala2_model, ala2_start):
    simulation = _ala2(ala2_model, ala2_start)
    _, problems = simulation._checks(ala2_start, -100.0)
    assert problems == []
    mirrored = ala2_start * np.array([-1.0, 1.0, 1.0])  # every chiral centre flipped
    numbers, problems = simulation._checks(mirrored, -100.0)
    assert numbers["chirality_errors"] == 1 and "wrong chirality at ALA 2:CA" in problems[0]


def test_failed_checks_resample_then_relax_strongly_then_raise_or_skip(ala2_model, ala2_start):
    strict = _ala2(ala2_model, ala2_start, switch_interval=20, energy_threshold=-1e6, max_attempts=2)
    with pytest.raises(SwitchError, match=r"switch 1 at CG step 20: .*2 attempt\(s\).*above the threshold"):
        strict.run(40)
    record = strict.switches[0]
    assert record.attempts == 2 and record.strong_relaxation and not record.accepted
    lenient = _ala2(ala2_model, ala2_start, switch_interval=20, energy_threshold=-1e6, max_attempts=2,
                    on_failure="skip", atomistic_steps=10)
    lenient.run(40)
    assert [r.accepted for r in lenient.switches] == [False, False]
    assert lenient.resolution == "cg" and lenient.atomistic.currentStep == 0  # no MD from a rejected structure


def test_bad_arguments_are_clear_errors(ala2_model, ala2_start):
    cg = _ala2(ala2_model, ala2_start).cg
    with pytest.raises(InputError, match="takes 5 beads"):
        MultiscaleSimulation(cg, ala2_model, bead_particles=[0, 1, 2])
    with pytest.raises(InputError, match="reference_positions must have shape"):
        MultiscaleSimulation(cg, ala2_model, reference_positions=ala2_start[:5])
    with pytest.raises(InputError, match="platform 'NoSuchPlatform' is not available"):
        MultiscaleSimulation(cg, ala2_model, platform="NoSuchPlatform")
    with pytest.raises(ValueError, match="on_failure"):
        MultiscaleSimulation(cg, ala2_model, on_failure="ignore")


# ---------------------------------------------------------------------- reporters and checkpoints


def test_reporters_write_every_nth_switch(tmp_path, ala2_model, ala2_start):
    simulation = _ala2(ala2_model, ala2_start, switch_interval=10)
    simulation.reporters += [
        AtomisticTrajectoryReporter(tmp_path / "all.dcd"),
        AtomisticTrajectoryReporter(tmp_path / "even.pdb", reportInterval=2),
        SwitchLogReporter(tmp_path / "log.csv"),
        SwitchLogReporter(tmp_path / "even.json", reportInterval=2),
    ]
    simulation.run(50)
    for reporter in simulation.reporters:
        getattr(reporter, "close", lambda: None)()
    topology = ala2_model.topology
    frames = io.load_trajectory(tmp_path / "all.dcd", topology).xyz
    assert len(frames) == 5
    even = io.load_trajectory(tmp_path / "even.pdb", topology).xyz
    np.testing.assert_allclose(even, frames[[1, 3]], atol=2e-4)  # PDB keeps 3 decimals of Angstrom
    import csv
    import json

    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40, 50]
    assert [r["index"] for r in json.loads((tmp_path / "even.json").read_text())] == [2, 4]


def test_resumed_run_matches_uninterrupted_one(tmp_path, ala2_model, ala2_start):
    def build(folder):
        simulation = _ala2(ala2_model, ala2_start, switch_interval=30, atomistic_steps=10, map_back=True, samples=2)
        simulation.reporters += [AtomisticTrajectoryReporter(folder / "a.xtc"), SwitchLogReporter(folder / "log.csv")]
        simulation.setCheckpoint(folder / "run.chk", 40)
        return simulation

    whole = build(tmp_path / "whole")
    whole.run(150)
    first = build(tmp_path / "parts")
    first.run(80)  # checkpoint at 80; then it runs on past it and "dies"
    first.run(40)
    resumed = build(tmp_path / "parts")
    resumed.loadCheckpoint(tmp_path / "parts" / "run.chk")
    assert resumed.currentStep == 120 and resumed.switchCount == 4
    resumed.run(30)
    np.testing.assert_array_equal(whole.cg_bead_positions(), resumed.cg_bead_positions())
    np.testing.assert_array_equal(whole.atomistic_positions(), resumed.atomistic_positions())
    for simulation in (whole, resumed):
        for reporter in simulation.reporters:
            getattr(reporter, "close", lambda: None)()
    a = io.load_trajectory(tmp_path / "whole" / "a.xtc", ala2_model.topology).xyz
    b = io.load_trajectory(tmp_path / "parts" / "a.xtc", ala2_model.topology).xyz
    assert len(a) == 5
    np.testing.assert_array_equal(a, b)
    assert (tmp_path / "whole" / "log.csv").read_text().count("\n") == (tmp_path / "parts" / "log.csv").read_text().count("\n")


def test_checkpoint_of_another_model_is_refused(tmp_path, ala2_model, ala2_start):
    simulation = _ala2(ala2_model, ala2_start)
    simulation.saveCheckpoint(tmp_path / "run.chk")
    other = load_backmapper(io.bundled("models/ala2_residue_com_ic.pt"))
    integrator = openmm.LangevinMiddleIntegrator(300, 1, 0.002)
    cg = app.Simulation(other.mapping.cg_topology, elastic_network_system(other.mapping, other.mapping.map(ala2_start)),
                        integrator, openmm.Platform.getPlatformByName("Reference"))
    cg.context.setPositions(other.mapping.map(ala2_start))
    with pytest.raises(InputError, match="written for a model with mapping"):
        MultiscaleSimulation(cg, other, platform="Reference").loadCheckpoint(tmp_path / "run.chk")
    (tmp_path / "junk.chk").write_text("not a zip")
    with pytest.raises(InputError, match="not a readable multiscale checkpoint"):
        simulation.loadCheckpoint(tmp_path / "junk.chk")


def _config(folder: Path, steps: int) -> Path:
    from openmmbackmap.switch_config import demo_config

    path = demo_config(folder, steps=steps)
    config = yaml.safe_load(path.read_text())
    config["switching"].update(switch_interval=500, atomistic_steps=50)
    config["output"]["checkpoint_interval"] = 500
    path.write_text(yaml.safe_dump(config))
    return path


def test_killed_run_resumes_to_the_same_final_state(tmp_path):
    steps = 3000
    whole = _config(tmp_path / "whole", steps)
    assert subprocess.run([BACKMAP, "switch", str(whole), "--no-progress"], capture_output=True, timeout=600).returncode == 0
    killed = _config(tmp_path / "killed", steps)
    process = subprocess.Popen([BACKMAP, "switch", str(killed), "--no-progress"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "killed" / "switches.csv"
    deadline = time.time() + 300
    # two switches logged: the checkpoint of step 1000 has been written; kill it mid-run
    while time.time() < deadline and process.poll() is None:
        if log.exists() and log.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = subprocess.run([BACKMAP, "switch", str(killed), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stderr
    topology = load_backmapper(io.bundled("models/ala2_backbone_ic.pt")).topology
    a = io.load_trajectory(tmp_path / "whole" / "atomistic.xtc", topology).xyz
    b = io.load_trajectory(tmp_path / "killed" / "atomistic.xtc", topology).xyz
    assert len(a) == steps // 500
    np.testing.assert_array_equal(a, b)
    assert (tmp_path / "whole" / "switches.csv").read_text().splitlines()[1:][-1].split(",")[12:16] == \
        (tmp_path / "killed" / "switches.csv").read_text().splitlines()[1:][-1].split(",")[12:16]


def test_sigterm_stops_at_a_safe_point_with_a_checkpoint(tmp_path):
    config = _config(tmp_path, 200000)
    process = subprocess.Popen([BACKMAP, "switch", str(config), "--no-progress"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "switches.csv").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 3, stderr
    assert "run the same command again to resume" in stderr
    assert (tmp_path / "multiscale.chk").exists()


def test_config_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: m.pt\ncg: {structure: a.pdb, system: {cgforce: f.pt}, colour: red}\nswitching: {steps: 10}\n")
    with pytest.raises(InputError, match=r"bad.yaml: unknown key\(s\) \['colour'\] in section 'cg'"):
        load_config(path)
    path.write_text("model: m.pt\ncg: {structure: a.pdb, system: {martini: x}}\nswitching: {steps: 10}\n")
    with pytest.raises(InputError, match="cg.system must have exactly one of"):
        load_config(path)
    result = subprocess.run([BACKMAP, "switch", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "bad.yaml" in result.stderr


# ---------------------------------------------------------------------- chignolin end to end


def test_chignolin_cg_to_atomistic_md_and_back(tmp_path):
    """The chain a user runs: learned CG force field (TorchForce) -> switch with a shipped backmapper -> MD -> back."""
    model = load_backmapper(io.bundled("models/cln025_ca_ic.pt"))
    _, native = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    mapping = model.mapping
    beads = mapping.map(native)
    integrator = openmm.LangevinMiddleIntegrator(300, 1, 0.005)
    integrator.setRandomNumberSeed(3)
    cg = app.Simulation(mapping.cg_topology, create_cg_system(mapping, bundled_model("cln025_ca_cgff.pt")),
                        integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    cg.context.setPositions(beads)
    cg.context.setVelocitiesToTemperature(300, 3)
    simulation = MultiscaleSimulation(
        cg, model, samples=4, energy_threshold=0.0, reference_positions=native, seed=3,
        relaxation=RelaxationSettings(max_iterations=100), platform="CPU", platform_properties={"Threads": "1"},
    )
    simulation.atomistic.reporters.append(app.StateDataReporter(str(tmp_path / "md.csv"), 100, potentialEnergy=True))
    simulation.run(1000)  # CG dynamics
    record = simulation.switch_to_atomistic()
    assert record.accepted and record.chirality_errors == 0 and record.cis_peptides == 0
    assert record.energy_relaxed < 0
    simulation.run(1000)  # 2 ps of atomistic MD, amber99sbildn + OBC
    energies = np.loadtxt(tmp_path / "md.csv", delimiter=",", skiprows=1)
    assert len(energies) == 10 and np.isfinite(energies).all() and energies.max() < 0
    positions = simulation.atomistic_positions()
    from openmmbackmap.bench.structural import bond_score
    from openmmbackmap.bench.structure import TopologyFeatures

    assert bond_score(positions, native, TopologyFeatures.from_topology(model.topology)) == 1.0
    simulation.switch_to_cg()
    np.testing.assert_allclose(simulation.cg_bead_positions(), mapping.map(positions), atol=1e-5)
    simulation.run(1000)  # CG dynamics go on from the mapped structure
    assert simulation.currentStep == 2000 and np.isfinite(simulation.cg_bead_positions()).all()
