"""The gan family across molecules: force-field geometry, one generator for several molecules, transfer.

A transferable ``gan`` works about the force field's bond lengths and angles (not a data set's),
trains on several molecules at once and is applied to one it never saw (`backmap transfer`).
Tiny models train for one epoch on a few frames of the bundled alanine dipeptide and chignolin
runs (one thread); the shipped transferable model (trained on seven hexapeptides,
examples/make_transfer_peptides.py) is scored on bundled chignolin frames.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import openmmbackmap
from openmmbackmap import InputError, MappingError, io
from openmmbackmap.bench import structural
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.cli import main
from openmmbackmap.data import reference_system
from openmmbackmap.mapping import Mapping
from openmmbackmap.models import load_backmapper, read_metadata
from openmmbackmap.models.gan import (
    BOLTZMANN, ForceFieldPrior, build_environment, forcefield_closure_statistics,
)
from openmmbackmap.models.ic import closure_statistics
from openmmbackmap.training import transfer_gan

SHIPPED = Path(openmmbackmap.__file__).parent / "data" / "models"
CHIGNOLIN = "chignolin/reference/cln025_000"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def chignolin():
    """(topology, folded structure, 500 frames of segment 0) of the bundled chignolin run."""
    topology, positions = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    xyz = io.load_trajectory(io.bundled(CHIGNOLIN + ".xtc"), topology).xyz
    return topology, positions, xyz


@pytest.fixture(scope="module")
def chignolin_prior(chignolin):
    return ForceFieldPrior(reference_system(chignolin[0]))


def test_forcefield_geometry_comes_from_the_system(chignolin, chignolin_prior):
    """Every row's bond is the force field's, with spread sqrt(kT/k); angles likewise; closures near the data's."""
    topology, positions, xyz = chignolin
    mapping = Mapping.from_scheme(topology, "ca")
    environment = build_environment(mapping, chignolin_prior, None, template=positions, temperature=300.0)
    lengths, angles = chignolin_prior.reference_geometry(300.0)
    rows = environment.zmatrix.rows
    for k, (x, a, b, _) in enumerate(rows):
        assert environment.r0[k] == pytest.approx(lengths[(min(x, a), max(x, a))][0])
    force_constants = {tuple(sorted(pair)): k for pair, (_, k) in zip(chignolin_prior.bond_atoms.tolist(),
                                                                       chignolin_prior.bond_params.tolist())}
    harmonic = [k for k, (x, a, *_) in enumerate(rows) if (min(x, a), max(x, a)) in force_constants]
    assert len(harmonic) > 30
    for k in harmonic:
        x, a = rows[k, :2]
        assert environment.r_scale[k] == pytest.approx(math.sqrt(BOLTZMANN * 300.0 / force_constants[(min(x, a), max(x, a))]))
    held = [k for k, (x, a, b, _) in enumerate(rows) if (min(x, b), a, max(x, b)) in angles]
    assert len(held) > 100 and all(environment.theta0[k] == pytest.approx(angles[tuple(
        (min(rows[k, 0], rows[k, 2]), rows[k, 1], max(rows[k, 0], rows[k, 2])))][0]) for k in held)
    # The force field's closures against the data's: the same lengths to within 0.015 nm.
    ff_mean, ff_spread = forcefield_closure_statistics(environment.zmatrix, chignolin_prior)
    data_mean, data_spread = closure_statistics(xyz, environment.zmatrix)
    assert np.abs(ff_mean - data_mean).max() < 0.015 and np.median(ff_spread / data_spread) == pytest.approx(1.0, abs=0.3)
    # Different from the data's geometry (which the old models keep): the data's means are measured.
    data = build_environment(mapping, chignolin_prior, xyz)
    assert not np.allclose(data.r0, environment.r0)


