"""Rejection of defective frames: the criteria on real reference frames and planted defects, the wrapper on shipped models."""

import argparse
from typing import Optional

import numpy as np
import pytest
import torch

from openmmbackmap import io
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.errors import InputError
from openmmbackmap.models import load_backmapper, save_backmapper
from openmmbackmap.training import TrainingResult
from openmmbackmap.models.rejection import (
    RejectionSampler,
    add_rejection,
    clash_pairs,
    trans_peptide_bonds,
    without_rejection,
)


def _checker(topology) -> RejectionSampler:
    """The criteria alone (the wrapped module is never called)."""
    return RejectionSampler(torch.nn.Identity(), *clash_pairs(topology), trans_peptide_bonds(topology))


@pytest.fixture(scope="module")
def chignolin():
    topology, native = io.load_topology(io.bundled("chignolin/cln025.pdb"))
    xyz = io.load_trajectory(io.bundled("chignolin/reference/cln025_002.xtc"), topology).xyz
    return topology, xyz


@pytest.fixture(scope="module")
def rejecting_ic(tmp_path_factory):
    """The shipped chignolin ic model, wrapped (it ships without: redrawing costs it its speed target)."""
    path = tmp_path_factory.mktemp("models") / "cln025_ca_ic_rejecting.pt"
    return load_backmapper(add_rejection(io.bundled("models/cln025_ca_ic.pt"), path))


def test_pairs_are_heavy_atoms_more_than_three_bonds_apart():
    topology, _ = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    features = TopologyFeatures.from_topology(topology)
    first, second, min_distance = clash_pairs(topology, min_ratio=0.75)
    assert len(first) > 0 and (first < second).all()
    assert features.heavy[first].all() and features.heavy[second].all()
    assert not np.asarray(features.within_three_bonds[first, second]).any()
    carbon_carbon = [k for k, (i, j) in enumerate(zip(first, second))
                     if features.elements[i] == "C" and features.elements[j] == "C"]
    np.testing.assert_allclose(min_distance[carbon_carbon], 0.75 * 0.34)
    with pytest.raises(InputError, match="min_ratio"):
        clash_pairs(topology, min_ratio=1.5)


def test_reference_frames_pass_and_a_planted_clash_is_caught(chignolin):
    """Premise of the criterion: MD frames are never redrawn; two heavy atoms pushed together are."""
    topology, xyz = chignolin
    module = _checker(topology)
    assert not module.defective(torch.from_numpy(xyz)).any()
    planted = xyz[:3].copy()
    tyr1_oh = next(a.index for a in topology.atoms() if a.residue.index == 0 and a.name == "OH")
    gly7_ca = next(a.index for a in topology.atoms() if a.residue.index == 6 and a.name == "CA")
    planted[1, tyr1_oh] = planted[1, gly7_ca] + [0.2, 0.0, 0.0]  # 2.0 A: an O-C pair allowed 2.42 A
    np.testing.assert_array_equal(module.clashing(torch.from_numpy(planted)).numpy(), [False, True, False])


def _turn_cis(xyz: np.ndarray, row: np.ndarray) -> np.ndarray:
    """The part of the chain after the peptide bond ``row`` (CA, C, N, CA) spun half a turn about C-N."""
    turned = xyz.copy()
    c, n = row[1], row[2]
    after = np.arange(n, xyz.shape[-2])
    axis = (xyz[n] - xyz[c]) / np.linalg.norm(xyz[n] - xyz[c])
    relative = xyz[after] - xyz[n]
    turned[after] = xyz[n] + 2 * np.outer(relative @ axis, axis) - relative
    return turned


