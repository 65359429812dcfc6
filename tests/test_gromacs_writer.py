"""Atomistic output for GROMACS: :func:`gromacs.write_gromacs` files that ``gmx grompp`` accepts
and whose ``gmx mdrun -rerun`` energies, term by term, are OpenMM's for the same System.

Alanine dipeptide with amber99sbildn in vacuum (``data.reference_system``: ``NoCutoff``, bonds to
hydrogen constrained). GROMACS 2022 has no vacuum mode, so it runs the molecule alone in a 6 nm
box with 2.9 nm plain cut-offs and no potential shift (``coulombtype = cut-off``,
``coulomb-modifier = None``, ``vdw-modifier = None``): every atom pair of the 1 nm molecule is
inside the cut-off and unshifted, which is OpenMM's ``NoCutoff``.
"""

from __future__ import annotations

import subprocess

import numpy as np
import openmm
import openmm.app as app
import pytest

from openmmbackmap import data, gromacs, io
from openmmbackmap.errors import InputError

from test_gromacs import GMX, gromacs_rerun

needs_gmx = pytest.mark.skipif(GMX is None, reason="GROMACS (gmx_d or gmx) not installed")

#: parmed writes fudgeQQ with 6 digits (0.833333 for 1/1.2) and force constants with 6 decimals;
#: GROMACS's 1/(4 pi eps0) differs from OpenMM's by 1e-8: per-term relative tolerance.
WRITER_RTOL = 1e-5 if GMX is not None and GMX.endswith("_d") else 1e-3

VACUUM_MDP = """\
integrator              = md
nsteps                  = 0
cutoff-scheme           = Verlet
pbc                     = xyz
nstlist                 = 10
verlet-buffer-tolerance = -1
rlist                   = 2.9
coulombtype             = cut-off
coulomb-modifier        = None
rcoulomb                = 2.9
epsilon_r               = 1
vdwtype                 = cut-off
vdw-modifier            = None
rvdw                    = 2.9
DispCorr                = no
constraints             = none
nstcalcenergy           = 1
nstenergy               = 1
nstfout                 = 1
"""


@pytest.fixture(scope="module")
def ala2_system():
    topology, xyz = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    return topology, xyz, data.reference_system(topology, ["amber99sbildn.xml"])