def test_forcefield_geometry_refusals(ala2, chignolin, chignolin_prior):
    topology, positions, _ = chignolin
    with pytest.raises(MappingError, match="template"):
        build_environment(Mapping.from_scheme(topology, "ca"), chignolin_prior, None)
    ala2_topology, xyz = ala2
    with pytest.raises(MappingError, match="anchored mapping"):
        build_environment(Mapping.from_scheme(ala2_topology, "residue_com"), ForceFieldPrior(reference_system(ala2_topology)),
                          None, template=xyz[0])


def test_train_on_two_molecules_and_transfer_to_a_third_topology(ala2_paths, chignolin, tmp_path, monkeypatch, capsys):
    """backmap train --transferable on alanine dipeptide and chignolin, then backmap transfer to chignolin's `ca`.

    One generator serves both molecules (the validation scores each); the transferred model
    carries exactly the trained generator, builds chignolin's atoms on its C-alpha beads and
    records where it came from; a gan trained on the data's geometry is refused.
    """
    ala2_topology_path, ala2_xtc = ala2_paths
    chignolin_xtc = io.bundled(CHIGNOLIN + ".xtc")
    model = tmp_path / "two_gan.pt"
    arguments = ["train", "--family", "gan", "--transferable", "--scheme", "backbone", "--train", str(ala2_xtc),
                 str(chignolin_xtc), "--every", "10", "--out", str(model), "--max-epochs", "1", "--hidden", "16"]
    monkeypatch.setattr("sys.argv", ["backmap", *arguments])
    assert main(arguments) == 0
    assert "and 1 more molecules: TYR" in capsys.readouterr().out
    provenance = read_metadata(model)["provenance"]
    assert provenance["options"]["geometry"] == "forcefield"
    assert [m["residues"].split("-")[1] for m in provenance["molecules"]] == ["ALA", "TYR"]
    assert [m["frames_train"] for m in provenance["molecules"]] == [80, 40]
    assert len(provenance["data"]["train"]) == 2
    assert len(read_metadata(model)["validation"]["selection"]["molecules"]) == 2

    transferred = tmp_path / "cln025_ca_from_two.pt"
    arguments = ["transfer", "--model", str(model), "--topology", str(io.bundled("chignolin/cln025.pdb")), "--scheme", "ca",
                 "--out", str(transferred)]
    monkeypatch.setattr("sys.argv", ["backmap", *arguments])
    assert main(arguments) == 0
    source, target = load_backmapper(model), load_backmapper(transferred)
    assert target.n_atoms == 166 and target.metadata.provenance["transferred_from"]["sha256"] == io.file_sha256(model)
    assert source.rejection and target.rejection  # both commands wrap by default (models.rejection)
    weights = source.module.backmapper.generator.state_dict()
    assert len(weights) and all(torch.equal(v, target.module.backmapper.generator.state_dict()[k]) for k, v in weights.items())
    topology, _, xyz = chignolin
    cg = target.mapping.map(xyz[:20])
    out = target(cg, seed=3)
    assert out.shape == (20, 166, 3) and np.isfinite(out).all()
    np.testing.assert_allclose(target.mapping.map(out), cg, atol=1e-5)  # C-alpha atoms sit on their beads
    with pytest.raises(InputError, match="force-field geometry"):
        transfer_gan(SHIPPED / "ala2_backbone_gan.pt", target.mapping, xyz[0])
    with pytest.raises(InputError, match=r"template must have shape \(166, 3\)"):
        transfer_gan(model, target.mapping, xyz[0, :10])
    capsys.readouterr()
    assert main(["train", "--family", "ic", "--transferable", "--scheme", "ca", "--train", str(chignolin_xtc),
                 "--out", str(tmp_path / "ic.pt")]) == 1
    assert "--transferable is an option of the gan family" in capsys.readouterr().err
    assert not (tmp_path / "ic.pt").exists()


