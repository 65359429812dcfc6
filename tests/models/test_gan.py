"""The gan family: force-field prior against OpenMM, contract, equivariance, seeds, checkpoints, shipped models.

Tiny models are trained for an epoch or two on the first 300 frames of the bundled 1 ns
alanine-dipeptide run (one thread); the shipped models were trained on the first 700 frames
and are scored here on the last 300, which they never saw.
"""

import copy
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
import pytest
import torch

import openmmbackmap
from openmmbackmap import InputError, MappingError, io
from openmmbackmap.bench import structural
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.cli import main
from openmmbackmap.data import reference_system
from openmmbackmap.mapping import Mapping
from openmmbackmap.models import create_family, families, load_backmapper, read_metadata
from openmmbackmap.models.gan import ForceFieldPrior, build_environment
from openmmbackmap.training import GAN_PRIOR_WEIGHT, train_gan

SCHEMES = ["backbone", "residue_com"]
SHIPPED = Path(openmmbackmap.__file__).parent / "data" / "models"
TINY = dict(hidden=32, max_epochs=1, log=None)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def system(ala2):
    return reference_system(ala2[0])


@pytest.fixture(scope="module")
def trained(ala2, system, tmp_path_factory, one_thread):
    """{scheme: (mapping, path of the saved model, TrainingResult)}: one epoch on 300 frames."""
    topology, xyz = ala2
    out = {}
    for scheme in SCHEMES:
        mapping = Mapping.from_scheme(topology, scheme)
        family = create_family("gan", system=system, **TINY)
        result = family.train(mapping, [xyz[:300]])
        path = tmp_path_factory.mktemp("gan") / f"ala2_{scheme}_gan.pt"
        family.save(result, path)
        out[scheme] = (mapping, path, result)
    return out


