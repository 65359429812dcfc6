"""Martini systems in water with ions, and virtual sites, against ``gmx mdrun -rerun``.

* Martini 3 proteins from martinize2 (vermouth's test outputs) solvated in Martini 3 water (W)
  with Na+/Cl- (SOD/CLA of the Martini 3 master topology in the mstool sdist), periodic,
  reaction field with the .mdp's settings read by :func:`gromacs.read_mdp`. Ubiquitin (neutral,
  cubic box), histatin 5 (+5 e, water-bias virtual sites built on one bead, rhombic
  dodecahedron) and lysozyme (tryptophan centre-of-mass virtual sites, elastic network).
* Martini 2 cholesterol in water with ions: ``virtual_sites3`` functions 1 and 4.
* A hand-made molecule with every supported ``virtual_sites2``/``virtual_sites3`` function.
* The .mdp reader: supported options against GROMACS, unsupported ones named with file and line.

The system builders are deterministic (seeded); the beads are placed on a jittered lattice
around the protein, not equilibrated: the comparison needs realistic distances, not a
physical state. Positions, virtual sites included, are written with 6 decimals so that
OpenMM and GROMACS evaluate the same coordinates.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import pytest

from openmmbackmap import gromacs
from openmmbackmap.errors import InputError
from openmmbackmap.martinize import (
    lattice, martini_mdp, molecule_charge, mstool_file, place_virtual_sites, solvate, split_martini3_itp,
)

from conftest import VERMOUTH_CASES
from test_gromacs import GMX, compare, gromacs_rerun, openmm_terms

needs_gmx = pytest.mark.skipif(GMX is None, reason="GROMACS (gmx_d or gmx) not installed")
#: Forces against single-precision ``gmx`` (relative to the largest force): restricted-bending
#: angles near 180 degrees in these unequilibrated proteins make float errors of 2e-4.
FORCE_RTOL = None if GMX is None or GMX.endswith("_d") else 1e-3

#: Martini 3 production settings (Souza et al. 2021 / cgmartini.nl "new-rf" parameters) with the
#: run options a real .mdp has; read_mdp must ignore those that do not change the potential.
MARTINI_MDP = """\
; Martini 3 production-style settings, rerun for energies and forces
integrator               = md
dt                       = 0.02
nsteps                   = 0
nstcomm                  = 100
comm-grps                = System
nstxout                  = 0
nstvout                  = 0
nstfout                  = 1
nstlog                   = 1
nstcalcenergy            = 1
nstenergy                = 1
nstxout-compressed       = 1000
compressed-x-precision   = 100
cutoff-scheme            = Verlet
nstlist                  = 20
ns_type                  = grid
pbc                      = xyz
verlet-buffer-tolerance  = -1
rlist                    = 1.3
coulombtype              = reaction-field
rcoulomb                 = 1.1
epsilon_r                = 15
epsilon_rf               = 0
vdw_type                 = cutoff
vdw-modifier             = Potential-shift-verlet
rvdw                     = 1.1
tcoupl                   = v-rescale
tc-grps                  = System
tau_t                    = 1.0
ref_t                    = 310
Pcoupl                   = no
gen_vel                  = no
constraints              = none
constraint_algorithm     = Lincs
"""


# --------------------------------------------------------------------------------------------
# Building solvated systems


@pytest.fixture(scope="session")
def martini3_split(tmp_path_factory, martini3_itp) -> Path:
    """The Martini 3 master topology split like the official files: force field
    (martini_v3.0.0.itp) and its W, SOD, CLA molecule types (martini_v3.0.0_solvents_ions.itp),
    so that other [ atomtypes ] (water-bias sites) can be included in between."""
    folder = tmp_path_factory.mktemp("martini3")
    split_martini3_itp(folder, martini3_itp)
    return folder


@pytest.fixture(scope="session")
def martini2_itps() -> Path:
    paths = [mstool_file(f"martini2.2/{name}") for name in
             ("martini_v2.2.itp", "martini_v2.0_ions.itp", "martini_v2.0_lipids_all_201506.itp")]
    if any(p is None for p in paths):
        pytest.skip("Martini 2.2 topologies not available (mstool sdist)")
    return paths[0].parent


def _dodecahedron(d: float) -> np.ndarray:
    """GROMACS's rhombic dodecahedron (xy-square) with image distance ``d``: OpenMM's reduced form."""
    return np.array([[d, 0, 0], [0, d, 0], [d / 2, d / 2, d * np.sqrt(0.5)]])


PROTEINS = {
    # name: (itp files, #includes between force field and molecules, box kind)
    "1UBQ": (("molecule_0.itp",), (), "cubic"),
    "hst5": (("molecule_0.itp", "virtual_sites_atomtypes.itp", "virtual_sites_nonbond_params.itp"),
             ("virtual_sites_atomtypes.itp", "virtual_sites_nonbond_params.itp"), "dodecahedron"),
    "lysozyme_prot": (("molecule_0.itp",), (), "cubic"),
}


def solvated_protein(name: str, folder: Path, martini3_split: Path, n_salt: int = 10):
    """Write topol.top and conf.gro of martinize2's ``name`` in W with ions; return
    (topology, positions, box) as read back."""
    itps, extra_includes, box_kind = PROTEINS[name]
    source = VERMOUTH_CASES / "tier-1" / name / "martinize2"
    for itp in itps:
        shutil.copyfile(source / itp, folder / itp)
    for itp in ("martini_v3.0.0.itp", "martini_v3.0.0_solvents_ions.itp"):
        os.symlink(martini3_split / itp, folder / itp)
    includes = ["martini_v3.0.0.itp", *extra_includes, "molecule_0.itp", "martini_v3.0.0_solvents_ions.itp"]
    header = "".join(f'#include "{i}"\n' for i in includes)
    (folder / "protein.top").write_text(header + "\n[ system ]\nprotein\n\n[ molecules ]\nmolecule_0 1\n")
    protein_top = gromacs.read_top(folder / "protein.top")

    protein = mdtraj.load(str(source / "cg.pdb")).xyz[0].astype(float)
    if len(protein) != protein_top.n_particles:
        raise AssertionError(f"{name}: cg.pdb has {len(protein)} beads, the itp {protein_top.n_particles}")
    size = float(np.ceil(np.ptp(protein, axis=0).max() + 1.4))
    box = np.diag([size] * 3) if box_kind == "cubic" else _dodecahedron(size)
    protein = protein - protein.mean(axis=0) + box.sum(axis=0) / 2
    water, cations, anions = solvate(protein, box, molecule_charge(protein_top, "molecule_0"), n_salt, seed=len(name))
    (folder / "topol.top").write_text(
        header + f"\n[ system ]\n{name} in Martini water with NaCl\n\n[ molecules ]\n"
        f"molecule_0 1\nW {len(water)}\nSOD {len(cations)}\nCLA {len(anions)}\n"
    )
    top = gromacs.read_top(folder / "topol.top")
    positions = place_virtual_sites(top, np.concatenate([protein, water, cations, anions]), box)
    gromacs.write_gro(folder / "conf.gro", top, positions, box, decimals=6)
    positions, box = gromacs.read_gro(folder / "conf.gro")
    return top, positions, box


def _report(label: str, omm_e: dict, errors: dict) -> None:
    print(f"\n{label} vs {GMX}: " + ", ".join(
        f"{k} {omm_e[k]:.6g} kJ/mol rel.err {v:.1e}" if k in omm_e else f"{k} {v:.1e}" for k, v in errors.items()))


def _potential_terms(energies: dict) -> dict:
    """GROMACS's energy terms that are parts of the potential (not pressure, temperature...)."""
    return {k: v for k, v in energies.items() if k in gromacs.FORCE_GROUPS or k == "Potential"}