def test_rows_that_keep_a_side_are_found_in_the_template(chignolin, chignolin_prior):
    """The rows whose side is imposed: every improper that is chiral in the template (a C-alpha's HA,
    Thr's CG2 and HB, a CH2's second hydrogen), and the N of a C-alpha, its last substituent, which the
    `ca` mapping places by a proper torsion from the C-alpha trace; none of the planar impropers (a carbonyl O, an amide or ring
    H). Every one of the 11 chiral centres is guarded, with the template's side: mirrored, every side
    is reversed."""
    from openmmbackmap.bench.structure import TopologyFeatures

    topology, positions, _ = chignolin
    mapping = Mapping.from_scheme(topology, "ca")
    environment = build_environment(mapping, chignolin_prior, None, template=positions)
    atoms = list(topology.atoms())
    rows = environment.zmatrix.rows
    guarded = np.flatnonzero(environment.chirality)
    names = {atoms[rows[k, 0]].name for k in guarded}
    assert {"HA", "CB", "HB", "CG2", "HB3"} <= names and not names & {"O", "H", "HE1", "HD1", "HH2"}
    proper = [k for k in guarded if not environment.zmatrix.improper[k]]
    assert {atoms[rows[k, 0]].name for k in proper} == {"N"}
    centres = TopologyFeatures.from_topology(topology).chiral_centres
    assert len(centres) == 11 and {int(rows[k, 1]) for k in guarded} >= set(centres[:, 0].tolist())
    mirrored = build_environment(mapping, chignolin_prior, None, template=positions * np.array([1.0, 1.0, -1.0]))
    np.testing.assert_array_equal(mirrored.chirality, -environment.chirality)
    # Peptide bonds: the row placing N(i+1) between CA(i+1) and C(i) completes the omega and holds it
    # trans (cos < 0), for every bond but Asp3-Pro4 (a proline may be cis); cis and trans are their
    # own mirror images.
    amide = np.flatnonzero(environment.amide_side)
    assert [f"{atoms[rows[k, 0]].residue.name}:{atoms[rows[k, 0]].name}" for k in amide] == [
        "TYR:N", "ASP:N", "GLU:N", "THR:N", "GLY:N", "THR:N", "TRP:N", "TYR:N"]
    assert (environment.amide_side[amide] == -1).all()
    np.testing.assert_array_equal(mirrored.amide_side, environment.amide_side)


def test_shipped_transferable_model_on_chignolin_which_it_never_saw(chignolin):
    """peptides_ca_gan.pt (seven hexapeptides, no chignolin) made into a chignolin model and run on 100
    frames of held-out segment 2: bonds within 10 %, every chiral centre and peptide bond right, C-alpha
    on the beads. Its handedness is the imposed one: the same generator with the signs left free
    inverts centres."""
    source = SHIPPED / "peptides_ca_gan.pt"
    provenance = read_metadata(source)["provenance"]
    assert provenance["options"]["geometry"] == "forcefield" and source.stat().st_size < 1_000_000
    assert len(provenance["molecules"]) == 7 and all("peptides" in entry["file"] for entry in provenance["data"]["train"])
    topology, positions, _ = chignolin
    mapping = Mapping.from_scheme(topology, "ca")
    module = transfer_gan(source, mapping, positions).module
    held_out = io.load_trajectory(io.bundled("chignolin/reference/cln025_002.xtc"), topology).xyz[::5]
    cg = torch.tensor(mapping.map(held_out))
    out = np.concatenate([module(cg, None, seed).numpy() for seed in (1, 2)])
    reference = np.concatenate([held_out, held_out])
    features = TopologyFeatures.from_topology(topology)
    assert structural.bond_score(out, reference, features) >= 0.99
    assert structural.chirality_errors(out, reference, features)["total"] == 0
    assert structural.cis_peptides(out, features)["total"] == 0
    np.testing.assert_allclose(mapping.map(out), np.concatenate([cg.numpy()] * 2), atol=1e-5)
    module.chirality.zero_()
    assert structural.chirality_errors(module(cg, None, 1).numpy(), held_out, features)["total"] > 0