def test_cis_peptides_before_anything_but_proline_are_caught(chignolin):
    """Planted defects: GLY 7 - THR 8 turned cis is caught, ASP 3 - PRO 4 turned cis is allowed; and
    the check agrees frame by frame with the benchmark's omega definition on a model's output."""
    from openmmbackmap import geometry

    topology, xyz = chignolin
    features = TopologyFeatures.from_topology(topology)
    module = _checker(topology)
    before_proline = features.omega_residues.index("PRO")
    assert len(trans_peptide_bonds(topology)) == len(features.omegas) - 1
    frame = xyz[0]
    planted = np.stack([frame, _turn_cis(frame, features.omegas[6]), _turn_cis(frame, features.omegas[before_proline])])
    assert (np.abs(geometry.dihedrals(planted, features.omegas[[6, before_proline]])) < np.pi / 2).tolist() == [
        [False, False], [True, False], [False, True]]
    np.testing.assert_array_equal(module.cis(torch.from_numpy(planted)).numpy(), [False, True, False])
    cvae = without_rejection(load_backmapper(io.bundled("models/cln025_ca_cvae.pt")))  # its own first-frame path: a few cis here
    drawn = cvae(cvae.mapping.map(np.repeat(xyz[481:482], 2000, axis=0)), seed=5)
    expected = (np.abs(geometry.dihedrals(drawn, trans_peptide_bonds(topology))) < np.pi / 2).any(axis=1)
    assert expected.sum() > 0
    np.testing.assert_array_equal(module.cis(torch.from_numpy(drawn)).numpy(), expected)


def test_shipped_model_with_rejection_clashes_far_less_and_is_reproducible(chignolin, rejecting_ic):
    """The chignolin ic model draws clashing side chains in most frames; redrawn, few remain. Frames
    whose first draw was clean are untouched, so the model's distribution elsewhere is its own."""
    topology, xyz = chignolin
    raw = without_rejection(rejecting_ic)
    assert raw.rejection is None and isinstance(rejecting_ic.module.backmapper, torch.jit.ScriptModule)
    cg = raw.mapping.map(xyz[:100])
    np.testing.assert_array_equal(raw(cg, seed=3), load_backmapper(io.bundled("models/cln025_ca_ic.pt"))(cg, seed=3))
    first, second, min_distance = clash_pairs(topology)
    module = _checker(topology)
    raw_out = raw(cg, seed=3)
    out = rejecting_ic(cg, seed=3)
    raw_clashing = module.defective(torch.from_numpy(raw_out)).numpy()
    clashing = module.defective(torch.from_numpy(out)).numpy()
    assert raw_clashing.mean() > 0.5
    assert clashing.mean() < 0.1
    np.testing.assert_array_equal(out[~raw_clashing], raw_out[~raw_clashing])
    np.testing.assert_array_equal(rejecting_ic(cg, seed=3), out)
    assert {k: rejecting_ic.rejection[k] for k in ("min_ratio", "rounds", "clash_pairs", "peptide_bonds")} == {
        "min_ratio": 0.75, "rounds": 32, "clash_pairs": len(first), "peptide_bonds": 8}
    # a model without redraws is returned as it is
    assert without_rejection(raw) is raw


def test_shipped_temporal_model_along_a_trajectory_clashes_far_less(chignolin, tmp_path):
    """The shipped cvae redraws along its trajectories (conditioned on the previous frame, then on its
    first-frame path): hardly any defective frame is left."""
    topology, xyz = chignolin
    shipped = load_backmapper(io.bundled("models/cln025_ca_cvae.pt"))
    raw = without_rejection(shipped)
    model = RejectionSampler(raw.module, *clash_pairs(topology), trans_peptide_bonds(topology), rounds=8)
    path = save_backmapper(model, tmp_path / "cvae.pt", family="cvae", mapping=raw.mapping,
                           provenance={**raw.metadata.provenance, "rejection": {"rounds": 8}})
    model = load_backmapper(path)
    assert model.temporal
    cg = raw.mapping.map(xyz[:60])
    module = _checker(topology)

    def clashing(samples: np.ndarray) -> float:
        return float(module.defective(torch.from_numpy(samples.reshape(-1, *samples.shape[2:]))).float().mean())

    assert clashing(raw.trajectory(cg, samples=4, seed=2)) > 0.3
    assert clashing(model.trajectory(cg, samples=4, seed=2)) < 0.05


def test_wrapping_twice_is_refused(rejecting_ic, tmp_path):
    with pytest.raises(InputError, match="already"):
        add_rejection(rejecting_ic.path, tmp_path / "twice.pt")
    with pytest.raises(InputError, match="rounds"):
        RejectionSampler(torch.nn.Identity(), np.zeros(1, int), np.ones(1, int), np.ones(1), np.zeros((0, 4), int), rounds=-1)