# --------------------------------------------------------------------------------------------
# Martini 3 proteins in water with ions


@needs_gmx
@pytest.mark.parametrize("name", sorted(PROTEINS))
def test_martini3_protein_in_water_with_ions_matches_gromacs(tmp_path, martini3_split, name):
    top, positions, box = solvated_protein(name, tmp_path, martini3_split)
    (tmp_path / "martini.mdp").write_text(MARTINI_MDP)
    mdp = gromacs.read_mdp(tmp_path / "martini.mdp")
    counts = dict(top.molecules)
    assert counts["W"] > 500 and counts["SOD"] >= 10 and counts["CLA"] >= 10
    assert abs(sum(a.charge for a in top.particles())) < 1e-9  # neutralised

    gmx_e, gmx_f = gromacs_rerun(tmp_path, "topol.top", "conf.gro", mdp=MARTINI_MDP)
    system = top.create_system(box, mdp=mdp, split_nonbonded=True)
    omm_e, omm_f = openmm_terms(system, positions, box)
    sites = [i for i in range(system.getNumParticles()) if system.isVirtualSite(i)]
    real = [i for i in range(system.getNumParticles()) if not system.isVirtualSite(i)]
    errors = compare(_potential_terms(gmx_e), omm_e, gmx_f, omm_f, atoms=real, force_rtol=FORCE_RTOL)
    _report(f"{name} + {counts['W']} W + {counts['SOD']} SOD + {counts['CLA']} CLA "
            f"({top.n_particles} beads, {len(sites)} virtual sites)", omm_e, errors)
    assert {"LJ (SR)", "Coulomb (SR)", "Potential"} <= set(errors)
    assert abs(omm_e["Coulomb (SR)"]) > 10  # charged residues and ions interact
    if name == "hst5":
        assert len(sites) == 24  # one water-bias site per residue, on its backbone bead
    if name == "lysozyme_prot":
        moltype = top.molecule_types["molecule_0"]
        assert {(v.directive, v.func) for v in moltype.virtual_sites} == {("virtual_sitesn", 2)}
        assert len(sites) == len(moltype.virtual_sites) > 0
    # The default, combined non-bonded force agrees with the split one.
    combined_e, combined_f = openmm_terms(top.create_system(box, mdp=mdp), positions, box)
    assert combined_e["Potential"] == pytest.approx(omm_e["Potential"], rel=1e-10)
    np.testing.assert_allclose(combined_f, omm_f, rtol=0, atol=1e-8 * np.abs(omm_f).max())


