"""GROMACS files through the command line: ``backmap apply`` on CG trajectories written by
GROMACS (.xtc, .trr, .gro), ``backmap bench`` with a GROMACS .gro or .top topology and a .trr
reference.

The CG trajectory is the bundled alanine dipeptide run mapped to the ``backbone`` scheme (what
the bundled ``ala2_backbone_ic`` model takes), then rewritten by ``gmx trjconv``/``gmx editconf``,
so the files are GROMACS's own.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from openmmbackmap import data, gromacs, io
from openmmbackmap.cli import main

from test_gromacs import GMX

pytestmark = pytest.mark.skipif(GMX is None, reason="GROMACS (gmx_d or gmx) not installed")

FRAMES = 40


def _gmx(args: list[str], cwd: Path, stdin: str = "0\n") -> None:
    result = subprocess.run([GMX, "-quiet", *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"gmx {args[0]}: {result.stderr[-2000:]}"


@pytest.fixture(scope="module")
def gromacs_files(tmp_path_factory, ala2_paths):
    """Atomistic reference (.gro topology, .trr, .top) and its backbone CG image (.gro, .xtc,
    .trr, multi-frame .gro), all written by GROMACS tools (the .top by write_gromacs)."""
    folder = tmp_path_factory.mktemp("gmxfiles")
    topology, xyz = io.load_topology(ala2_paths[0])
    reference = io.load_trajectory(ala2_paths[1], topology)[:FRAMES]
    io.write_trajectory(folder / "aa_mdtraj.xtc", reference.xyz, topology, time=reference.time,
                        unitcell_vectors=np.tile(np.diag([3.0] * 3), (FRAMES, 1, 1)))
    _gmx(["editconf", "-f", str(ala2_paths[0]), "-o", "aa.gro", "-box", "3", "-noc"], folder)
    _gmx(["trjconv", "-f", "aa_mdtraj.xtc", "-s", "aa.gro", "-o", "aa.trr"], folder)
    gromacs.write_gromacs(topology, xyz, data.reference_system(topology, ["amber99sbildn.xml"]),
                          folder / "aa_written.gro", folder / "aa.top")

    assert main(["map", "-s", "backbone", "-t", str(ala2_paths[0]), "-f", str(folder / "aa_mdtraj.xtc"),
                 "-o", str(folder / "cg_mdtraj.xtc")]) == 0
    _gmx(["editconf", "-f", "cg_mdtraj.pdb", "-o", "cg.gro", "-box", "3", "-noc"], folder)
    _gmx(["trjconv", "-f", "cg_mdtraj.xtc", "-s", "cg.gro", "-o", "cg.xtc"], folder)
    _gmx(["trjconv", "-f", "cg_mdtraj.xtc", "-s", "cg.gro", "-o", "cg.trr"], folder)
    _gmx(["trjconv", "-f", "cg_mdtraj.xtc", "-s", "cg.gro", "-o", "cg_frames.gro"], folder)
    return folder


@pytest.mark.parametrize("cg_file", ["cg.xtc", "cg.trr", "cg_frames.gro", "cg.gro"])
def test_apply_reads_gromacs_cg_trajectories(gromacs_files, cg_file, capsys):
    model = io.bundled("models/ala2_backbone_ic.pt")
    out = gromacs_files / f"aa_from_{Path(cg_file).stem}.xtc"
    assert main(["apply", "--model", str(model), "--cg", str(gromacs_files / cg_file), "--out", str(out)]) == 0
    frames = 1 if cg_file == "cg.gro" else FRAMES
    topology, _ = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    atoms = io.load_trajectory(out, topology)
    assert atoms.n_frames == frames
    # GROMACS's file held the CG frames that backmap map wrote (xtc precision, 0.001 nm)
    cg = mdtraj.load(str(gromacs_files / cg_file), top=str(gromacs_files / "cg_mdtraj.pdb"))
    original = mdtraj.load(str(gromacs_files / "cg_mdtraj.xtc"), top=str(gromacs_files / "cg_mdtraj.pdb"))
    np.testing.assert_allclose(cg.xyz, original.xyz[:frames], atol=1.1e-3)
    assert "frames/s" in capsys.readouterr().out


@pytest.mark.parametrize("topology_file", ["aa.gro", "aa.top"])
def test_bench_takes_gromacs_topology_and_trr_reference(gromacs_files, topology_file):
    model = io.bundled("models/ala2_backbone_ic.pt")
    candidate = gromacs_files / "candidate.xtc"
    if not candidate.exists():
        assert main(["apply", "--model", str(model), "--cg", str(gromacs_files / "cg.xtc"), "--out", str(candidate)]) == 0
    report = gromacs_files / f"report_{Path(topology_file).suffix[1:]}"
    assert main(["bench", "-t", str(gromacs_files / topology_file), "-r", str(gromacs_files / "aa.trr"),
                 "-c", str(candidate), "--out", str(report), "--readiness-frames", "0"]) == 0
    card = json.loads((report / "results.json").read_text())["candidates"]["candidate.xtc"]
    assert card["bonds"]["bond_score"] > 0.9
    assert card["stereochemistry"]["chirality"]["total"] == 0
