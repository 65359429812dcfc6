"""Switching from a Martini 3 simulation run in OpenMM: martinize2 -> GROMACS files -> OpenMM -> switch.

Chignolin is martinized (vermouth's martinize2, Martini 3, elastic network), solvated in Martini
water with NaCl, read with :mod:`openmmbackmap.gromacs` (reaction field as in the .mdp) and run in
OpenMM; the driver backmaps its 32 protein beads (the first particles; water and ions are left
alone) with the shipped ``cln025_martini3_ic.pt`` and maps the relaxed atoms back.
"""

from __future__ import annotations

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import pytest

from openmmbackmap import gromacs, io, martinize
from openmmbackmap.models import load_backmapper
from openmmbackmap.relax import RelaxationSettings
from openmmbackmap.switching import MultiscaleSimulation


@pytest.fixture(scope="module")
def martini_chignolin(tmp_path_factory, martini3_itp):
    folder = tmp_path_factory.mktemp("cln025_martini")
    cg = martinize.martinize(io.bundled("chignolin/cln025.pdb"), folder, secondary_structure="C" * 10)
    system = martinize.solvate_martinized(cg, folder, box=3.6, salt_concentration=0.15, seed=7,
                                          master_itp=martini3_itp, decimals=6)
    martinize.martini_mdp(folder / "martini.mdp")
    top = gromacs.read_top(system.top)
    positions, box = gromacs.read_gro(system.gro)
    return top, positions, box, gromacs.read_mdp(folder / "martini.mdp"), folder


def test_martinize2_beads_are_the_models_beads(martini_chignolin):
    *_, folder = martini_chignolin
    model = load_backmapper(io.bundled("models/cln025_martini3_ic.pt"))
    _, atoms = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    martinized = mdtraj.load(str(folder / "cg.pdb"))
    assert [a.name for a in martinized.topology.atoms] == [b.name for b in model.mapping.beads]
    np.testing.assert_allclose(martinized.xyz[0], model.mapping.map(atoms), atol=2e-4)


def test_switch_from_martini_water_and_back(martini_chignolin):
    top, positions, box, mdp, _ = martini_chignolin
    model = load_backmapper(io.bundled("models/cln025_martini3_ic.pt"))
    _, native = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    system = top.create_system(box, mdp=mdp)
    integrator = openmm.LangevinMiddleIntegrator(300, 10, 0.02)
    integrator.setRandomNumberSeed(5)
    cg = app.Simulation(top.topology(box), system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    cg.context.setPositions(positions)
    cg.minimizeEnergy(maxIterations=500)  # the water lattice is not equilibrated
    cg.context.setVelocitiesToTemperature(300, 5)
    water_before = cg.context.getState(getPositions=True).getPositions(asNumpy=True)._value[model.n_beads:]

    simulation = MultiscaleSimulation(
        cg, model, bead_particles=range(model.n_beads), switch_interval=250, map_back=True, samples=4,
        energy_threshold=0.0, reference_positions=native, seed=5, relaxation=RelaxationSettings(max_iterations=200),
        platform="CPU", platform_properties={"Threads": "1"},
    )
    mapped_before = simulation.cg_bead_positions()
    simulation.switch_to_atomistic()
    assert simulation.switches[0].accepted and simulation.switches[0].chirality_errors == 0
    simulation.switch_to_cg()
    state = cg.context.getState(getPositions=True)
    after = state.getPositions(asNumpy=True)._value
    np.testing.assert_allclose(after[model.n_beads:], water_before, atol=1e-12)  # solvent untouched
    np.testing.assert_allclose(after[: model.n_beads], model.mapping.map(simulation.atomistic_positions()), atol=1e-5)
    assert np.sqrt(((after[: model.n_beads] - mapped_before) ** 2).sum(-1).mean()) < 0.1  # held at the beads
    simulation.run(500)  # Martini dynamics go on, with scheduled switches at steps 250 and 500
    assert [r.accepted for r in simulation.switches] == [True, True, True]
    assert np.isfinite(simulation.cg_bead_positions()).all()


def test_backmap_switch_config_with_gromacs_files(martini_chignolin, tmp_path):
    import yaml

    from openmmbackmap.switch_config import load_config, run_config

    top, positions, box, _, folder = martini_chignolin
    config = {
        "model": str(io.bundled("models/cln025_martini3_ic.pt")),
        "seed": 2,
        "cg": {"structure": str(folder / "conf.gro"),
               "system": {"gromacs": {"top": str(folder / "topol.top"), "mdp": str(folder / "martini.mdp")}},
               "bead_particles": [0, 32], "minimize": True, "timestep_fs": 20, "friction": 10,
               "platform": "CPU", "platform_properties": {"Threads": 1}},
        "atomistic": {"reference": str(io.bundled("chignolin/cln025.pdb")), "platform": "CPU",
                      "platform_properties": {"Threads": 1}},
        "switching": {"steps": 400, "switch_interval": 200, "samples": 4, "energy_threshold": 0.0, "map_back": True},
        "relaxation": {"max_iterations": 200},
        "output": {"directory": str(tmp_path / "out")},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    simulation, summary = run_config(load_config(tmp_path / "run.yaml"), progress=False)
    assert simulation.cg.system.getNumParticles() == len(positions) > 32
    assert summary["switches"] == 2 and summary["accepted"] == 2 and summary["chirality_errors"] == 0
    assert (tmp_path / "out" / "atomistic.xtc").exists() and (tmp_path / "out" / "switches.png").exists()