# --------------------------------------------------------------------------------------------
# Martini 2 cholesterol (virtual_sites3 functions 1 and 4) in water with ions


@needs_gmx
def test_martini2_cholesterol_in_water_matches_gromacs(tmp_path, martini2_itps):
    for name in ("martini_v2.2.itp", "martini_v2.0_ions.itp", "martini_v2.0_lipids_all_201506.itp"):
        os.symlink(martini2_itps / name, tmp_path / name)
    header = ('#include "martini_v2.2.itp"\n#include "martini_v2.0_ions.itp"\n'
              '#include "martini_v2.0_lipids_all_201506.itp"\n')
    rng = np.random.default_rng(11)
    box = np.diag([4.6, 4.6, 4.6])
    # Cholesterol's 5 real beads from its rigid frame (bead 1 ROH ... 8 C2, sites 2, 5, 6),
    # as the constraints of the itp have them, then rotated and placed at random.
    (tmp_path / "one.top").write_text(header + "[ system ]\none\n\n[ molecules ]\nCHOL 1\n")
    one = gromacs.read_top(tmp_path / "one.top")
    template = _cholesterol_template(one)
    n_chol = 6
    chol = []
    centres = lattice(box, rng, density=n_chol / abs(np.linalg.det(box)) * 1.01, jitter=0.2)[:n_chol]
    for centre in centres:
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        # off the constrained geometry by a little, so that bonds and angles have energy
        chol.append((template - template.mean(axis=0)) @ q.T + centre + rng.normal(0, 0.02, template.shape))
    (tmp_path / "chol.top").write_text(header + f"[ system ]\nsterols\n\n[ molecules ]\nCHOL {n_chol}\n")
    chol = place_virtual_sites(gromacs.read_top(tmp_path / "chol.top"), np.concatenate(chol), box)
    water, cations, anions = solvate(chol, box, 0.0, 8, seed=5, clearance=0.45)
    (tmp_path / "topol.top").write_text(
        header + f"[ system ]\ncholesterol in water\n\n[ molecules ]\nCHOL {n_chol}\nW {len(water)}\n"
        f"NA {len(cations)}\nCL {len(anions)}\n")
    top = gromacs.read_top(tmp_path / "topol.top")
    moltype = top.molecule_types["CHOL"]
    assert sorted((v.directive, v.func) for v in moltype.virtual_sites) == [
        ("virtual_sites3", 1), ("virtual_sites3", 4), ("virtual_sites3", 4)]
    positions = place_virtual_sites(top, np.concatenate([chol, water, cations, anions]), box)
    gromacs.write_gro(tmp_path / "conf.gro", top, positions, box, decimals=6)
    positions, box = gromacs.read_gro(tmp_path / "conf.gro")

    (tmp_path / "martini2.mdp").write_text(MARTINI_MDP)
    gmx_e, gmx_f = gromacs_rerun(tmp_path, "topol.top", "conf.gro", mdp=MARTINI_MDP)
    system = top.create_system(box, mdp=tmp_path / "martini2.mdp", split_nonbonded=True)
    omm_e, omm_f = openmm_terms(system, positions, box)
    real = [i for i in range(system.getNumParticles()) if not system.isVirtualSite(i)]
    errors = compare(_potential_terms(gmx_e), omm_e, gmx_f, omm_f, atoms=real, force_rtol=FORCE_RTOL)
    _report(f"Martini 2 CHOL x{n_chol} + {len(water)} W + NaCl", omm_e, errors)
    for term in ("Bond", "G96Angle", "Improper Dih.", "LJ (SR)", "Coulomb (SR)"):
        assert abs(omm_e[term]) > 0.1, term


