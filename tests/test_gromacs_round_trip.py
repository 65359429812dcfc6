"""The GROMACS user's round trip (examples/gromacs_round_trip.py) at a tiny size, and what it rests on.

martinize2 on chignolin -> Martini water with NaCl -> GROMACS minimisation and Martini MD (.xtc)
-> ``backmap apply --cg-top`` on the solvated trajectory -> amber99sb-ildn in TIP3P written by
``write_gromacs`` -> GROMACS minimisation and MD. Each stage's outputs are checked, and the
bead selection of ``backmap apply --cg-top`` is tested on the run's own files: against a
selection made by hand, and on files that do not hold the model's beads.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from openmmbackmap import gromacs, io, martinize
from openmmbackmap.cli import main
from openmmbackmap.errors import InputError
from openmmbackmap.models import load_backmapper

from test_gromacs import GMX

pytestmark = pytest.mark.skipif(GMX is None, reason="GROMACS (gmx) not installed")

EXAMPLE = Path(__file__).parents[1] / "examples" / "gromacs_round_trip.py"
MODEL = io.bundled("models/cln025_martini3_ic.pt")
CG_STEPS, AA_STEPS = 500, 50  # Martini frames every CG_STEPS // 50 steps: 51 frames


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory, martini3_itp):
    """The example's output folder and summary, run as a user runs it."""
    out = tmp_path_factory.mktemp("round_trip")
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--out", str(out), "--cg-steps", str(CG_STEPS), "--aa-steps", str(AA_STEPS),
         "--em-steps", "200", "--threads", "1", "--seed", "3"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text()), result.stdout


def test_each_stage_of_the_round_trip(round_trip):
    out, summary, stdout = round_trip
    martini, backmapped, atomistic = summary["martini"], summary["backmap"], summary["atomistic"]

    # 1. martinize2 wrote a Martini 3 protein with its elastic network
    assert "-ff martini3001" in martini["martinize_command"] and "-elastic" in martini["martinize_command"]
    assert martini["elastic_bonds"] > 10
    # 2. solvated and neutral, minimised and run in GROMACS, trajectory written
    counts = martini["molecules"]
    assert counts["molecule_0"] == 1 and counts["W"] > 500 and counts["SOD"] - counts["CLA"] == 2  # chignolin: -2 e
    assert all(math.isfinite(e) and e < 0 for e in martini["potential_kj_mol"])
    assert 250 < martini["temperature_k_mean"] < 350
    md = mdtraj.load(martini["xtc"], top=martini["gro"])
    assert md.n_frames == 51 and md.n_atoms == sum(counts.values()) - 1 + 32  # protein: 32 beads
    # 3. backmapped every frame; the benchmark's structural checks pass
    checks = backmapped["checks"]
    assert checks["frames"] == 51
    assert checks["bond_score"] > 0.95 and checks["chirality_errors"] == 0 and checks["cis_peptides"] == 0
    assert "--cg-top" in backmapped["command"] and "$ backmap apply" in stdout
    # 4. amber99sb-ildn in TIP3P: GROMACS minimised it and ran MD with finite energies
    top = (out / "4_atomistic" / "topol.top").read_text()
    assert "[ settles ]" in top and "HOH" in top and atomistic["solvent_and_ion_atoms"] > 1000
    first, last = atomistic["em_potential_kj_mol"]
    assert last < first and last < 0
    assert len(atomistic["md_potential_kj_mol"]) >= 2
    assert all(math.isfinite(e) and e < 0 for e in atomistic["md_potential_kj_mol"])
    assert all(math.isfinite(t) and 100 < t < 500 for t in atomistic["md_temperature_k"])
    final = atomistic["final_checks"]
    assert final["bond_score"] > 0.98 and final["chirality_errors"] == 0 and final["cis_peptides"] == 0
    assert (out / "4_atomistic" / "md.gro").stat().st_size > 0