def _split_terms(system: openmm.System, topology: app.Topology, positions: np.ndarray) -> dict[str, float]:
    """OpenMM's energy of ``system`` split into GROMACS's terms (names as ``gmx energy``'s)."""
    bonded = {frozenset((b.atom1.index, b.atom2.index)) for b in topology.bonds()}
    xml = openmm.XmlSerializer.serialize(system)

    def energy(edit) -> float:
        """Energy of the one force ``edit`` picks (by index) and possibly changes, alone."""
        copy = openmm.XmlSerializer.deserialize(xml)
        keep = edit(copy)
        for k in reversed(range(copy.getNumForces())):
            if k != keep:
                copy.removeForce(k)
        context = openmm.Context(copy, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(positions)
        return context.getState(getEnergy=True).getPotentialEnergy()._value

    def find(copy, kind) -> int:
        return next(k for k in range(copy.getNumForces()) if isinstance(copy.getForce(k), kind))

    def torsions(proper: bool):
        def edit(copy):
            index = find(copy, openmm.PeriodicTorsionForce)
            force = copy.getForce(index)
            for k in range(force.getNumTorsions()):
                *atoms, n, phase, kk = force.getTorsionParameters(k)
                is_proper = all(frozenset(p) in bonded for p in zip(atoms, atoms[1:]))
                if is_proper != proper:
                    force.setTorsionParameters(k, *atoms, n, phase, 0.0)
            return index
        return edit

    def nonbonded(pairs_14: bool, lj: bool):
        def edit(copy):
            index = find(copy, openmm.NonbondedForce)
            force = copy.getForce(index)
            for i in range(force.getNumParticles()):
                q, sigma, eps = force.getParticleParameters(i)
                force.setParticleParameters(i, 0.0 if (pairs_14 or lj) else q, sigma, 0.0 if (pairs_14 or not lj) else eps)
            for k in range(force.getNumExceptions()):
                i, j, qq, sigma, eps = force.getExceptionParameters(k)
                force.setExceptionParameters(k, i, j, 0.0 if (not pairs_14 or lj) else qq, sigma,
                                             0.0 if (not pairs_14 or not lj) else eps)
            return index
        return edit

    return {
        "Bond": energy(lambda c: find(c, openmm.HarmonicBondForce)),
        "Angle": energy(lambda c: find(c, openmm.HarmonicAngleForce)),
        "Proper Dih.": energy(torsions(True)),
        "Per. Imp. Dih.": energy(torsions(False)),
        "LJ-14": energy(nonbonded(True, True)),
        "Coulomb-14": energy(nonbonded(True, False)),
        "LJ (SR)": energy(nonbonded(False, True)),
        "Coulomb (SR)": energy(nonbonded(False, False)),
        "Potential": _total(system, positions),
    }


def _total(system, positions) -> float:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context.getState(getEnergy=True).getPotentialEnergy()._value


@needs_gmx
def test_written_alanine_dipeptide_runs_in_gromacs_with_openmm_energies(tmp_path, ala2_system):
    topology, xyz, system = ala2_system
    assert system.getNumConstraints() == 12  # bonds to hydrogen
    gro, top = gromacs.write_gromacs(topology, xyz, system, tmp_path / "ala2.gro", tmp_path / "ala2.top",
                                     box_vectors=np.diag([6.0, 6.0, 6.0]))
    text = top.read_text()
    bonds = text.split("[ bonds ]")[1].split("[")[0]
    connections = [line for line in bonds.splitlines() if line.split()[2:] == ["5"]]
    constraints = text.split("[ constraints ]")[1].split("[")[0].strip().splitlines()[1:]
    assert len(connections) == len(constraints) == 12  # H bonds: connection + constraint
    assert not list(tmp_path.glob(".*partial*"))

    # grompp accepts the files as written (no -maxwarn), and mdrun -rerun gives the energies
    (tmp_path / "check.mdp").write_text(VACUUM_MDP)
    result = subprocess.run([GMX, "-quiet", "grompp", "-f", "check.mdp", "-c", gro.name, "-p", top.name,
                             "-o", "check.tpr", "-po", "mdout.mdp"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    gmx_e, _ = gromacs_rerun(tmp_path, top.name, gro.name, mdp=VACUUM_MDP)

    positions, box = gromacs.read_gro(gro)  # what GROMACS read (3 decimals)
    omm_e = _split_terms(system, topology, positions)
    errors = {name: abs(omm_e[name] - gmx_e[name]) / max(abs(gmx_e[name]), 1.0) for name in omm_e}
    print(f"\nala2 amber99sbildn vacuum, write_gromacs vs {GMX}: " + ", ".join(
        f"{k} {omm_e[k]:.6g} (GROMACS {gmx_e[k]:.6g}) rel.err {v:.1e}" for k, v in errors.items()))
    bad = {k: (omm_e[k], gmx_e[k]) for k, v in errors.items() if v > WRITER_RTOL}
    assert not bad, f"energy terms (OpenMM, GROMACS) disagree: {bad}"
    potential_terms = set(gromacs.FORCE_GROUPS) | {"LJ-14", "Coulomb-14", "Potential", "Per. Imp. Dih."}
    unmatched = {k: v for k, v in gmx_e.items() if k in potential_terms and k not in omm_e and v != 0}
    assert not unmatched, unmatched


@needs_gmx
def test_forcefield_input_writes_a_flexible_topology(tmp_path, ala2_system):
    topology, xyz, _ = ala2_system
    gro, top = gromacs.write_gromacs(topology, xyz, app.ForceField("amber99sbildn.xml"),
                                     tmp_path / "flex.gro", tmp_path / "flex.top")
    assert "[ constraints ]" not in top.read_text()
    positions, box = gromacs.read_gro(gro)
    assert np.allclose(np.diag(box), xyz.max(axis=0) - xyz.min(axis=0) + 4.0, atol=1e-3)  # 2 nm around it
    assert positions.min() > 1.99
    (tmp_path / "check.mdp").write_text(VACUUM_MDP.replace("2.9", "1.0"))
    result = subprocess.run([GMX, "-quiet", "grompp", "-f", "check.mdp", "-c", gro.name, "-p", top.name,
                             "-o", "check.tpr"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_implicit_solvent_and_rigid_water_are_refused(tmp_path, ala2_system):
    topology, xyz, _ = ala2_system
    implicit = data.reference_system(topology)  # amber99sbildn + amber99_obc
    with pytest.raises(InputError, match=r"GBSAOBCForce \(implicit solvent has no GROMACS equivalent"):
        gromacs.write_gromacs(topology, xyz, implicit, tmp_path / "x.gro", tmp_path / "x.top")
    water = app.Topology()
    residue = water.addResidue("HOH", water.addChain())
    o = water.addAtom("O", app.element.oxygen, residue)
    h1 = water.addAtom("H1", app.element.hydrogen, residue)
    h2 = water.addAtom("H2", app.element.hydrogen, residue)
    water.addBond(o, h1)
    water.addBond(o, h2)
    rigid = app.ForceField("amber99sbildn.xml", "tip3p.xml").createSystem(water, rigidWater=True)
    with pytest.raises(InputError, match=r"HOH1:H1 .* HOH1:H2 .*not bonded \(rigid water"):
        gromacs.write_gromacs(water, [[0, 0, 0], [0.09572, 0, 0], [-0.024, 0.0927, 0]], rigid,
                              tmp_path / "w.gro", tmp_path / "w.top")
    assert not list(tmp_path.iterdir())  # nothing written


@needs_gmx
def test_protein_in_water_from_a_forcefield_has_settles_and_grompp_accepts_it(tmp_path, ala2_system):
    import openmm.unit as unit

    topology, xyz, _ = ala2_system
    forcefield = app.ForceField("amber99sbildn.xml", "tip3p.xml")
    modeller = app.Modeller(topology, xyz * unit.nanometer)
    modeller.addSolvent(forcefield, model="tip3p", padding=1.0 * unit.nanometer, ionicStrength=0.2 * unit.molar)
    gro, top = gromacs.write_gromacs(modeller.topology, modeller.positions, forcefield, tmp_path / "solvated.gro",
                                     tmp_path / "solvated.top")
    text = top.read_text()
    # parmed's water: flexible under -DFLEXIBLE, else rigid by [ settles ] (preprocessor lines inside
    # the molecule type must not upset the constraint writer)
    assert "#ifdef FLEXIBLE" in text and "[ settles ]" in text
    waters = sum(1 for r in modeller.topology.residues() if r.name == "HOH")
    molecules = text.split("[ molecules ]")[1]
    assert f"HOH {waters}".split() in [line.split() for line in molecules.splitlines()]
    assert gromacs.read_gro(gro)[0].shape == (modeller.topology.getNumAtoms(), 3)
    (tmp_path / "pme.mdp").write_text("integrator = md\nnsteps = 0\ncutoff-scheme = Verlet\ncoulombtype = PME\n"
                                      "rcoulomb = 0.9\nrvdw = 0.9\nconstraints = h-bonds\n")
    gromacs.run_gmx(["grompp", "-f", "pme.mdp", "-c", gro.name, "-p", top.name, "-o", "check.tpr"], tmp_path,
                    executable=GMX)