def _cholesterol_template(one: gromacs.GromacsTopology) -> np.ndarray:
    """Positions of one Martini 2 CHOL (8 beads) satisfying its constraints; sites (beads 2, 5,
    6) at 0, to be built."""
    moltype = one.molecule_types["CHOL"]
    lengths = {tuple(sorted(t.atoms)): t.params[0] for t in moltype.interactions if t.directive == "constraints"}
    x = np.zeros((8, 3))
    # triangle ROH(0)-R2(2)-R3(3), then C1(6) from its distances to R2 and R3 (out of plane),
    # then C2(7) on the line R3 -> C1 continued (bond 0.425 nm).
    d02, d03, d23 = lengths[(0, 2)], lengths[(0, 3)], lengths[(2, 3)]
    x[2] = [d02, 0, 0]
    cx = (d02**2 + d03**2 - d23**2) / (2 * d02)
    x[3] = [cx, np.sqrt(d03**2 - cx**2), 0]
    d26, d36 = lengths[(2, 6)], lengths[(3, 6)]
    # point at distance d26 from x2 and d36 from x3, lifted out of the ring plane
    mid = x[2] + (x[3] - x[2]) * (d26**2 - d36**2 + d23**2) / (2 * d23**2)
    h = np.sqrt(max(d26**2 - np.sum((mid - x[2]) ** 2), 0.0))
    perp = np.cross(x[3] - x[2], [0, 0, 1.0])
    perp /= np.linalg.norm(perp)
    x[6] = mid + h * (0.8 * perp + 0.6 * np.array([0, 0, 1.0]))
    tail = (x[6] - x[3]) / np.linalg.norm(x[6] - x[3])
    bent = tail + 0.4 * np.cross(tail, [0, 0, 1.0])  # about 20 degrees off the 180 of angle R3-C1-C2
    x[7] = x[6] + 0.425 * bent / np.linalg.norm(bent)
    return x


