"""The cvae family: contract, previous-frame conditioning, equivariance, seeds, files, trajectories, training.

Small models are trained for a few epochs on the bundled 1 ns alanine-dipeptide run (1 ps frames;
800 frames train, the last 200 validation), one thread; the shipped models (trained on
reference-data/ala2, another run) are checked on the bundled run.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import openmmbackmap
from openmmbackmap import InputError, MappingError, geometry, io
from openmmbackmap.bench import distributions, kinetics, structural
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.cli import main
from openmmbackmap.mapping import Mapping
from openmmbackmap.models import create_family, families, load_backmapper, read_metadata
from openmmbackmap.models.base import run_temporal
from openmmbackmap.models.cvae import CVAEBackmapper
from openmmbackmap.models.ic import build_zmatrix, internal_coordinates
from openmmbackmap.training import train_cvae

SCHEMES = ["backbone", "residue_com"]
SHIPPED = Path(openmmbackmap.__file__).parent / "data" / "models"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(ala2, tmp_path_factory, one_thread):
    """{scheme: (mapping, path of the saved model, TrainingResult)}: tiny models, a few epochs."""
    topology, xyz = ala2
    out = {}
    for scheme in SCHEMES:
        mapping = Mapping.from_scheme(topology, scheme)
        family = create_family("cvae", hidden=32, latent=4, max_epochs=3, log=None)
        result = family.train(mapping, [xyz], frame_interval_ps=1.0)
        path = tmp_path_factory.mktemp("cvae") / f"ala2_{scheme}_cvae.pt"
        family.save(result, path)
        out[scheme] = (mapping, path, result)
    return out


def _random_rigid_motion(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q, rng.normal(scale=2.0, size=3)


def test_family_is_registered():
    assert {"ic", "cvae"} <= set(families())
    family = create_family("cvae", stride=2)
    assert family.options == {"stride": 2} and family.temporal


def test_contract_shape_units_and_both_paths(trained, ala2):
    topology, xyz = ala2
    features = TopologyFeatures.from_topology(topology)
    for scheme in SCHEMES:
        mapping, path, _ = trained[scheme]
        module = torch.jit.load(str(path))  # no class of this package needed
        cg = torch.from_numpy(mapping.map(xyz[10:20]))
        first = module(cg, None, 0)
        following = module(cg, torch.from_numpy(xyz[9:19]), 0)
        for out in (first, following):
            assert out.shape == (10, 22, 3) and out.dtype == torch.float32
            bonds = geometry.distances(out.numpy(), features.bonds)
            assert 0.08 < bonds.min() and bonds.max() < 0.2  # nm (not angstrom): C-H ~0.109, C-C ~0.153
        # the CG image of the output is near the input, in nm (anchors exactly; these models had 3 epochs)
        cg_rmsd = np.sqrt(((mapping.map(following.numpy()) - cg.numpy()) ** 2).sum(-1).mean(-1))
        assert cg_rmsd.mean() < (1e-5 if scheme == "backbone" else 0.1)
        # The previous frame changes the distribution the torsions are drawn from.
        condition_first, condition_following = module.condition(cg, None), module.condition(cg, torch.from_numpy(xyz[9:19]))
        z = torch.zeros(10, module.latent)
        still = torch.zeros(10, module.n_free)
        assert (module.logits(condition_first, z, still) - module.logits(condition_following, z, still)).abs().max() > 1e-4


def test_previous_frame_torsions_are_mdtraj_torsions(trained, ala2):
    mapping, path, result = trained["residue_com"]
    zmatrix = build_zmatrix(mapping, chain_first=True)
    rows = zmatrix.describe(mapping)
    free = result.provenance["zmatrix"]["free_torsions"]
    assert "NME3:N <- ALA2:C ALA2:CA ALA2:N" in free and "ACE1:C <- ALA2:N ALA2:CA ALA2:C" in free  # psi and phi
    expected = internal_coordinates(ala2[1][:50], zmatrix)[2][:, [rows.index(f) for f in free]]
    measured = torch.jit.load(str(path)).free_torsions(torch.from_numpy(ala2[1][:50])).numpy()
    np.testing.assert_allclose(np.angle(np.exp(1j * (measured - expected))), 0.0, atol=1e-4)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_equivariant_under_rotation_and_translation(trained, ala2, scheme):
    mapping, path, _ = trained[scheme]
    backmapper = load_backmapper(path)
    xyz = ala2[1].astype(np.float64)
    cg, previous = mapping.map(xyz[1:65]), xyz[:64]
    rng = np.random.default_rng(7)
    for with_previous in (False, True):
        prev = previous if with_previous else None
        reference = backmapper(cg, previous=prev, seed=11).astype(np.float64)
        for _ in range(3):
            rotation, shift = _random_rigid_motion(rng)
            moved_prev = None if prev is None else prev @ rotation.T + shift
            moved = backmapper(cg @ rotation.T + shift, previous=moved_prev, seed=11)
            assert np.abs(moved - (reference @ rotation.T + shift)).max() < 1e-4
    # Only the previous frame's internal geometry counts: moving it alone changes nothing.
    rotation, shift = _random_rigid_motion(rng)
    np.testing.assert_allclose(backmapper(cg, previous=previous @ rotation.T + shift, seed=3),
                               backmapper(cg, previous=previous, seed=3), atol=1e-4)


def test_seeds_are_reproducible(trained, ala2):
    mapping, path, _ = trained["residue_com"]
    backmapper = load_backmapper(path)
    cg, previous = mapping.map(ala2[1][1:21]), ala2[1][:20]
    np.testing.assert_array_equal(backmapper(cg, previous, seed=5), backmapper(cg, previous, seed=5))
    assert np.abs(backmapper(cg, previous, seed=5) - backmapper(cg, previous, seed=6)).max() > 1e-3
    module = torch.jit.load(str(path))
    np.testing.assert_array_equal(module(torch.from_numpy(cg), torch.from_numpy(previous), 9).numpy(),
                                  backmapper(cg, previous, seed=9))


def test_wrong_shapes_are_clear_errors(trained, ala2):
    mapping, path, _ = trained["backbone"]
    backmapper = load_backmapper(path)
    module = torch.jit.load(str(path))
    cg = torch.from_numpy(mapping.map(ala2[1][:2]))
    with pytest.raises((RuntimeError, torch.jit.Error), match=r"previous .* must have shape \(2, 22, 3\); got \[2, 20, 3\]"):
        module(cg, torch.zeros(2, 20, 3), 0)
    with pytest.raises((RuntimeError, torch.jit.Error), match=r"previous .* must have shape \(2, 22, 3\); got \[3, 22, 3\]"):
        module(cg, torch.zeros(3, 22, 3), 0)
    with pytest.raises((RuntimeError, torch.jit.Error), match=r"shape \(frames, 5, 3\); got \[2, 3, 3\]"):
        module(torch.zeros(2, 3, 3), None, 0)
    with pytest.raises(InputError, match="previous frames must have shape"):
        backmapper(cg.numpy(), previous=np.zeros((2, 21, 3)))
    with pytest.raises(InputError, match="takes 5 beads"):
        backmapper.trajectory(np.zeros((4, 3, 3)))


def test_file_round_trip_and_metadata(trained, ala2):
    mapping, path, result = trained["residue_com"]
    metadata = read_metadata(path)
    assert metadata["family"] == "cvae" and metadata["fingerprint"] == mapping.fingerprint
    assert metadata["provenance"]["temporal"]["stride_frames"] == 1
    assert metadata["provenance"]["temporal"]["frame_interval_ps"] == 1.0
    validation = metadata["validation"]
    assert validation["chirality_errors"] == 0 and validation["bond_score"] >= 0.99 and validation["cis_peptides"] == 0
    assert validation["time"]["frames"] == 200 and "temporal_coherence" in validation["non_temporal"]["time"]
    backmapper = load_backmapper(path, mapping=mapping)
    assert backmapper.family == "cvae" and backmapper.temporal and backmapper.frame_interval_ps == 1.0
    cg = mapping.map(ala2[1][:5])
    np.testing.assert_array_equal(backmapper(cg, seed=2), result.module(torch.from_numpy(cg), None, 2).numpy())


def test_trajectory_runs_autoregressively_and_resumes(trained, ala2, tmp_path):
    mapping, path, _ = trained["residue_com"]
    backmapper = load_backmapper(path)
    cg = mapping.map(ala2[1][:60])
    seen = []
    full = backmapper.trajectory(cg, samples=3, seed=4, progress=seen.append)
    assert full.shape == (3, 60, 22, 3) and seen[-1] == 60
    assert np.abs(full[0] - full[1]).max() > 1e-3  # independent samples
    # frame t is the module on CG t with the generated frame t-1 and seed 4 + t
    step = backmapper.module(torch.from_numpy(np.repeat(cg[None, 7], 3, 0)), torch.from_numpy(full[:, 6]), 4 + 7)
    np.testing.assert_allclose(step.numpy(), full[:, 7], atol=1e-6)
    np.testing.assert_array_equal(run_temporal(backmapper.module, np.broadcast_to(cg, (3, *cg.shape)), seed=4), full)
    # Interrupted after 25 frames (the checkpoint as it stood), then resumed: the same frames.
    checkpoint = tmp_path / "out.xtc.partial.npz"
    key = None

    def stop_at_25(done):
        if done == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backmapper.trajectory(cg, samples=3, seed=4, checkpoint=checkpoint, checkpoint_every=10, progress=stop_at_25)
    with np.load(checkpoint) as saved:
        assert saved["xyz"].shape[1] == 20
        key = str(saved["key"])
    resumed = backmapper.trajectory(cg, samples=3, seed=4, checkpoint=checkpoint, checkpoint_every=10)
    np.testing.assert_array_equal(resumed, full)
    with pytest.raises(InputError, match="belongs to another run"):
        backmapper.trajectory(cg, samples=3, seed=5, checkpoint=checkpoint)
    assert "seed" in key


def test_training_options_and_refusals(ala2):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "backbone")
    result = train_cvae(mapping, [xyz], stride=2, frame_interval_ps=1.0, hidden=8, latent=2, max_epochs=1, log=None)
    provenance = result.provenance
    assert provenance["temporal"] == {**provenance["temporal"], "stride_frames": 2, "frame_interval_ps": 2.0}
    assert provenance["frames_train"] == 800 and provenance["pairs_train"] == 798 and provenance["pairs_validation"] == 198
    assert result.validation["frames"] == 100  # every 2nd frame of the held-out 200
    with pytest.raises(InputError, match="stride"):
        train_cvae(mapping, [xyz], stride=0, log=None)
    with pytest.raises(InputError, match="more than stride=300 frames"):
        train_cvae(mapping, [xyz], stride=300, log=None)
    with pytest.raises(InputError, match="shape"):
        train_cvae(mapping, [xyz[:, :20]], log=None)
    with pytest.raises(MappingError, match="no free torsions|none"):
        zmatrix = build_zmatrix(mapping, chain_first=True)
        none_free = np.zeros(len(zmatrix.rows), dtype=bool)
        stats = (np.zeros(len(zmatrix.rows)), np.ones(len(zmatrix.rows)))
        CVAEBackmapper(zmatrix, mapping.matrix.toarray(), stats, stats, stats, none_free,
                       (np.zeros(zmatrix.n_features), np.ones(zmatrix.n_features)))


def test_chain_first_keeps_the_default_zmatrix_and_frees_phi_psi(ala2):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "residue_com")
    default, chain = build_zmatrix(mapping), build_zmatrix(mapping, chain_first=True)
    assert "ACE1:C <- ALA2:N ALA2:CA ALA2:CB" in default.describe(mapping)  # the ic family's Z-matrix is unchanged
    rows = chain.describe(mapping)
    assert sorted(chain.rows[:, 0].tolist()) == list(range(22))
    assert chain.improper[rows.index("ALA2:O <- ALA2:C ALA2:CA NME3:N")]  # the carbonyl O hangs off psi
    psi = internal_coordinates(xyz[:20], chain)[2][:, rows.index("NME3:N <- ALA2:C ALA2:CA ALA2:N")]
    np.testing.assert_allclose(np.degrees(psi), distributions.ramachandran(xyz[:20], topology).psi[:, 0], atol=1e-3)


def test_train_and_apply_on_the_command_line(ala2_paths, tmp_path, capsys, monkeypatch):
    """backmap train --family cvae, then backmap apply runs it along the trajectory (bundled data, seconds)."""
    topology, trajectory = ala2_paths
    model = tmp_path / "ala2_rc_cvae.pt"
    arguments = ["train", "--family", "cvae", "--scheme", "residue_com", "--train", str(trajectory), "--out", str(model),
                 "--max-epochs", "2", "--hidden", "16", "--latent", "2", "--stride", "1"]
    monkeypatch.setattr("sys.argv", ["backmap", *arguments])  # what the provenance records
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "along the trajectory: temporal coherence" in printed and "first-frame path every frame" in printed
    metadata = read_metadata(model)
    assert metadata["family"] == "cvae"
    assert metadata["provenance"]["command"].startswith("backmap train --family cvae --scheme residue_com")
    assert metadata["provenance"]["temporal"]["frame_interval_ps"] == 1.0
    cg = tmp_path / "cg.xtc"
    assert main(["map", "-s", "residue_com", "-t", str(topology), "-f", str(trajectory), "-o", str(cg)]) == 0
    out = tmp_path / "aa.xtc"
    assert main(["apply", "--model", str(model), "--cg", str(cg), "--out", str(out), "--samples", "2", "--seed", "5"]) == 0
    assert "1000/1000 frames" in capsys.readouterr().err
    samples = [io.load_trajectory(tmp_path / f"aa.sample{k}.xtc", load_backmapper(model).topology) for k in range(2)]
    assert all(s.n_frames == 1000 for s in samples) and np.abs(samples[0].xyz - samples[1].xyz).max() > 0
    np.testing.assert_allclose(samples[0].time, io.load_trajectory(trajectory, samples[0].topology.to_openmm()).time)
    assert not (tmp_path / "aa.xtc.partial.npz").exists()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_shipped_models_on_the_bundled_run(ala2, scheme):
    """The shipped models (trained on reference-data/ala2, another run), along the bundled 1 ns."""
    path = SHIPPED / f"ala2_{scheme}_cvae.pt"
    topology, xyz = ala2
    backmapper = load_backmapper(path, topology=topology)
    provenance = backmapper.metadata.provenance
    assert provenance["command"].startswith(".venv/bin/python -m openmmbackmap.training --family cvae")
    assert backmapper.temporal and backmapper.frame_interval_ps == 1.0
    assert path.stat().st_size < 2_000_000
    cg = backmapper.mapping.map(xyz)
    out = backmapper.trajectory(cg, seed=1)[0]
    assert np.abs(backmapper(cg[1:50], previous=xyz[:49], seed=2) - backmapper(cg[1:50], seed=2)).max() > 1e-3
    features = TopologyFeatures.from_topology(topology)
    assert structural.chirality_errors(out, xyz, features)["total"] == 0
    assert structural.cis_peptides(out, features)["total"] == 0
    assert structural.bond_score(out, xyz, features) >= 0.99
    assert distributions.basin_population_difference(out, xyz, features) <= 3.0
    assert np.sqrt(((backmapper.mapping.map(out) - cg) ** 2).sum(-1).mean(-1)).mean() < 0.02  # nm
    assert 0.8 <= kinetics.temporal_coherence(out, xyz, features) <= 1.25
    assert not math.isnan(backmapper.metadata.validation["test"]["time"]["transition_rate_ratio"])


def test_persistence_starts_at_the_von_mises_fit_of_the_steps():
    """kappa of each free torsion starts at the concentration of its frame-to-frame steps (random walks
    with von Mises steps of known kappa, wrapped as torsions are)."""
    from openmmbackmap.training import _initialise_persistence, torsion_steps

    rng = np.random.default_rng(3)
    for kappa in (2.0, 10.0, 40.0):
        walk = np.angle(np.exp(1j * np.cumsum(rng.vonmises(0.0, kappa, size=(20000, 3)), axis=0)))
        holder = torch.nn.Module()
        holder.persistence = torch.nn.Parameter(torch.zeros(3))
        _initialise_persistence(holder, torsion_steps([walk[:10000], walk[10000:]], stride=1))
        estimate = torch.nn.functional.softplus(holder.persistence).detach().numpy()
        assert np.allclose(estimate, kappa, rtol=0.15), (kappa, estimate)


@pytest.fixture(scope="module")
def chignolin_ca():
    """(mapping, chain-first Z-matrix, [segments 0 (300 K) and 1 (450 K)]) of the bundled chignolin runs."""
    topology, _ = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    segments = [io.load_trajectory(io.bundled(f"chignolin/reference/cln025_00{k}.xtc"), topology).xyz for k in (0, 1)]
    mapping = Mapping.from_scheme(topology, "ca")
    return mapping, build_zmatrix(mapping, chain_first=True), segments


def _free_torsion(zmatrix, mapping, free_columns, name):
    rows = zmatrix.describe(mapping)
    return next(k for k, row in enumerate(free_columns) if rows[row].startswith(name + " <-"))


def test_step_coupling_recovers_a_planted_coupling_between_nearby_torsions_only(chignolin_ca):
    """sin(step) of TYR10:C planted as 0.6 sin(step) of TRP9:C (earlier level, 2 bonds apart) plus noise
    is recovered; the same correlation planted between far torsions (TYR1:C <- TYR10:C) is not coupled."""
    from openmmbackmap.training import fit_step_coupling

    mapping, zmatrix, _ = chignolin_ca
    free_columns = np.flatnonzero(~zmatrix.improper & np.isnan(zmatrix.fixed_phi))
    rng = np.random.default_rng(0)
    steps = rng.vonmises(0.0, 8.0, size=(4000, len(free_columns)))
    tyr10, trp9, tyr1 = (_free_torsion(zmatrix, mapping, free_columns, name) for name in ("TYR10:C", "TRP9:C", "TYR1:C"))
    steps[:, tyr10] = np.arcsin(0.6 * np.sin(steps[:, trp9]) + 0.05 * rng.normal(size=4000))
    steps[:, tyr1] = steps[:, tyr10]  # perfectly correlated, but 9 residues away (and drawn first)
    coupling = fit_step_coupling(mapping, zmatrix, free_columns, steps)
    assert coupling[tyr10, trp9] == pytest.approx(0.6, abs=0.05)
    assert coupling[tyr1].tolist() == [0.0] * len(free_columns) and coupling[tyr10, tyr1] == 0.0
    # Only earlier levels: what is drawn first can never depend on what is drawn after it.
    level = zmatrix.level[free_columns]
    assert not (coupling[level[:, None] <= level[None, :]]).any()
    assert np.abs(np.delete(coupling[tyr10], trp9)).max() < 0.05
    # The module takes that coupling and refuses one that looks at a torsion not yet drawn, or of the wrong shape.
    free = np.zeros(len(zmatrix.rows), dtype=bool)
    free[free_columns] = True
    stats = (np.zeros(len(zmatrix.rows)), np.ones(len(zmatrix.rows)))
    module = CVAEBackmapper(zmatrix, mapping.matrix.toarray(), stats, stats, stats, free,
                            (np.zeros(zmatrix.n_features), np.ones(zmatrix.n_features)))
    module.set_step_coupling(coupling)
    assert float(module.step_coupling[tyr10, trp9]) == pytest.approx(coupling[tyr10, trp9])
    backwards = np.zeros_like(coupling)
    backwards[trp9, tyr10] = 0.5  # TRP9:C is drawn before TYR10:C
    with pytest.raises(ValueError, match="earlier levels"):
        module.set_step_coupling(backwards)
    with pytest.raises(ValueError, match=r"\(free, free\)"):
        module.set_step_coupling(coupling[:-1])


def test_coupled_cvae_moves_a_terminal_residue_with_the_plane_before_it(chignolin_ca):
    """Trained on a real chignolin run, the kernel of TYR10:C follows TRP9:C's step (the reference's
    steps correlate at ~0.7) and a generated trajectory's do too, more than without the coupling."""
    mapping, zmatrix, segments = chignolin_ca
    held_out = io.load_trajectory(io.bundled("chignolin/reference/cln025_004.xtc"), mapping.topology).xyz[:200]
    correlations = {}
    for coupled in (True, False):
        result = train_cvae(mapping, segments, hidden=16, latent=2, max_epochs=2, step_coupling=coupled, log=None)
        module = result.module
        placed = module.free_atoms[:, 0].tolist()  # the atom each free torsion places
        atoms = {f"{a.residue.name}{a.residue.id}:{a.name}": a.index for a in mapping.topology.atoms()}
        tyr10, trp9 = placed.index(atoms["TYR10:C"]), placed.index(atoms["TRP9:C"])
        if coupled:
            assert module.step_coupling[tyr10, trp9] > 0.3
        else:
            assert not module.step_coupling.any()
        chains = run_temporal(module, mapping.map(held_out)[None], seed=3)[0]
        with torch.no_grad():
            torsions = module.free_torsions(torch.as_tensor(chains)).numpy()
        steps = np.sin(np.angle(np.exp(1j * (torsions[1:] - torsions[:-1]))))
        correlations[coupled] = np.corrcoef(steps[:, tyr10], steps[:, trp9])[0, 1]
    assert correlations[True] > correlations[False] + 0.1, correlations
