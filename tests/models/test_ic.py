"""The ic family: exact Z-matrix rebuild, TorchScript file, equivariance, stereochemistry, seeds.

Models are trained for a few epochs on the bundled 1 ns alanine-dipeptide run (800 frames
train, the last 200 validation), one thread.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import openmmbackmap
from openmmbackmap import InputError, MappingError, geometry
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.mapping import Mapping
from openmmbackmap.models import create_family, families, load_backmapper, read_metadata
from openmmbackmap.models.ic import ICBackmapper, build_zmatrix, internal_coordinates
from openmmbackmap.training import _ic_statistics, train_ic

SCHEMES = ["backbone", "residue_com"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(ala2, tmp_path_factory, one_thread):
    """{scheme: (mapping, path of the saved model, TrainingResult)}."""
    topology, xyz = ala2
    out = {}
    for scheme in SCHEMES:
        mapping = Mapping.from_scheme(topology, scheme)
        result = create_family("ic", hidden=32, max_epochs=15, patience=5, log=None).train(mapping, [xyz])
        path = tmp_path_factory.mktemp("ic") / f"ala2_{scheme}_ic.pt"
        create_family("ic").save(result, path)
        out[scheme] = (mapping, path, result)
    return out


def _no_scaling(zmatrix):
    return np.zeros(zmatrix.n_features), np.ones(zmatrix.n_features)


def _random_rigid_motion(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q, rng.normal(scale=2.0, size=3)


def test_family_is_registered():
    assert "ic" in families()
    assert create_family("ic", hidden=8).options == {"hidden": 8}


@pytest.mark.parametrize("scheme", SCHEMES + ["heavy_com"])
def test_true_internal_coordinates_rebuild_the_frames(ala2, scheme):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, scheme)
    zmatrix = build_zmatrix(mapping)
    assert zmatrix.anchored == (scheme == "backbone")
    assert sorted(zmatrix.rows[:, 0].tolist()) == sorted(set(range(22)) - set(zmatrix.anchor_atoms.tolist()))
    frames = xyz[::50]
    r, theta, phi = internal_coordinates(frames, zmatrix)
    statistics = _ic_statistics(zmatrix, r, theta, phi)
    module = ICBackmapper(zmatrix, mapping.matrix.toarray(), *statistics, _no_scaling(zmatrix))
    by_level = np.argsort(zmatrix.level, kind="stable")
    as_tensor = lambda a: torch.from_numpy(a[:, by_level].astype(np.float32))  # noqa: E731
    cg = torch.from_numpy(mapping.map(frames))
    atoms = module.place(cg, as_tensor(r), as_tensor(theta), as_tensor(phi))
    if not zmatrix.anchored:
        atoms = module.superpose(atoms, cg)
    np.testing.assert_allclose(atoms.numpy(), frames, atol=1e-5)


def test_chirality_is_set_by_impropers(ala2):
    topology, _ = ala2
    for scheme in SCHEMES:
        mapping = Mapping.from_scheme(topology, scheme)
        rows = build_zmatrix(mapping).describe(mapping)
        improper = build_zmatrix(mapping).improper
        # The CA centre's last heavy substituent is placed against a sibling, never along a free torsion.
        placed_on_ca = [row for row, flag in zip(rows, improper) if " <- ALA2:CA " in row and flag]
        assert any(row.startswith(("ALA2:CB", "ALA2:C ")) for row in placed_on_ca), rows


def test_too_few_beads_and_unreachable_atoms_are_refused(ala2):
    topology, _ = ala2
    backbone = Mapping.from_scheme(topology, "backbone")
    with pytest.raises(MappingError, match="at least 3 beads"):
        build_zmatrix(Mapping(topology, backbone.beads[:2]))


def test_file_is_torchscript_with_metadata(trained, ala2):
    mapping, path, result = trained["residue_com"]
    metadata = read_metadata(path)
    assert metadata["family"] == "ic" and metadata["fingerprint"] == mapping.fingerprint
    assert metadata["provenance"]["zmatrix"]["anchored"] is False
    assert len(metadata["provenance"]["zmatrix"]["free_torsions"]) == 5  # phi, psi-like and three methyls
    assert metadata["validation"]["chirality_errors"] == 0 and metadata["validation"]["bond_score"] >= 0.99
    assert result.history and result.history[0]["validation_nll"] > 0
    module = torch.jit.load(str(path))  # no class of this package needed
    cg = torch.from_numpy(mapping.map(ala2[1][:2]))
    assert module(cg, None, 0).shape == (2, 22, 3)
    assert module(cg, torch.zeros(2, 22, 3), 0).shape == (2, 22, 3)  # `previous` is accepted (and unused)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_equivariant_under_rotation_and_translation(trained, ala2, scheme):
    mapping, path, _ = trained[scheme]
    backmapper = load_backmapper(path)
    cg = mapping.map(ala2[1][:64]).astype(np.float64)
    rng = np.random.default_rng(7)
    for _ in range(3):
        rotation, shift = _random_rigid_motion(rng)
        moved = backmapper(cg @ rotation.T + shift, seed=11)
        expected = backmapper(cg, seed=11).astype(np.float64) @ rotation.T + shift
        assert np.abs(moved - expected).max() < 1e-4


@pytest.mark.parametrize("scheme", SCHEMES)
def test_stereochemistry_and_bonds_over_many_samples(trained, ala2, scheme):
    mapping, path, _ = trained[scheme]
    topology, xyz = ala2
    backmapper = load_backmapper(path)
    cg = mapping.map(xyz)
    out = np.concatenate([backmapper(cg, seed=s) for s in range(3)])  # 3,000 frames
    features = TopologyFeatures.from_topology(topology)
    handedness = np.sign(geometry.signed_volumes(xyz[:1], features.chiral_centres))
    assert (np.sign(geometry.signed_volumes(out, features.chiral_centres)) == handedness).all()
    assert (np.abs(geometry.dihedrals(out, features.omegas)) > math.pi / 2).all()  # no cis (ala2 has no proline)
    ideal = geometry.distances(xyz, features.bonds).mean(0)
    deviation = np.abs(geometry.distances(out, features.bonds) - ideal) / ideal
    assert (deviation <= 0.1).mean() >= 0.99
    assert deviation.max() < 0.15


def test_chirality_and_trans_peptides_survive_absurd_torsion_spreads(ala2):
    """Even with every dependent torsion's sigma 50x too wide, the clipping keeps handedness and trans bonds."""
    topology, xyz = ala2
    features = TopologyFeatures.from_topology(topology)
    handedness = np.sign(geometry.signed_volumes(xyz[:1], features.chiral_centres))
    for scheme in SCHEMES:
        mapping = Mapping.from_scheme(topology, scheme)
        zmatrix = build_zmatrix(mapping)
        r_stats, theta_stats, (mean, std), free = _ic_statistics(zmatrix, *internal_coordinates(xyz, zmatrix))
        module = ICBackmapper(zmatrix, mapping.matrix.toarray(), r_stats, theta_stats, (mean, 50 * std), free, _no_scaling(zmatrix))
        assert float(module.phi_limit.max()) <= math.radians(60.0) + 1e-6
        out = torch.jit.script(module)(torch.from_numpy(mapping.map(xyz)), None, 3).numpy()
        assert (np.sign(geometry.signed_volumes(out, features.chiral_centres)) == handedness).all()
        assert (np.abs(geometry.dihedrals(out, features.omegas)) > math.pi / 2).all()