# --------------------------------------------------------------------------------------------
# Every supported virtual_sites2 / virtual_sites3 function


VSITES_TOP = """\
[ defaults ]
1 2

[ atomtypes ]
A  72.0 0.0 A 0.47 3.5
V   0.0 0.0 A 0.41 2.0

[ moleculetype ]
FRAME 1

[ atoms ]
 1 A 1 FRM A1 1  0.5
 2 A 1 FRM A2 2 -0.5
 3 A 1 FRM A3 3  0.3
 4 A 1 FRM A4 4 -0.3
 5 V 1 FRM S2 5  0.4 0.0
 6 V 1 FRM S3 6 -0.4 0.0
 7 V 1 FRM FD 7  0.2 0.0
 8 V 1 FRM FA 8 -0.2 0.0
 9 V 1 FRM OU 9  0.3 0.0
10 V 1 FRM SN 10 -0.3 0.0

[ bonds ]
1 2 1 0.35 5000 0.36 4000
2 3 1 0.40 5000
3 4 1 0.38 5000

[ angles ]
1 2 3 2 110 50
2 3 4 2 120 50

[ virtual_sites2 ]
5 1 4 1 0.3

[ virtual_sites3 ]
6 1 2 3 1 0.2 0.35
7 2 3 4 2 0.4 0.25
8 3 2 1 3 110 0.3
9 1 2 3 4 0.4 -0.3 2.5

[ virtual_sitesn ]
10 3 1 0.5 3 1.5 4 1.0

[ exclusions ]
1 5 6 7 8 9 10
2 5 6 7 8 9 10
3 5 6 7 8 9 10
4 5 6 7 8 9 10
5 6 7 8 9 10
6 7 8 9 10
7 8 9 10
8 9 10
9 10

[ system ]
virtual sites

[ molecules ]
FRAME 4
"""