def _random_rigid_motion(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q, rng.normal(scale=2.0, size=3)


def _openmm_energies(system: openmm.System, xyz: np.ndarray) -> dict[str, np.ndarray]:
    """Energies per force (force groups) from OpenMM's Reference platform; LJ and Coulomb apart."""
    groups = copy.deepcopy(system)
    lj_only = copy.deepcopy(system)
    for g, force in enumerate(groups.getForces()):
        force.setForceGroup(g)
    for g, force in enumerate(lj_only.getForces()):
        force.setForceGroup(g)
        if isinstance(force, openmm.NonbondedForce):
            force.setUseDispersionCorrection(False)
            for i in range(force.getNumParticles()):
                _, sigma, epsilon = force.getParticleParameters(i)
                force.setParticleParameters(i, 0.0, sigma, epsilon)
            for i in range(force.getNumExceptions()):
                p, q, _, sigma, epsilon = force.getExceptionParameters(i)
                force.setExceptionParameters(i, p, q, 0.0, sigma, epsilon)
    index = {type(f).__name__: g for g, f in enumerate(groups.getForces())}
    out: dict[str, list] = {k: [] for k in ("bonds", "angles", "torsions", "lennard_jones", "coulomb", "forces")}
    contexts = [openmm.Context(s, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
                for s in (groups, lj_only)]
    for frame in xyz:
        values = []
        for context in contexts:
            context.setPositions(frame)
            values.append({name: context.getState(getEnergy=True, groups={g}).getPotentialEnergy().value_in_unit(
                unit.kilojoule_per_mole) for name, g in index.items()})
        out["bonds"].append(values[0]["HarmonicBondForce"])
        out["angles"].append(values[0]["HarmonicAngleForce"])
        out["torsions"].append(values[0]["PeriodicTorsionForce"])
        out["lennard_jones"].append(values[1]["NonbondedForce"])
        out["coulomb"].append(values[0]["NonbondedForce"] - values[1]["NonbondedForce"])
        bonded = {index[k] for k in ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce")}
        contexts[1].setPositions(frame)
        state = contexts[1].getState(getForces=True, groups=bonded | {index["NonbondedForce"]})
        out["forces"].append(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    return {k: np.array(v) for k, v in out.items()}


def test_family_is_registered():
    assert {"ic", "cvae", "gan"} <= set(families())
    assert create_family("gan", prior_weight=0.0).options == {"prior_weight": 0.0}


def test_force_field_prior_matches_openmm(ala2, system):
    """Each kind of term, and the forces (minus the gradient), equal OpenMM's on real frames."""
    xyz = ala2[1][::100].astype(np.float64)
    prior = ForceFieldPrior(system)
    positions = torch.from_numpy(xyz).requires_grad_(True)
    ours = prior.energies(positions)
    reference = _openmm_energies(system, xyz)
    for kind in ("bonds", "angles", "torsions", "lennard_jones", "coulomb"):
        np.testing.assert_allclose(ours[kind].detach().numpy(), reference[kind], rtol=1e-4, err_msg=kind)
    assert np.abs(reference["lennard_jones"]).min() > 1.0 and np.abs(reference["torsions"]).min() > 10.0  # not trivially 0
    total = ours["bonds"] + ours["angles"] + ours["torsions"] + ours["lennard_jones"]
    (gradient,) = torch.autograd.grad(total.sum(), positions)
    np.testing.assert_allclose(-gradient.numpy(), reference["forces"], rtol=1e-4, atol=1e-3)
    # Constraints (X-H bonds under HBonds) are stiff bonds at their distance; OpenMM gives them no energy.
    assert system.getNumConstraints() == len(prior.constraint_atoms) == 12
    i, j, distance = system.getConstraintParameters(0)
    r = np.linalg.norm(xyz[:, i] - xyz[:, j], axis=-1)
    assert distance.value_in_unit(unit.nanometer) == pytest.approx(float(prior.constraint_params[0, 0]))
    assert float(ours["constraints"].detach()[0]) >= 0.5 * float(prior.constraint_params[0, 1]) * (r[0] - prior.constraint_params[0, 0].item()) ** 2


def test_environment_is_local_and_topological(ala2, system):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "residue_com")
    environment = build_environment(mapping, ForceFieldPrior(system), xyz[:100])
    rows = environment.zmatrix.rows
    n = mapping.n_atoms
    # every slot is an atom placed at an earlier level, a bead, or padding; references come first
    level = dict(zip(rows[:, 0].tolist(), environment.zmatrix.level.tolist()))
    for k, (x, a, b, c) in enumerate(rows):
        atoms = [s for s in environment.slots[k] if s < n]
        assert all(level[s] < level[x] for s in atoms) and x not in atoms
        assert [s for s in (a, b, c) if s < n] == atoms[: len([s for s in (a, b, c) if s < n])]
    assert not environment.zmatrix.anchored and len(set(environment.frame_beads.tolist())) == 3
    bonded = rows[:, 1] < n  # x-a is a bond (not the first atom, placed from a bead)
    assert bonded.sum() == len(rows) - 1
    # bonds stay within 8 % of the force field's length (which is within 1 % of the data's mean)
    assert (environment.r_spread[bonded] <= 0.081 * environment.r0[bonded]).all()


def test_contract_metadata_and_refusals(trained, ala2):
    topology, xyz = ala2
    mapping, path, result = trained["backbone"]
    module = torch.jit.load(str(path))  # no class of this package needed
    out = module(torch.from_numpy(mapping.map(xyz[:4])), None, 0)
    assert out.shape == (4, 22, 3) and out.dtype == torch.float32
    metadata = read_metadata(path)
    assert metadata["family"] == "gan" and metadata["fingerprint"] == mapping.fingerprint
    assert metadata["provenance"]["options"]["prior_weight"] == GAN_PRIOR_WEIGHT
    assert metadata["provenance"]["force_field"]["terms"]["pair"] > 100
    backmapper = load_backmapper(path, mapping=mapping)
    assert backmapper.family == "gan" and not backmapper.temporal
    np.testing.assert_array_equal(backmapper(mapping.map(xyz[:4]), seed=2),
                                  result.module(torch.from_numpy(mapping.map(xyz[:4])), None, 2).numpy())
    with pytest.raises(MappingError, match="trained with mapping 'backbone'"):
        load_backmapper(path, mapping=Mapping.from_scheme(topology, "residue_com"))
    with pytest.raises((RuntimeError, torch.jit.Error), match=r"shape \(frames, 5, 3\)"):
        module(torch.zeros(2, 3, 3), None, 0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_equivariant_under_rotation_and_translation(trained, ala2, scheme):
    mapping, path, _ = trained[scheme]
    backmapper = load_backmapper(path)
    cg = mapping.map(ala2[1][:64]).astype(np.float64)
    reference = backmapper(cg, seed=11).astype(np.float64)
    rng = np.random.default_rng(7)
    for _ in range(3):
        rotation, shift = _random_rigid_motion(rng)
        moved = backmapper(cg @ rotation.T + shift, seed=11)
        assert np.abs(moved - (reference @ rotation.T + shift)).max() < 1e-4
    # a mirror image is no rotation: the output is not the mirrored output (handedness is learnt, not symmetric)
    mirrored = backmapper(cg * np.array([-1.0, 1.0, 1.0]), seed=11)
    assert np.abs(mirrored - reference * np.array([-1.0, 1.0, 1.0])).max() > 1e-3


def test_seeds_are_reproducible(trained, ala2):
    mapping, path, _ = trained["residue_com"]
    backmapper = load_backmapper(path)
    cg = mapping.map(ala2[1][:20])
    np.testing.assert_array_equal(backmapper(cg, seed=5), backmapper(cg, seed=5))
    assert np.abs(backmapper(cg, seed=5) - backmapper(cg, seed=6)).max() > 1e-3


def test_training_resumes_from_its_checkpoint(ala2, system, tmp_path):
    """Killed after two epochs and resumed: the same model as three epochs in one go; another run's checkpoint is refused."""
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "backbone")
    data = [xyz[:150]]
    options = dict(system=system, hidden=16, max_epochs=3)
    straight = train_gan(mapping, data, log=None, **options)
    checkpoint = tmp_path / "gan.ckpt"

    def killed_after_two(line: str) -> None:
        if line.startswith("epoch   2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_gan(mapping, data, checkpoint=checkpoint, log=killed_after_two, **options)
    assert checkpoint.is_file() and len(torch.load(checkpoint, weights_only=False)["history"]) == 2
    resumed = train_gan(mapping, data, checkpoint=checkpoint, log=None, **options)
    assert resumed.provenance["resumed_from_epoch"] == 2 and resumed.provenance["epochs"] == 3
    assert [h["critic"] for h in resumed.history] == [h["critic"] for h in straight.history]
    for name, value in straight.module.state_dict().items():
        torch.testing.assert_close(resumed.module.state_dict()[name], value, rtol=0, atol=0, msg=name)
    with pytest.raises(InputError, match="belongs to another training run"):
        train_gan(mapping, data, checkpoint=checkpoint, seed=1, log=None, **options)


def test_prior_weight_is_an_option_and_zero_is_the_ablation(ala2, system):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "backbone")
    without = train_gan(mapping, [xyz[:150]], system=system, prior_weight=0.0, hidden=16, max_epochs=1, log=None)
    assert without.provenance["options"]["prior_weight"] == 0.0
    assert all(h["prior_kt_per_atom"] == 0.0 for h in without.history)
    with_prior = train_gan(mapping, [xyz[:150]], system=system, prior_weight=1.0, hidden=16, max_epochs=1, log=None)
    assert with_prior.history[0]["prior_kt_per_atom"] > 0.0
    with pytest.raises(InputError, match="prior_weight"):
        train_gan(mapping, [xyz[:150]], system=system, prior_weight=-1.0, log=None)


def test_train_on_the_command_line(ala2_paths, tmp_path, capsys, monkeypatch):
    """backmap train --family gan --prior-weight 0 --test-tail: provenance, options and the held-out test."""
    _, trajectory = ala2_paths
    model = tmp_path / "ala2_bb_gan.pt"
    arguments = ["train", "--family", "gan", "--scheme", "backbone", "--train", str(trajectory), "--test-tail", "0.3",
                 "--out", str(model), "--max-epochs", "1", "--hidden", "16", "--prior-weight", "0"]
    monkeypatch.setattr("sys.argv", ["backmap", *arguments])
    assert main(arguments) == 0
    assert "test (held out: last 30% of each --train file)" in capsys.readouterr().out
    metadata = read_metadata(model)
    provenance = metadata["provenance"]
    assert provenance["command"].startswith("backmap train --family gan --scheme backbone")
    assert provenance["options"]["prior_weight"] == 0.0 and provenance["frames_train"] == 560
    assert provenance["data"]["test_tail"]["frames"] == [300] and metadata["validation"]["test"]["frames"] == 300


@pytest.mark.parametrize("scheme", SCHEMES)
def test_shipped_models_on_held_out_frames(ala2, scheme):
    """The shipped models on frames of the bundled run they never saw: its last 300 (`backbone`, trained on
    the first 700) or all of it (`residue_com`, trained on every 20th frame of 80 ns of reference-data/ala2)."""
    path = SHIPPED / f"ala2_{scheme}_gan.pt"
    topology, xyz = ala2
    backmapper = load_backmapper(path, topology=topology)
    provenance = backmapper.metadata.provenance
    assert provenance["command"].startswith(".venv/bin/python -m openmmbackmap.training --family gan")
    assert provenance["options"]["prior_weight"] > 0 and path.stat().st_size < 1_000_000
    bundled = io.file_sha256(io.bundled("alanine_dipeptide/ala2.xtc"))
    if any(entry["sha256"] == bundled for entry in provenance["data"]["train"]):
        assert provenance["data"]["test_tail"]["frames"] == [300]
        held_out = xyz[700:]
    else:
        held_out = xyz
    cg = backmapper.mapping.map(held_out)
    out = np.concatenate([backmapper(cg, seed=s) for s in (1, 2)])
    reference = np.concatenate([held_out, held_out])
    features = TopologyFeatures.from_topology(topology)
    assert structural.bond_score(out, reference, features) >= 0.99
    assert structural.chirality_errors(out, reference, features)["total"] == 0
    assert structural.cis_peptides(out, features)["total"] == 0
    assert np.sqrt(((backmapper.mapping.map(out) - np.concatenate([cg, cg])) ** 2).sum(-1).mean(-1)).mean() < 0.02  # nm


def test_peptide_bonds_keep_their_trans_plane(trained, ala2):
    """Planted defect: a generator whose torsions are uniform on the circle (its last layer zeroed but
    for a fixed direction, which the noise angle turns) would make half the peptide bonds cis; the two
    rows of `residue_com` that complete an omega (ACE's CH3 and NME's C, each placed by the omega
    torsion itself) keep the reference's trans state, so none is. With the states left free the same
    generator makes them."""
    mapping, _, result = trained["residue_com"]
    topology, xyz = ala2
    module = copy.deepcopy(result.module)
    atoms = list(topology.atoms())
    environment = build_environment(mapping, ForceFieldPrior(reference_system(topology)), xyz[:300])
    kept = np.flatnonzero(environment.amide_side)
    assert {f"{atoms[environment.zmatrix.rows[k, 0]].residue.name}:{atoms[environment.zmatrix.rows[k, 0]].name}"
            for k in kept} == {"ACE:CH3", "NME:C"}
    assert (environment.amide_side[kept] == -1).all()  # cos(omega) < 0: trans
    last = list(module.generator.children())[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 0.0, 1.0, 0.0]))
    cg = torch.tensor(mapping.map(xyz[:200]))
    features = TopologyFeatures.from_topology(topology)
    assert structural.cis_peptides(module(cg, None, 3).numpy(), features)["total"] == 0
    module.amide_side.zero_()
    assert structural.cis_peptides(module(cg, None, 3).numpy(), features)["total"] > 50