def test_reject_command_wraps_a_file_once(tmp_path, monkeypatch, capsys):
    from openmmbackmap.cli import main

    out = tmp_path / "wrapped.pt"
    arguments = ["reject", "--model", str(io.bundled("models/ala2_backbone_ic.pt")), "--out", str(out), "--rejection-rounds", "4"]
    assert main(arguments) == 0
    wrapped, raw = load_backmapper(out), load_backmapper(io.bundled("models/ala2_backbone_ic.pt"))
    assert wrapped.rejection["rounds"] == 4 and wrapped.rejection["peptide_bonds"] == 2
    cg = raw.mapping.map(io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))[1])
    np.testing.assert_array_equal(wrapped(cg, seed=1), raw(cg, seed=1))  # a sound first draw is kept as drawn
    assert main(["reject", "--model", str(out), "--out", str(tmp_path / "again.pt")]) == 1
    assert "redraws defective frames already" in capsys.readouterr().err
    assert main(["reject", "--model", str(out), "--out", str(tmp_path / "zero.pt"), "--rejection-rounds", "0"]) == 1
    assert not (tmp_path / "again.pt").exists() and not (tmp_path / "zero.pt").exists()


class _Stub(torch.nn.Module):
    """A temporal model that draws a clashing frame whenever it is given a previous frame."""

    def __init__(self, sound: np.ndarray, clashing: np.ndarray):
        super().__init__()
        self.register_buffer("sound", torch.from_numpy(sound))
        self.register_buffer("clashing", torch.from_numpy(clashing))

    def forward(self, cg: torch.Tensor, previous: Optional[torch.Tensor], seed: int) -> torch.Tensor:
        frame = self.clashing if previous is not None else self.sound
        return frame.unsqueeze(0).repeat(cg.size(0), 1, 1)


def test_a_previous_state_that_cannot_fit_falls_back_to_the_first_frame_path(chignolin):
    """Every draw given the previous frame clashes, so only the first-frame path can give a sound frame."""
    topology, xyz = chignolin
    clashing = xyz[0].copy()
    tyr1_oh = next(a.index for a in topology.atoms() if a.residue.index == 0 and a.name == "OH")
    gly7_ca = next(a.index for a in topology.atoms() if a.residue.index == 6 and a.name == "CA")
    clashing[tyr1_oh] = clashing[gly7_ca] + [0.2, 0.0, 0.0]
    stub = _Stub(xyz[1], clashing)
    cg = torch.zeros(3, 10, 3)
    previous = torch.from_numpy(xyz[:3])
    sampler = torch.jit.script(RejectionSampler(stub, *clash_pairs(topology), trans_peptide_bonds(topology), rounds=2))
    np.testing.assert_array_equal(sampler(cg, previous, 1).numpy(), np.repeat(xyz[1:2], 3, axis=0))
    never = RejectionSampler(stub, *clash_pairs(topology), trans_peptide_bonds(topology), rounds=0)
    np.testing.assert_array_equal(never(cg, previous, 1).numpy(), np.repeat(clashing[None], 3, axis=0))


def test_bad_options_fail_before_training_and_large_molecules_are_left_unwrapped(tmp_path, monkeypatch):
    from openmmbackmap.cli import main
    from openmmbackmap.models import rejection

    segment = io.bundled("alanine_dipeptide/ala2.xtc")
    for option, value in (("--rejection-rounds", "-1"), ("--clash-min-ratio", "1.5")):
        arguments = ["train", "--scheme", "backbone", "--train", str(segment), "--out", str(tmp_path / "m.pt"), option, value]
        assert main(arguments) == 1  # refused at once: no training ran, no file
        assert not (tmp_path / "m.pt").exists()
    topology, _ = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    monkeypatch.setattr(rejection, "MAX_PAIRS", 10)
    with pytest.raises(rejection.TooManyPairs, match="pairs to check"):
        clash_pairs(topology)
    shipped = load_backmapper(io.bundled("models/ala2_backbone_ic.pt"))
    result = TrainingResult(shipped.module, shipped.mapping, "ic", dict(shipped.metadata.provenance), {})
    options = rejection.configure_parser(argparse.ArgumentParser()).parse_args([])
    with pytest.warns(UserWarning, match="will not redraw"):
        rejection.apply_options(result, options)
    assert result.module is shipped.module and "rejection" not in result.provenance
    monkeypatch.setattr(rejection, "MAX_PAIRS", 2_000_000)
    rejection.apply_options(result, options)  # what training and transfer do before they save
    assert isinstance(result.module, RejectionSampler) and result.provenance["rejection"]["clash_pairs"] == 15