@needs_gmx
def test_every_virtual_site_function_matches_gromacs(tmp_path):
    (tmp_path / "vsites.top").write_text(VSITES_TOP)
    top = gromacs.read_top(tmp_path / "vsites.top")
    kinds = {(v.directive, v.func) for v in top.molecule_types["FRAME"].virtual_sites}
    assert kinds == {("virtual_sites2", 1), ("virtual_sites3", 1), ("virtual_sites3", 2),
                     ("virtual_sites3", 3), ("virtual_sites3", 4), ("virtual_sitesn", 3)}
    rng = np.random.default_rng(3)
    box = np.diag([3.0, 3.2, 3.4])
    frames = []
    for k in range(4):
        x = np.array([[0, 0, 0], [0.35, 0, 0], [0.5, 0.37, 0], [0.8, 0.45, 0.2]]) + rng.normal(0, 0.04, (4, 3))
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        frames.append(np.concatenate([x @ q.T + rng.uniform(0, 3, 3), np.zeros((6, 3))]))
    positions = place_virtual_sites(top, np.concatenate(frames), box)
    gromacs.write_gro(tmp_path / "conf.gro", top, positions, box, decimals=7)
    positions, box = gromacs.read_gro(tmp_path / "conf.gro")

    # The sites where GROMACS puts them: check OpenMM's construction against the formulas.
    x = positions[:10]
    rij, rik = x[1] - x[0], x[2] - x[0]
    np.testing.assert_allclose(x[4], 0.7 * x[0] + 0.3 * x[3], atol=1e-6)
    np.testing.assert_allclose(x[5], x[0] + 0.2 * rij + 0.35 * rik, atol=1e-6)
    a, b, c = x[1], x[2], x[3]  # site 7 from atoms 2 3 4 (3fd, a 0.4, b 0.25)
    v = (b - a) + 0.4 * (c - b)
    np.testing.assert_allclose(x[6], a + 0.25 * v / np.linalg.norm(v), atol=1e-6)
    a, b, c = x[2], x[1], x[0]  # site 8 from 3 2 1, theta 110, d 0.3
    rij3, rjk3 = b - a, c - b
    perp = rjk3 - rij3 * (rij3 @ rjk3) / (rij3 @ rij3)
    expected = a + 0.3 * np.cos(np.radians(110)) * rij3 / np.linalg.norm(rij3) \
        + 0.3 * np.sin(np.radians(110)) * perp / np.linalg.norm(perp)
    np.testing.assert_allclose(x[7], expected, atol=1e-6)
    np.testing.assert_allclose(x[8], x[0] + 0.4 * rij - 0.3 * rik + 2.5 * np.cross(rij, rik), atol=1e-6)
    np.testing.assert_allclose(x[9], (0.5 * x[0] + 1.5 * x[2] + 1.0 * x[3]) / 3.0, atol=1e-6)

    gmx_e, gmx_f = gromacs_rerun(tmp_path, "vsites.top", "conf.gro", mdp=MARTINI_MDP)
    (tmp_path / "rerun2.mdp").write_text(MARTINI_MDP)
    system = top.create_system(box, mdp=tmp_path / "rerun2.mdp", split_nonbonded=True)
    omm_e, omm_f = openmm_terms(system, positions, box)
    real = [i for i in range(system.getNumParticles()) if not system.isVirtualSite(i)]
    errors = compare(_potential_terms(gmx_e), omm_e, gmx_f, omm_f, atoms=real, force_rtol=FORCE_RTOL)
    _report("virtual sites 2/3 (functions 1-4) and n", omm_e, errors)
    assert abs(omm_e["Coulomb (SR)"]) > 1 and abs(omm_e["LJ (SR)"]) > 1


# --------------------------------------------------------------------------------------------
# .mdp options


VARIANTS = {
    "reaction-field eps_rf 0": {},
    "reaction-field eps_rf 80, coulomb-modifier None": {"epsilon_rf": "80", "coulomb-modifier": "None"},
    "cut-off, potential-shift": {"coulombtype": "Cut-off", "coulomb-modifier": "Potential-shift"},
    "cut-off, no shift": {"coulombtype": "cut_off", "coulomb-modifier": "None"},
    "vdw-modifier None, rc 1.0": {"vdw-modifier": "None", "rvdw": "1.0", "rcoulomb": "1.0"},
}


def _mdp_with(changes: dict[str, str]) -> str:
    """:data:`MARTINI_MDP` with some options replaced (or added)."""
    return martini_mdp(base=MARTINI_MDP, **changes)


@pytest.fixture(scope="module")
def hst5_in_water(tmp_path_factory, martini3_split):
    folder = tmp_path_factory.mktemp("hst5")
    return folder, *solvated_protein("hst5", folder, martini3_split)


@needs_gmx
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_mdp_nonbonded_options_match_gromacs(hst5_in_water, variant):
    folder, top, positions, box = hst5_in_water
    text = _mdp_with(VARIANTS[variant])
    (folder / "variant.mdp").write_text(text)
    gmx_e, gmx_f = gromacs_rerun(folder, "topol.top", "conf.gro", mdp=text)
    system = top.create_system(box, mdp=folder / "variant.mdp", split_nonbonded=True)
    omm_e, omm_f = openmm_terms(system, positions, box)
    real = [i for i in range(system.getNumParticles()) if not system.isVirtualSite(i)]
    errors = compare(_potential_terms(gmx_e), omm_e, gmx_f, omm_f, atoms=real, force_rtol=FORCE_RTOL)
    _report(f"hst5 in water, {variant}", omm_e, errors)