def test_seeds_are_reproducible(trained, ala2):
    mapping, path, _ = trained["residue_com"]
    backmapper = load_backmapper(path)
    cg = mapping.map(ala2[1][:20])
    np.testing.assert_array_equal(backmapper(cg, seed=5), backmapper(cg, seed=5))
    assert np.abs(backmapper(cg, seed=5) - backmapper(cg, seed=6)).max() > 1e-3
    module = torch.jit.load(str(path))
    np.testing.assert_array_equal(module(torch.from_numpy(cg), None, 9).numpy(), backmapper(cg, seed=9))


def test_bead_count_mismatch_is_an_error(trained, ala2):
    mapping, path, _ = trained["backbone"]
    backmapper = load_backmapper(path)
    with pytest.raises(InputError, match="takes 5 beads"):
        backmapper(np.zeros((2, 3, 3)))
    with pytest.raises((RuntimeError, torch.jit.Error), match=r"shape \(frames, 5, 3\); got \[2, 3, 3\]"):
        torch.jit.load(str(path))(torch.zeros(2, 3, 3), None, 0)


def test_validation_is_a_time_block(ala2):
    topology, xyz = ala2
    result = train_ic(Mapping.from_scheme(topology, "backbone"), [xyz], max_epochs=1, hidden=8, log=None)
    assert result.provenance["frames_train"] == 800 and result.provenance["frames_validation"] == 200
    assert result.validation["frames"] == 200 and result.validation["cg_rmsd_nm"] < 1e-6  # anchors sit on their beads
    with pytest.raises(InputError, match="shape"):
        train_ic(Mapping.from_scheme(topology, "backbone"), [xyz[:, :20]], log=None)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_shipped_models_on_the_bundled_run(ala2, scheme):
    """The trained models in the package (trained on reference-data/ala2, another run) on the bundled 1 ns."""
    from openmmbackmap.bench import distributions, structural

    path = Path(openmmbackmap.__file__).parent / "data" / "models" / f"ala2_{scheme}_ic.pt"
    topology, xyz = ala2
    backmapper = load_backmapper(path, topology=topology)
    assert backmapper.metadata.provenance["command"].startswith(".venv/bin/python -m openmmbackmap.training")
    out = backmapper(backmapper.mapping.map(xyz), seed=1)
    features = TopologyFeatures.from_topology(topology)
    assert structural.chirality_errors(out, xyz, features)["total"] == 0
    assert structural.cis_peptides(out, features)["total"] == 0
    assert structural.bond_score(out, xyz, features) >= 0.99
    assert distributions.basin_population_difference(out, xyz, features) <= 3.0


