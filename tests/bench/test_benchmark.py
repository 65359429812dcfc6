"""`backmap bench` end to end: files in, matched, scored with every metric, report out."""

import json

import numpy as np
import openmm.app as app
import pytest

from openmmbackmap import InputError, io
from openmmbackmap.bench.benchmark import run_benchmark
from openmmbackmap.bench.report import HEADLINES
from openmmbackmap.cli import main


@pytest.fixture(scope="module")
def candidates(tmp_path_factory, ala2):
    """Real reference frames turned into candidates with known defects, written as files."""
    topology, xyz = ala2
    folder = tmp_path_factory.mktemp("candidates")
    rng = np.random.default_rng(11)
    time = np.arange(1, len(xyz) + 1, dtype=np.float32)
    shuffled = xyz[rng.permutation(len(xyz))]  # a frame-by-frame "backmapper" that ignores time
    noisy = xyz + rng.normal(scale=0.01, size=xyz.shape).astype(np.float32)
    io.write_trajectory(folder / "shuffled.xtc", shuffled, topology, time=time)
    io.write_trajectory(folder / "noisy.dcd", noisy, topology)
    # heavy atoms only, in a PDB of its own: a tool that writes no hydrogens
    modeller = app.Modeller(topology, [(0, 0, 0)] * topology.getNumAtoms())  # positions unused
    heavy = [a.index for a in topology.atoms() if a.element.symbol != "H"]
    modeller.delete([a for a in modeller.topology.atoms() if a.element.symbol == "H"])
    io.write_trajectory(folder / "heavy.pdb", xyz[:50, heavy], modeller.topology)
    return folder


def test_bench_scores_planted_defects_and_the_reference_itself(tmp_path, ala2_paths, candidates):
    topology, reference = ala2_paths
    written = run_benchmark(
        topology=topology, reference=reference, out_dir=tmp_path / "report",
        candidates=[reference, candidates / "shuffled.xtc", candidates / "noisy.dcd"], readiness_frames=3,
    )
    cards = written["cards"]
    itself, shuffled, noisy = cards["ala2.xtc"], cards["shuffled.xtc"], cards["noisy.dcd"]
    # the reference scored against itself has every ideal value
    assert itself["bonds"]["bond_score"] == 1 and itself["stereochemistry"]["chirality"]["total"] == 0
    assert itself["distributions"]["jsd_dihedrals"] == 0 and itself["accuracy"]["rmsd_heavy_nm"] == 0
    assert itself["time"]["temporal_coherence"] == pytest.approx(1) and itself["time"]["kinetics"]["ratio"] == pytest.approx(1)
    assert itself["readiness"]["fraction_stable"] == 1
    # shuffling in time keeps every distribution but breaks accuracy, coherence and kinetics
    assert shuffled["distributions"]["jsd_bonds"] < 1e-3 and shuffled["distributions"]["basin_difference_points"] == 0
    assert shuffled["accuracy"]["rmsd_heavy_nm"] > 0.05
    assert shuffled["time"]["temporal_coherence"] > 1.4 and shuffled["time"]["kinetics"]["ratio"] < 0.3
    # 0.01 nm noise on every coordinate ruins bond lengths (XTC precision is 0.001 nm)
    assert noisy["bonds"]["bond_score"] < 0.8 and noisy["distributions"]["jsd_bonds"] > 0.3
    # files: strict JSON (no NaN), a Markdown table with reference column, plots
    data = json.loads(written["json"].read_text())
    assert set(data["candidates"]) == {"ala2.xtc", "shuffled.xtc", "noisy.dcd"}
    report = written["markdown"].read_text()
    assert "| bond score (within 10%) | 1 | - | 1 |" in report
    assert all(path.exists() and path.stat().st_size > 1000 for path in written["plots"])
    assert {p.name for p in written["plots"]} >= {"ramachandran.png", "rmsd.png", "worst_bonds.png"}
    assert len(HEADLINES) >= 20


def test_heavy_only_candidate_with_its_own_topology_keeps_chirality(tmp_path, ala2_paths, candidates, ala2):
    topology, reference = ala2_paths
    heavy = candidates / "heavy.pdb"
    with pytest.raises(InputError, match="12 atoms cannot be matched"):
        run_benchmark(topology=topology, reference=reference, candidates=[heavy], out_dir=tmp_path / "x",
                      readiness_frames=0)
    assert not (tmp_path / "x").exists()
    # mirror image of the candidate: every chiral centre flips, even without hydrogens
    mirrored = tmp_path / "mirrored.pdb"
    heavy_topology, _ = io.load_topology(heavy)
    xyz = io.load_trajectory(heavy, heavy_topology).xyz * np.array([-1, 1, 1], dtype=np.float32)
    io.write_trajectory(mirrored, xyz, heavy_topology)
    written = run_benchmark(topology=topology, reference=reference, candidates=[heavy, mirrored],
                            out_dir=tmp_path / "heavy", heavy_only=True, readiness_frames=0)
    cards = written["cards"]
    assert cards["heavy.pdb"]["stereochemistry"]["chirality"]["total"] == 0
    assert cards["mirrored.pdb"]["stereochemistry"]["chirality"]["frames_with_error"] == 1.0
    assert "readiness" not in cards["heavy.pdb"]
    assert "accuracy" not in cards["heavy.pdb"]  # 50 candidate frames, 1000 reference frames: not paired


def test_backmap_bench_command(tmp_path, ala2_paths, candidates, capsys):
    topology, reference = ala2_paths
    assert main(["bench", "-t", str(topology), "-r", str(reference), "-c", str(candidates / "shuffled.xtc"),
                 "--out", str(tmp_path / "report"), "--readiness-frames", "0", "--stride", "2"]) == 0
    out = capsys.readouterr().out
    assert "| temporal coherence (step RMSD ratio) | 1 |" in out and "500 frames, stride 2" in out
    assert (tmp_path / "report" / "results.json").exists()


def test_peers_run_on_cg_images_of_the_reference_and_are_scored_alike(tmp_path):
    from openmmbackmap.bench.peers import get_peer

    available, reason = get_peer("cgback").available()
    if not available:
        pytest.skip(f"cgback cannot run here: {reason}")
    from conftest import VERMOUTH_CASES

    trp_cage = VERMOUTH_CASES / "tier-0" / "mini-protein3_trp-cage" / "aa.pdb"  # heavy atoms only
    written = run_benchmark(topology=trp_cage, reference=trp_cage, candidates=[], peers=["cgback"], peer_frames=1,
                            out_dir=tmp_path / "report", heavy_only=True, readiness_frames=0)
    card = written["cards"]["cgback"]
    assert "1 backmapped" in card["peer"]
    assert card["bonds"]["bond_score"] > 0.95
    assert card["accuracy"]["rmsd_backbone_nm"] < 0.1  # C-alpha input: the backbone follows it closely
    assert (tmp_path / "report" / "peers" / "cgback" / "frame000000_cg.pdb").exists()
    with pytest.raises(InputError, match="unknown peer 'nope'"):
        run_benchmark(topology=trp_cage, reference=trp_cage, candidates=[], peers=["nope"],
                      out_dir=tmp_path / "x", heavy_only=True, readiness_frames=0)