def test_read_mdp_normalises_names_and_reads_defines(tmp_path):
    path = tmp_path / "run.mdp"
    path.write_text("; comment\nEpsilon_RF = 0 ; infinity\n\ndefine = -DFLEXIBLE -DPOSRES_FC=500\n"
                    "include = -I/ff/one -I../two\nvdwtype = cut-off\ntc_grps = Protein W_ION\n")
    mdp = gromacs.read_mdp(path)
    assert mdp == {"epsilon-rf": "0", "define": "-DFLEXIBLE -DPOSRES_FC=500", "include": "-I/ff/one -I../two",
                   "vdw-type": "cut-off", "tc-grps": "Protein W_ION"}
    assert mdp.lines == {"epsilon-rf": 2, "define": 4, "include": 5, "vdw-type": 6, "tc-grps": 7}
    assert mdp.defines == {"FLEXIBLE": "", "POSRES_FC": "500"}
    assert mdp.include_dirs == ["/ff/one", "../two"]
    # GROMACS's defaults where the file is silent: plain cut-off, epsilon_r 1, rc 1 nm
    settings = gromacs.nonbonded_settings(mdp)
    assert (settings.coulombtype, settings.epsilon_r, settings.epsilon_rf, settings.cutoff) == ("cut-off", 1.0, 0.0, 1.0)
    martini = gromacs.nonbonded_settings({"coulombtype": "Reaction-Field", "epsilon_r": 15, "rvdw": 1.1, "rcoulomb": 1.1})
    assert martini == gromacs.NonbondedSettings()


@pytest.mark.parametrize(
    "line, pattern",
    [
        ("coulombtype = PME", r"run\.mdp:3: coulombtype = PME: is not supported \(only reaction-field and cut-off\)"),
        ("vdw-modifier = Force-switch", r"run\.mdp:3: vdw-modifier = Force-switch: is not supported"),
        ("vdwtype = switch", r"run\.mdp:3: vdwtype = switch: is not supported"),
        ("rvdw = 1.2", r"run\.mdp:3: rvdw = 1\.2: is not supported \(must equal rcoulomb = 1\.1"),
        ("DispCorr = EnerPres", r"run\.mdp:3: DispCorr = EnerPres: is not supported \(only no\)"),
        ("free_energy = yes", r"run\.mdp:3: free_energy = yes: is not supported"),
        ("constraints = h-bonds", r"run\.mdp:3: constraints = h-bonds: is not supported \(only none\)"),
        ("pbc = xy", r"run\.mdp:3: pbc = xy: is not supported \(only xyz\)"),
        ("cutoff-scheme = group", r"run\.mdp:3: cutoff-scheme = group: is not supported \(only Verlet\)"),
        ("electric-field-x = 1 0.5 0 0", r"run\.mdp:3: electric-field-x = 1 0\.5 0 0: is not supported"),
        ("nwall = 2", r"run\.mdp:3: nwall = 2: is not supported"),
        ("epsilon_r = fifteen", r"run\.mdp:3: epsilon_r = fifteen: is not a number"),
        ("epsilon_r = 0", r"run\.mdp:3: epsilon_r = 0: is not supported"),
        ("rcoulomb = 1.0", r"run\.mdp:3: rcoulomb is given twice \(first on line 2\)"),
        ("coulombtype reaction-field", r"run\.mdp:3: expected 'option = value'"),
        ("define = FLEXIBLE", r"run\.mdp:3: define = FLEXIBLE: cannot read 'FLEXIBLE'"),
    ],
)
def test_unsupported_mdp_options_name_file_line_and_option(tmp_path, line, pattern):
    path = tmp_path / "run.mdp"
    path.write_text(f"nsteps = 0\nrcoulomb = 1.1\n{line}\n" + ("" if line.startswith("rvdw") else "rvdw = 1.1\n"))
    top = gromacs.read_top(Path(__file__).parent / "data" / "gromacs" / "toy" / "toy.top")
    with pytest.raises(InputError, match=pattern):
        mdp = gromacs.read_mdp(path)
        assert mdp.defines is not None
        top.create_system(np.diag([5.0] * 3), mdp=mdp)