def test_ring_and_peptide_bonds_are_closed_on_chignolin():
    """Chignolin `ca`: ring closures (Tyr, Trp, Pro) and anchor-to-anchor peptide bonds, trained on one
    bundled segment and tested on another, land within 10 % of their length, nearer than without the
    closing sweeps. Closing keeps handedness and equivariance."""
    from openmmbackmap import io
    from openmmbackmap.bench import structural

    topology, native = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    train, test = (io.load_trajectory(io.bundled(f"chignolin/reference/cln025_00{k}.xtc"), topology).xyz.astype(np.float64)
                   for k in (0, 2))
    mapping = Mapping.from_scheme(topology, "ca")
    zmatrix = build_zmatrix(mapping)
    atoms = list(topology.atoms())
    closures = [f"{atoms[i].residue.name}:{'-'.join(sorted((atoms[i].name, atoms[j].name)))}" for i, j in zmatrix.closures]
    assert {"TYR:CE2-CZ", "TRP:CH2-CZ3", "TRP:CE2-NE1", "PRO:CD-CG"} <= set(closures)
    bond_names = closures[: zmatrix.n_closure_bonds]
    assert bond_names.count("TYR:CE2-CZ") == 3 and sum(name.endswith(":C-N") for name in bond_names) == 9  # every peptide bond

    result = train_ic(mapping, [train], hidden=32, max_epochs=30, log=None)
    features = TopologyFeatures.from_topology(topology)
    cg = mapping.map(test[::5])
    closed = result.module(torch.from_numpy(cg), None, 4).double().numpy()
    assert structural.bond_score(closed, test, features) >= 0.998
    assert structural.chirality_errors(closed, native, features)["total"] == 0
    assert structural.cis_peptides(closed, features)["total"] == 0
    bonds = zmatrix.closures[: zmatrix.n_closure_bonds]
    ideal = geometry.distances(test, bonds).mean(0)
    assert (np.abs(geometry.distances(closed, bonds) - ideal) <= 0.1 * ideal).mean() >= 0.999

    rotation, shift = _random_rigid_motion(np.random.default_rng(5))
    moved = result.module(torch.from_numpy(cg @ rotation.T + shift), None, 4).double().numpy()
    assert np.abs(moved - (closed @ rotation.T + shift)).max() < 1e-4

    result.module.closure_iterations = 0  # the same model, rings left as NeRF leaves them
    open_rings = result.module(torch.from_numpy(cg), None, 4).double().numpy()
    error_open = np.abs(geometry.distances(open_rings, bonds) - ideal).max(axis=0)
    error_closed = np.abs(geometry.distances(closed, bonds) - ideal).max(axis=0)
    # Worst frame per closure bond: the conditional geometry already closes most rings; the sweeps
    # halve what is left (to the spread of the sampled target lengths).
    assert error_closed.max() < error_open.max() and error_closed.mean() < 0.7 * error_open.mean()


