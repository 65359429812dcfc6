"""The `backmap` command: help, map, schemes, demo, and bad input (clear error, exit 1, no output left)."""

import json
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from openmmbackmap import io
from openmmbackmap.cli import main
from openmmbackmap.mapping import Mapping

from conftest import VERMOUTH_CASES

BACKMAP = str(Path(sys.executable).with_name("backmap"))  # the installed console script


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BACKMAP, *args], capture_output=True, text=True, timeout=300)


def test_help_lists_only_working_commands_and_each_has_help():
    result = _run("--help")
    assert result.returncode == 0
    section = result.stdout.split("COMMAND\n", 1)[1].split("\n\n", 1)[0]
    listed = [line.split()[0] for line in section.splitlines()]
    assert listed == ["map", "schemes", "train", "transfer", "reject", "apply", "cgforce", "bench", "switch", "demo"]
    for command in listed:
        sub = _run(command, "--help")
        assert sub.returncode == 0 and f"usage: backmap {command}" in sub.stdout


def test_map_martini3_writes_trajectory_topology_and_mapping(tmp_path):
    aa = VERMOUTH_CASES / "tier-1" / "1UBQ" / "aa.pdb"
    out = tmp_path / "cg" / "ubq_cg.xtc"
    result = _run("map", "--scheme", "martini3", "--topology", str(aa), "--traj", str(aa), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "660 atoms -> 166 beads" in result.stdout
    cg = mdtraj.load(str(out), top=str(out.with_suffix(".pdb")))
    assert cg.n_atoms == 166 and cg.n_frames == 1
    mapping = Mapping.load(out.with_suffix(".mapping.json"))
    reference = mdtraj.load(str(VERMOUTH_CASES / "tier-1" / "1UBQ" / "martinize2" / "cg.pdb"))
    assert np.abs(cg.xyz - reference.xyz).max() < 0.01
    assert mapping.n_beads == 166


def test_map_trajectory_in_chunks_equals_mapping_in_memory(tmp_path, ala2_paths, ala2):
    topology, xyz = ala2
    out = tmp_path / "bb.dcd"
    assert main(["map", "-t", str(ala2_paths[0]), "-f", str(ala2_paths[1]), "-s", "backbone",
                 "-o", str(out), "--chunk", "300", "--stride", "2"]) == 0
    cg = mdtraj.load(str(out), top=str(out.with_suffix(".pdb")))
    expected = Mapping.from_scheme(topology, "backbone").map(xyz[::2])
    assert cg.n_frames == 500
    np.testing.assert_allclose(cg.xyz, expected, atol=2e-4)  # DCD stores Angstrom in float32


def test_map_with_a_mapping_file(tmp_path, ala2_paths):
    ndx = tmp_path / "groups.ndx"
    ndx.write_text("[ A ]\n1 2 3 4 5 6\n[ B ]\n7 8 9 10 11 12 13 14 15 16\n[ C ]\n17 18 19 20 21 22\n")
    out = tmp_path / "cg.xtc"
    assert main(["map", "-t", str(ala2_paths[0]), "-f", str(ala2_paths[1]), "-m", str(ndx), "-o", str(out)]) == 0
    assert mdtraj.load(str(out), top=str(out.with_suffix(".pdb"))).n_atoms == 3


def test_schemes_lists_the_builtin_schemes(capsys):
    assert main(["schemes"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["ca", "backbone", "residue_com", "heavy_com", "martini3", "martini22", "elnedyn22"]


def test_demo_runs_a_multiscale_simulation(tmp_path):
    result = _run("demo", "--out-dir", str(tmp_path), "--steps", "4000")
    assert result.returncode == 0, result.stderr
    assert "4000 CG steps, 2 switches (2 accepted)" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["switches"] == 2 and summary["chirality_errors"] == 0
    assert summary["median_energy_kj_mol"]["energy_relaxed"] < summary["median_energy_kj_mol"]["energy_backmapped"]
    assert mdtraj.load(str(tmp_path / "atomistic.xtc"), top=str(io.bundled("alanine_dipeptide/ala2.pdb"))).n_frames == 2
    assert (tmp_path / "switches.png").stat().st_size > 0 and (tmp_path / "config.yaml").exists()


def _nan_trajectory(tmp_path, ala2):
    topology, xyz = ala2
    bad = xyz[:5].copy()
    bad[3, 8] = np.nan
    path = tmp_path / "nan.dcd"
    mdtraj.Trajectory(bad, io.to_mdtraj_topology(topology)).save(str(path))
    return path


@pytest.mark.parametrize("case", ["missing_atom", "atom_count", "nan", "unknown_residue", "missing_file"])
def test_bad_input_is_a_clear_error_and_leaves_no_output(tmp_path, ala2_paths, ala2, case):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "cg.xtc"
    top, traj = str(ala2_paths[0]), str(ala2_paths[1])
    if case == "missing_atom":
        template = tmp_path / "m.yaml"
        template.write_text("residues:\n  ACE: {A: [C]}\n  ALA: {B: [CA, CQ]}\n  NME: {C: [N]}\n")
        args, expected = ["-m", str(template)], "names atom CQ, which residue ALA 2"
    elif case == "atom_count":
        traj = str(VERMOUTH_CASES / "tier-1" / "1UBQ" / "aa.pdb")
        args, expected = ["-s", "ca"], "1UBQ/aa.pdb"
    elif case == "nan":
        traj = str(_nan_trajectory(tmp_path, ala2))
        args, expected = ["-s", "ca"], "nan.dcd': frame 3 has non-finite coordinates (NaN or infinity) at atom CA"
    elif case == "unknown_residue":
        args, expected = ["-s", "martini3"], "no martini3001 mapping for residue"
    else:
        traj = str(tmp_path / "absent.xtc")
        args, expected = ["-s", "ca"], "absent.xtc' does not exist"
    result = _run("map", "-t", top, "-f", traj, "-o", str(out), *args)
    assert result.returncode == 1
    assert expected in result.stderr
    assert result.stderr.startswith("backmap: error: ")
    assert list(out_dir.iterdir()) == []


def test_unknown_scheme_is_refused_by_the_parser(ala2_paths, tmp_path):
    result = _run("map", "-t", str(ala2_paths[0]), "-s", "martini4", "-o", str(tmp_path / "x.xtc"))
    assert result.returncode == 2 and "invalid choice: 'martini4'" in result.stderr


def test_train_then_apply_then_bench_on_the_bundled_run(tmp_path, ala2_paths):
    """The whole loop through the command line: a tiny ic model, backmapping, scoring."""
    topology, trajectory = ala2_paths
    model = tmp_path / "ala2_backbone.pt"
    result = _run("train", "--scheme", "backbone", "--train", str(trajectory), "--out", str(model),
                  "--max-epochs", "2", "--seed", "3")
    assert result.returncode == 0, result.stderr
    from openmmbackmap.models import read_metadata

    metadata = read_metadata(model)
    assert metadata["family"] == "ic" and metadata["provenance"]["command"].startswith("backmap train --scheme backbone")
    cg = tmp_path / "cg.xtc"
    assert main(["map", "-s", "backbone", "-t", str(topology), "-f", str(trajectory), "-o", str(cg)]) == 0
    out = tmp_path / "aa.dcd"
    result = _run("apply", "--model", str(model), "--cg", str(cg), "--out", str(out), "--samples", "2", "--seed", "5")
    assert result.returncode == 0, result.stderr
    samples = [tmp_path / f"aa.sample{k}.dcd" for k in range(2)]
    assert all(path.exists() for path in samples) and not out.exists()
    first = mdtraj.load(str(samples[0]), top=str(topology))
    second = mdtraj.load(str(samples[1]), top=str(topology))
    assert first.n_frames == 1000 and np.abs(first.xyz - second.xyz).max() > 0  # independent samples
    report = tmp_path / "report"
    assert main(["bench", "-t", str(topology), "-r", str(trajectory), "-c", str(samples[0]), "--out", str(report),
                 "--readiness-frames", "0"]) == 0
    import json

    card = json.loads((report / "results.json").read_text())["candidates"]["aa.sample0.dcd"]
    assert card["stereochemistry"]["chirality"]["total"] == 0 and card["bonds"]["bond_score"] > 0.99


def test_apply_refuses_a_cg_trajectory_with_other_beads(tmp_path, ala2_paths):
    topology, trajectory = ala2_paths
    cg = tmp_path / "cg.xtc"
    assert main(["map", "-s", "ca", "-t", str(topology), "-f", str(trajectory), "-o", str(cg)]) == 0
    model = io.bundled("models/ala2_backbone_ic.pt")
    result = _run("apply", "--model", str(model), "--cg", str(cg), "--out", str(tmp_path / "aa.xtc"))
    assert result.returncode == 1
    assert "has 1 atoms but the topology 'model ala2_backbone_ic.pt' has 5" in result.stderr
    assert not (tmp_path / "aa.xtc").exists()


def test_cgforce_training_refuses_data_without_unrounded_positions(tmp_path):
    prefix = str(io.bundled("alanine_dipeptide/ala2.pdb")).removesuffix(".pdb")
    result = _run("cgforce", "train", "--data", prefix, "--out", str(tmp_path / "cgff.pt"))
    assert result.returncode == 1
    assert "no unrounded positions" in result.stderr and "ala2.positions.npy missing" in result.stderr
    assert not (tmp_path / "cgff.pt").exists()


def _system_with_solvent(tmp_path, ala2, frames: int = 20):
    """A CG 'system': 3 solvent particles, the 5 backbone beads of alanine dipeptide, 4 more
    solvent particles; its .gro and .xtc (3 nm box), and the beads alone as .xtc."""
    import openmm.app as app

    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "backbone")
    beads = mapping.map(xyz[:frames])
    system = app.Topology()
    chain = system.addChain()
    for k in range(3):
        system.addAtom("W", None, system.addResidue("W", chain, str(k + 1)))
    residues = {}
    for bead, atom in zip(mapping.beads, mapping.cg_topology.atoms()):
        residue = atom.residue
        if residue.index not in residues:
            residues[residue.index] = system.addResidue(residue.name, chain, residue.id)
        system.addAtom(bead.name, None, residues[residue.index])
    for k in range(4):
        system.addAtom("W", None, system.addResidue("W", chain, str(k + 10)))
    rng = np.random.default_rng(0)
    xyz_system = np.concatenate([rng.uniform(0, 3, (frames, 3, 3)), beads, rng.uniform(0, 3, (frames, 4, 3))], axis=1)
    box = np.tile(np.diag([3.0] * 3), (frames, 1, 1))
    io.write_trajectory(tmp_path / "system.gro", xyz_system[0], system, unitcell_vectors=box[:1])
    io.write_trajectory(tmp_path / "system.xtc", xyz_system, system, unitcell_vectors=box)
    io.write_trajectory(tmp_path / "beads.xtc", beads, mapping.cg_topology, unitcell_vectors=box)
    return tmp_path / "system.gro", tmp_path / "system.xtc", tmp_path / "beads.xtc"


def test_apply_with_cg_top_picks_the_models_beads_out_of_a_larger_system(tmp_path, ala2):
    gro, system_xtc, beads_xtc = _system_with_solvent(tmp_path, ala2)
    model = str(io.bundled("models/ala2_backbone_ic.pt"))
    assert main(["apply", "-m", model, "--cg", str(system_xtc), "--cg-top", str(gro), "-o", str(tmp_path / "a.xtc"),
                 "--seed", "2"]) == 0
    assert main(["apply", "-m", model, "--cg", str(beads_xtc), "-o", str(tmp_path / "b.xtc"), "--seed", "2"]) == 0
    topology = ala2[0]
    picked = io.load_trajectory(tmp_path / "a.xtc", topology)
    direct = io.load_trajectory(tmp_path / "b.xtc", topology)
    assert picked.n_frames == 20
    np.testing.assert_array_equal(picked.xyz, direct.xyz)


@pytest.mark.parametrize("case", ["renamed", "missing", "tpr"])
def test_apply_with_cg_top_refuses_files_without_the_models_beads(tmp_path, ala2, case):
    gro, system_xtc, _ = _system_with_solvent(tmp_path, ala2, frames=2)
    if case == "renamed":
        lines = gro.read_text().splitlines()
        k = next(i for i, line in enumerate(lines) if line[5:10].strip() == "ALA" and line[10:15].strip() == "CA")
        lines[k] = lines[k][:10] + "   CB" + lines[k][15:]
        gro.write_text("\n".join(lines) + "\n")
        expected = f"differs at model bead 3 (CA of ALA2): the file has particle 6 CB of ALA2 (line {k + 1})"
    elif case == "missing":
        gro = tmp_path / "absent.gro"
        expected = "absent.gro' does not exist"
    else:
        gro = tmp_path / "run.tpr"
        gro.write_bytes(b"\x00binary")
        expected = "unsupported format '.tpr'; supported: .gro, .pdb, .top (convert a .tpr with gmx editconf"
    out = tmp_path / "out.xtc"
    result = _run("apply", "--model", str(io.bundled("models/ala2_backbone_ic.pt")), "--cg", str(system_xtc),
                  "--cg-top", str(gro), "--out", str(out))
    assert result.returncode == 1 and result.stderr.startswith("backmap: error: ")
    assert expected in result.stderr
    assert not out.exists()


def test_train_records_and_warns_about_mixed_temperatures(tmp_path, capsys):
    """Chignolin segments 0 (300 K) and 1 (450 K): the model would learn their mixture; train says so and
    records each file's temperature (read from the provenance JSON beside it)."""
    segments = [io.bundled(f"chignolin/reference/cln025_00{k}.xtc") for k in (0, 1)]
    model = tmp_path / "mixed.pt"
    assert main(["train", "--scheme", "ca", "--train", *map(str, segments), "--every", "25", "--max-epochs", "1",
                 "--out", str(model)]) == 0
    assert "warning: the training files were simulated at 300, 450 K" in capsys.readouterr().out
    from openmmbackmap.models import read_metadata

    assert [entry["temperature_K"] for entry in read_metadata(model)["provenance"]["data"]["train"]] == [300.0, 450.0]
    assert main(["train", "--scheme", "ca", "--train", str(segments[0]), "--every", "25", "--max-epochs", "1",
                 "--out", str(model)]) == 0
    assert "warning" not in capsys.readouterr().out