def test_mdp_and_explicit_settings_are_exclusive():
    top = gromacs.read_top(Path(__file__).parent / "data" / "gromacs" / "toy" / "toy.top")
    with pytest.raises(InputError, match="either in the .mdp or as epsilon_r, not both"):
        top.create_system(np.diag([5.0] * 3), mdp={"coulombtype": "reaction-field"}, epsilon_r=15)
    with pytest.raises(InputError, match=r"pbc.*need a box"):
        top.create_system(None, mdp={"coulombtype": "reaction-field"})


def test_variable_precision_gro_round_trip(tmp_path):
    top = gromacs.read_top(Path(__file__).parent / "data" / "gromacs" / "toy" / "toy.top")
    rng = np.random.default_rng(0)
    positions = rng.uniform(0, 5, (top.n_particles, 3))
    box = np.array([[5.0, 0, 0], [0, 5.0, 0], [2.5, 2.5, 3.5355339]])
    for decimals in (3, 6, 9):
        gromacs.write_gro(tmp_path / "x.gro", top, positions, box, decimals=decimals)
        read, read_box = gromacs.read_gro(tmp_path / "x.gro")
        np.testing.assert_allclose(read, positions, atol=0.51 * 10.0**-decimals)
        np.testing.assert_allclose(read_box, box, atol=1e-5)
    assert not list(tmp_path.glob(".*partial*"))  # written atomically, nothing left behind


def test_state_b_parameters_are_read_and_ignored(tmp_path):
    (tmp_path / "vsites.top").write_text(VSITES_TOP)
    bond = gromacs.read_top(tmp_path / "vsites.top").molecule_types["FRAME"].interactions[0]
    assert (bond.directive, bond.func, bond.params) == ("bonds", 1, (0.35, 5000.0))


def test_site_on_one_atom_is_excluded_from_it_only_if_they_do_not_interact(tmp_path):
    # hst5's water-bias sites: no LJ with their backbone bead, no charge: excluded quietly
    text = VSITES_TOP.replace("10 3 1 0.5 3 1.5 4 1.0", "10 1 2")
    (tmp_path / "quiet.top").write_text(text.replace(" 9 V 1 FRM OU 9  0.3 0.0\n10 V 1 FRM SN 10 -0.3 0.0",
                                                     " 9 V 1 FRM OU 9  0.3 0.0\n10 Z 1 FRM SN 10 0.0 0.0")
                                        .replace("V   0.0 0.0 A 0.41 2.0", "V   0.0 0.0 A 0.41 2.0\nZ   0.0 0.0 A 0.0 0.0")
                                        .replace("2 5 6 7 8 9 10\n", "2 5 6 7 8 9\n"))
    top = gromacs.read_top(tmp_path / "quiet.top")
    system = top.create_system(np.diag([3.0] * 3))
    force = next(f for f in system.getForces() if isinstance(f, openmm.CustomNonbondedForce))
    exclusions = {tuple(sorted(force.getExclusionParticles(k))) for k in range(force.getNumExclusions())}
    assert (1, 9) in exclusions  # site 10 on atom 2
    # the same site with a charge would sit on its atom with infinite energy
    (tmp_path / "loud.top").write_text(text.replace("2 5 6 7 8 9 10\n", "2 5 6 7 8 9\n"))
    with pytest.raises(InputError, match=r"loud\.top:\d+: \[ virtual_sitesn \] virtual site 10 sits on atom 2"):
        gromacs.read_top(tmp_path / "loud.top").create_system(np.diag([3.0] * 3))