def test_apply_picks_the_protein_out_of_the_solvated_trajectory(round_trip, tmp_path):
    _, summary, _ = round_trip
    martini = summary["martini"]
    model = load_backmapper(MODEL)
    # by hand: the first 32 particles are the protein (molecule_0 comes first), made whole
    md = mdtraj.load(martini["xtc"], top=martini["gro"])
    beads = io.make_molecules_whole(md.xyz[:, :32], md.unitcell_vectors, model.mapping.cg_topology)
    expected = model(beads, seed=4)

    for cg_top in (martini["gro"], martini["top"]):  # the .gro, or GROMACS's .top with its #includes
        out = tmp_path / f"aa_{Path(cg_top).suffix[1:]}.xtc"
        assert main(["apply", "--model", str(MODEL), "--cg", martini["xtc"], "--cg-top", cg_top, "--out", str(out),
                     "--seed", "4"]) == 0
        atoms = io.load_trajectory(out, model.topology)
        assert atoms.n_frames == md.n_frames
        np.testing.assert_allclose(atoms.xyz, expected, atol=1.1e-3)  # xtc precision
        # where the beads are (the preliminary model does not put every bead's atoms on it: compare centroids)
        centroids = np.linalg.norm(model.mapping.map(atoms.xyz).mean(1) - beads.mean(1), axis=-1)
        assert centroids.max() < 0.3
    # without --cg-top the solvated trajectory is refused: it holds more than the model's beads
    result = subprocess.run([str(Path(sys.executable).with_name("backmap")), "apply", "--model", str(MODEL),
                             "--cg", martini["xtc"], "--out", str(tmp_path / "x.xtc")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and f"has {md.n_atoms} atoms but the topology 'model cln025_martini3_ic.pt' has 32" \
        in result.stderr


def test_find_model_beads_refuses_what_does_not_match(round_trip, tmp_path):
    _, summary, _ = round_trip
    gro = Path(summary["martini"]["gro"])
    mapping = load_backmapper(MODEL).mapping
    assert gromacs.find_model_beads(gro, mapping).tolist() == list(range(32))
    lines = gro.read_text().splitlines()

    # a renamed bead: the error names the bead, the model's residue and the file's line
    renamed = list(lines)
    k = next(i for i, line in enumerate(lines) if line[5:10].strip() == "TRP" and line[10:15].strip() == "SC2")
    renamed[k] = renamed[k][:10] + "  SC9" + renamed[k][15:]
    (tmp_path / "renamed.gro").write_text("\n".join(renamed) + "\n")
    with pytest.raises(InputError, match=rf"renamed\.gro: no run of particles matches the 32 beads .* differs at model "
                                         rf"bead 24 \(SC2 of TRP9\): the file has particle 24 SC9 of TRP9 \(line {k + 1}\)"):
        gromacs.find_model_beads(tmp_path / "renamed.gro", mapping)

    # two copies of the protein: ambiguous, refused
    n = int(lines[1])
    doubled = [lines[0], str(n + 32), *lines[2:2 + n], *lines[2:34], lines[2 + n]]
    (tmp_path / "doubled.gro").write_text("\n".join(doubled) + "\n")
    with pytest.raises(InputError, match=rf"holds 2 copies of the 32 beads .* at particles 1-32, {n + 1}-{n + 32}"):
        gromacs.find_model_beads(tmp_path / "doubled.gro", mapping)

    # a model whose beads are not in the system at all; a .tpr (binary) is named as such
    ala2 = load_backmapper(io.bundled("models/ala2_backbone_ic.pt")).mapping
    with pytest.raises(InputError, match=r"none of its \d+ particles is the model's first bead C of residue ACE"):
        gromacs.find_model_beads(gro, ala2)
    with pytest.raises(InputError, match=r"md\.tpr'?: unsupported format '\.tpr'.*gmx editconf"):
        gromacs.find_model_beads(gro.with_name("md.tpr"), mapping)

    # through the command line: exit status 1, the message, no output written
    result = subprocess.run([str(Path(sys.executable).with_name("backmap")), "apply", "--model", str(MODEL),
                             "--cg", summary["martini"]["xtc"], "--cg-top", str(tmp_path / "renamed.gro"),
                             "--out", str(tmp_path / "never.xtc")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.startswith("backmap: error: ") and "SC9 of TRP9" in result.stderr
    assert not (tmp_path / "never.xtc").exists()


def test_martinize_output_and_elastic_bonds(round_trip):
    out, summary, _ = round_trip
    folder = out / "1_martinize"
    itp = (folder / "molecule_0.itp").read_text()
    rubber = itp.split("; Rubber band\n", 1)[1].split("\n\n", 1)[0].splitlines()
    cg = martinize.MartinizeOutput(top=folder / "protein.top", itps=(folder / "molecule_0.itp",),
                                   cg_pdb=folder / "cg.pdb", includes=("martini.itp", "molecule_0.itp"),
                                   molecules=(("molecule_0", 1),), command=())
    bonds = cg.elastic_bonds()
    assert len(bonds) == len(rubber) == summary["martini"]["elastic_bonds"]
    i, j, r, k = bonds[0]
    assert rubber[0].split()[:2] == [str(i + 1), str(j + 1)] and k == 700.0 and 0.3 < r < 0.9
    # the bonds are in the topology read for OpenMM, between backbone beads
    top = gromacs.read_top(summary["martini"]["top"])
    protein = top.molecule_types["molecule_0"]
    pairs = {tuple(t.atoms) for t in protein.interactions if t.directive == "bonds"}
    assert all((a, b) in pairs and protein.atoms[a].name == protein.atoms[b].name == "BB" for a, b, *_ in bonds)


def test_martinize_errors_name_the_input_and_martinize2s_message(tmp_path):
    with pytest.raises(InputError, match=r"martinize2 input '.*absent\.pdb' does not exist"):
        martinize.martinize(tmp_path / "absent.pdb", tmp_path / "out")
    bad = tmp_path / "bad.pdb"
    bad.write_text("ATOM      1  CA  ALA A   1    not-a-number\nEND\n")
    with pytest.raises(InputError, match=r"(?s)martinize2 failed on '.*bad\.pdb' \(exit status \d+.*\):\n.*Error"):
        martinize.martinize(bad, tmp_path / "out", secondary_structure="C")
    assert not (tmp_path / "out" / "protein.top").exists()