def test_dependent_geometry_keeps_the_training_correlations():
    """Bond lengths, angles and dependent torsions are drawn from one joint Gaussian: strongly correlated
    pairs in the training frames (chignolin, e.g. angles around one ring atom) stay correlated in the
    samples, which independent Gaussians would not give."""
    from openmmbackmap import io

    topology, _ = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    xyz = io.load_trajectory(io.bundled("chignolin/reference/cln025_000.xtc"), topology).xyz.astype(np.float64)
    mapping = Mapping.from_scheme(topology, "ca")
    result = train_ic(mapping, [xyz], hidden=16, max_epochs=1, log=None)
    zmatrix = build_zmatrix(mapping)
    _, theta, _ = internal_coordinates(xyz, zmatrix)
    learnt = np.flatnonzero(np.isnan(zmatrix.fixed_theta))
    reference = np.corrcoef(theta[:, learnt], rowvar=False)
    np.fill_diagonal(reference, 0.0)
    i, j = np.unravel_index(np.argsort(np.abs(reference), axis=None)[-6::2], reference.shape)  # three strongest pairs
    assert (np.abs(reference[i, j]) > 0.5).all()
    samples = result.module(torch.from_numpy(mapping.map(np.repeat(xyz[:1], 4000, axis=0))), None, 2).double().numpy()
    _, sampled_theta, _ = internal_coordinates(samples, zmatrix)
    sampled = np.corrcoef(sampled_theta[:, learnt], rowvar=False)
    assert np.abs(sampled[i, j] - reference[i, j]).max() < 0.15


def test_conditional_geometry_recovers_a_planted_dependence():
    """An angle whose mean follows sin(chi) by 0.1 rad, with 0.02 rad of noise: the regression finds the
    slope and the residual covariance is the noise's, not the marginal spread."""
    from openmmbackmap.models.ic import conditional_geometry

    rng = np.random.default_rng(0)
    chi = rng.uniform(-math.pi, math.pi, 5000)
    theta = 1.9 + 0.1 * np.sin(chi) + 0.02 * rng.standard_normal(5000)
    r = 0.15 + 0.003 * rng.standard_normal(5000)
    phi = 2.0 + 0.05 * rng.standard_normal(5000)
    condition = np.stack([np.sin(chi), np.cos(chi), np.ones(5000)], axis=1)
    regression, covariance = conditional_geometry(
        condition, r[:, None], theta[:, None], phi[:, None], (np.array([0.15]), np.array([1.9]), np.array([2.0])), ridge=1e-4
    )
    assert regression[0, 1] == pytest.approx(0.1, abs=0.005) and abs(regression[1, 1]) < 0.005  # theta on sin, cos
    assert np.abs(regression[:2, [0, 2]]).max() < 0.005  # r and phi depend on nothing
    assert math.sqrt(covariance[1, 1]) == pytest.approx(0.02, rel=0.05)


def test_training_on_every_nth_frame(ala2_paths, tmp_path):
    """python -m openmmbackmap.training --every 4 trains on frames 0, 4, 8... of each segment and says so;
    the cvae, which learns from frame pairs, refuses it (its spacing is --stride)."""
    from openmmbackmap.training import main

    _, trajectory = ala2_paths
    model = tmp_path / "every4.pt"
    assert main(["--scheme", "backbone", "--train", str(trajectory), "--every", "4", "--max-epochs", "1",
                 "--hidden", "8", "--out", str(model)]) == 0
    provenance = read_metadata(model)["provenance"]
    assert provenance["data"]["every"] == 4 and provenance["data"]["train"][0]["frames"] == 250
    assert provenance["frames_train"] == 200  # the first 80 % of the 250 frames kept
    with pytest.raises(InputError, match="--stride"):
        main(["--family", "cvae", "--scheme", "backbone", "--train", str(trajectory), "--every", "4", "--out", str(model)])
    with pytest.raises(InputError, match="--every"):
        main(["--scheme", "backbone", "--train", str(trajectory), "--every", "0", "--out", str(model)])
