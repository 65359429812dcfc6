"""Martini systems from atomistic structures: martinize2, the Martini 3 force-field files, water and ions.

The steps a GROMACS user takes before a Martini run, as library calls:

* :func:`martinize` runs vermouth's ``martinize2`` (installed with this package, runs offline)
  on an atomistic structure and returns the paths of what it wrote (:class:`MartinizeOutput`:
  ``.top``, molecule ``.itp`` files, ``cg.pdb``); a failure raises
  :class:`~openmmbackmap.errors.InputError` naming the input file and martinize2's own message.
* :func:`martini3_itp` finds the Martini 3 master topology (``martini_v3.0.0.itp`` with the W,
  SOD and CLA molecule types). It is GPL-3.0 and neither vermouth nor this package ships it: it
  comes from ``$OPENMMBACKMAP_MARTINI3_ITP``, from the cache ``~/.cache/openmm-backmap``, or from
  the PyPI sdist of ``mstool`` (``FF/martini3.0.0/martini.itp``), fetched once with pip.
* :func:`solvate_martinized` puts martinize2's molecules in a periodic box of Martini 3 water
  (W) with Na+/Cl- (SOD/CLA) and writes ``topol.top`` and ``conf.gro`` for ``gmx grompp`` or
  :func:`openmmbackmap.gromacs.read_top`. The water is a jittered lattice at Martini water's
  density, not equilibrated: minimise before dynamics.
* :func:`martini_mdp` writes Martini 3 run settings (reaction field, ``epsilon_r`` 15, 1.1 nm
  cut-offs, 20 fs; the published "new-rf" parameters) with the options a run changes.

Examples
--------
>>> from openmmbackmap import io, martinize                                   # doctest: +SKIP
>>> cg = martinize.martinize(io.bundled("chignolin/cln025.pdb"), "cln025_cg")   # doctest: +SKIP
>>> system = martinize.solvate_martinized(cg, "cln025_cg", box=5.0)            # doctest: +SKIP
>>> (system.top, system.gro, system.counts)                                    # doctest: +SKIP
(PosixPath('cln025_cg/topol.top'), PosixPath('cln025_cg/conf.gro'), {'molecule_0': 1, 'W': 948, 'SOD': 13, 'CLA': 11})
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from openmmbackmap.errors import InputError

#: Where force-field files taken from the mstool sdist are cached.
CACHE = Path.home() / ".cache" / "openmm-backmap"
#: The mstool release whose sdist holds the Martini files (``FF/...``), and the files taken from it.
MSTOOL_VERSION = "0.3.9"
MSTOOL_FILES = (
    "martini3.0.0/martini.itp",
    "martini2.2/martini_v2.2.itp",
    "martini2.2/martini_v2.0_ions.itp",
    "martini2.2/martini_v2.0_lipids_all_201506.itp",
)
#: Names of the two halves of the Martini 3 master topology, as the official release names them.
MARTINI3_FORCE_FIELD = "martini_v3.0.0.itp"
MARTINI3_SOLVENTS = "martini_v3.0.0_solvents_ions.itp"
#: Beads of Martini 3 water per nm^3 (4 water molecules a bead at 33.4 molecules/nm^3).
W_DENSITY = 8.36
_AVOGADRO = 6.02214076e23

#: Martini 3 run settings (Souza et al. 2021 and cgmartini.nl's "new-rf" parameters): reaction
#: field with epsilon_r 15 and epsilon_rf infinite, 1.1 nm potential-shifted cut-offs, 20 fs.
#: :func:`martini_mdp` changes options of it.
MARTINI_MDP = """\
; Martini 3 (Souza et al. 2021, cgmartini.nl new-rf parameters)
integrator               = md
dt                       = 0.02
nsteps                   = 50000
nstcomm                  = 100
comm-grps                = System
nstxout                  = 0
nstvout                  = 0
nstfout                  = 0
nstlog                   = 1000
nstcalcenergy            = 100
nstenergy                = 1000
nstxout-compressed       = 1000
compressed-x-precision   = 1000
cutoff-scheme            = Verlet
nstlist                  = 20
pbc                      = xyz
verlet-buffer-tolerance  = 0.005
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
ref_t                    = 300
Pcoupl                   = no
gen_vel                  = yes
gen_temp                 = 300
gen_seed                 = 1
constraints              = none
constraint_algorithm     = Lincs
"""


# --------------------------------------------------------------------------------------------
# Force-field files


def mstool_file(relative: str, *, download: bool = True) -> Path | None:
    """``FF/<relative>`` of the mstool sdist (GPL-3.0), cached in :data:`CACHE`; None if unavailable.

    Parameters
    ----------
    relative
        One of :data:`MSTOOL_FILES`, e.g. ``"martini3.0.0/martini.itp"``.
    download
        Fetch the sdist with pip (``pip download mstool==0.3.9``, about 30 MB) when the file is
        not cached; all of :data:`MSTOOL_FILES` and the licence are cached at once.
    """
    cached = CACHE / relative
    if cached.is_file() or not download:
        return cached if cached.is_file() else None
    # pip cannot build mstool's metadata without Cython, but with --no-clean the unpacked sdist
    # stays in its temporary folder, which is all we need.
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TMPDIR=tmp)
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                 "--no-build-isolation", "--no-clean", f"mstool=={MSTOOL_VERSION}", "-d", tmp],
                env=env, capture_output=True, timeout=600,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        for name in MSTOOL_FILES:
            found = sorted(Path(tmp).glob(f"**/FF/{name}"))
            if not found:
                continue
            target = CACHE / name
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
            shutil.copyfile(found[0], partial)
            os.replace(partial, target)  # concurrent runs never see half a file
            for licence in found[0].parents[4].glob("LICENSE*"):  # the sdist root (GPL-3.0)
                shutil.copyfile(licence, target.parent / "LICENSE")
    return cached if cached.is_file() else None


def martini3_itp(*, download: bool = True) -> Path:
    """The Martini 3.0.0 master topology (force field plus W, SOD, CLA molecule types).

    Looked up in this order: ``$OPENMMBACKMAP_MARTINI3_ITP``; the cache
    ``~/.cache/openmm-backmap/martini3.0.0/martini.itp``; the PyPI sdist of ``mstool`` (fetched
    with pip when ``download``).

    Raises
    ------
    InputError
        When none of them has it.
    """
    env = os.environ.get("OPENMMBACKMAP_MARTINI3_ITP")
    if env:
        if not Path(env).is_file():
            raise InputError(f"$OPENMMBACKMAP_MARTINI3_ITP names {env!r}, which is not a file")
        return Path(env)
    path = mstool_file("martini3.0.0/martini.itp", download=download)
    if path is None:
        raise InputError(
            "the Martini 3 master topology (martini_v3.0.0.itp) is not available: set $OPENMMBACKMAP_MARTINI3_ITP "
            f"to the file, or let pip fetch the mstool=={MSTOOL_VERSION} sdist that contains it"
            + ("" if download else " (download=True)")
        )
    return path


def split_martini3_itp(folder: str | os.PathLike, master: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Write the Martini 3 master topology as its two official halves into ``folder``.

    The force field (``[ defaults ]``, ``[ atomtypes ]``, ``[ nonbond_params ]``:
    :data:`MARTINI3_FORCE_FIELD`) and the W, SOD, CLA molecule types
    (:data:`MARTINI3_SOLVENTS`), so that other ``[ atomtypes ]`` (martinize2's water-bias
    sites) can be included in between, as GROMACS requires. Files already there are kept.

    Returns
    -------
    (force field .itp, solvents and ions .itp)
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    force_field, solvents = folder / MARTINI3_FORCE_FIELD, folder / MARTINI3_SOLVENTS
    if force_field.is_file() and solvents.is_file():
        return force_field, solvents
    master = Path(master) if master is not None else martini3_itp()
    text = master.read_text()
    cut = re.search(r"(?m)^\s*\[\s*moleculetype\s*\]", text)
    if cut is None:
        raise InputError(f"{master}: no [ moleculetype ] (expected the W, SOD and CLA molecule types)")
    force_field.write_text(text[:cut.start()])
    solvents.write_text(text[cut.start():])
    return force_field, solvents


# --------------------------------------------------------------------------------------------
# martinize2


@dataclass(frozen=True)
class MartinizeOutput:
    """What one martinize2 run wrote.

    Attributes
    ----------
    top
        martinize2's ``.top``: ``#include "martini.itp"`` (the force field, not written by
        martinize2), the molecule ``.itp`` files, ``[ system ]`` and ``[ molecules ]``.
    itps
        The molecule ``.itp`` files, in the order the ``.top`` includes them.
    cg_pdb
        The CG structure (beads in topology order, virtual sites included).
    includes
        Every file the ``.top`` includes, in order, as written.
    molecules
        ``[ molecules ]`` of the ``.top``: (molecule type, count).
    command
        The martinize2 command line that was run.
    log
        martinize2's standard error (its log).
    """

    top: Path
    itps: tuple[Path, ...]
    cg_pdb: Path
    includes: tuple[str, ...]
    molecules: tuple[tuple[str, int], ...]
    command: tuple[str, ...]
    log: str = field(repr=False, default="")

    def elastic_bonds(self) -> list[tuple[int, int, float, float]]:
        """The elastic-network bonds martinize2 wrote (its ``; Rubber band`` blocks).

        Returns
        -------
        list of (i, j, length nm, force constant kJ/mol/nm^2)
            Bead indices are 0-based over the whole system (molecules in ``[ molecules ]`` order).
        """
        sizes, blocks = {}, {}
        for itp in self.itps:
            name, n_atoms, bonds = None, 0, []
            section, in_rubber = None, False
            for raw in itp.read_text().splitlines():
                line = raw.strip()
                header = re.match(r"\[\s*(\w+)\s*\]", line)
                if header:
                    if header.group(1) == "moleculetype" and name is not None:
                        sizes[name], blocks[name] = n_atoms, bonds
                        n_atoms, bonds = 0, []
                    section, in_rubber = header.group(1), False
                    continue
                if not line:
                    in_rubber = False
                    continue
                if line.startswith(";"):
                    in_rubber = section == "bonds" and "rubber" in line.lower()
                    continue
                if line.startswith("#"):
                    continue
                words = line.split(";")[0].split()
                if section == "moleculetype":
                    name = words[0]
                elif section == "atoms":
                    n_atoms += 1
                elif section == "bonds" and in_rubber:
                    bonds.append((int(words[0]) - 1, int(words[1]) - 1, float(words[3]), float(words[4])))
            if name is not None:
                sizes[name], blocks[name] = n_atoms, bonds
        out, offset = [], 0
        for name, count in self.molecules:
            for _ in range(count):
                out.extend((offset + i, offset + j, r, k) for i, j, r, k in blocks.get(name, []))
                offset += sizes.get(name, 0)
        return out


def martinize(
    structure: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    force_field: str = "martini3001",
    elastic: bool = True,
    secondary_structure: str | None = None,
    top_name: str = "protein.top",
    cg_name: str = "cg.pdb",
    extra_args: Sequence[str] = (),
    executable: str | os.PathLike | None = None,
    timeout: float = 600.0,
) -> MartinizeOutput:
    """Run martinize2 on an atomistic structure and return the files it wrote.

    Parameters
    ----------
    structure
        Atomistic input (.pdb or .gro; hydrogens optional; CHARMM, AMBER or PDB names).
    out_dir
        Folder for martinize2's outputs (created; martinize2 runs in it, so its molecule
        ``.itp`` files land there).
    force_field
        martinize2's ``-ff``: ``martini3001`` (Martini 3), ``martini22``, ``elnedyn22``...
    elastic
        Write an elastic network (``-elastic``; martinize2's default parameters unless
        ``extra_args`` sets ``-ef``/``-el``/``-eu``...).
    secondary_structure
        ``-ss``: one DSSP letter per residue (or one letter for all). None: martinize2's
        ``-dssp``, which assigns it with mdtraj's DSSP in the same process.
    top_name, cg_name
        Names of the ``.top`` (``-o``) and CG structure (``-x``) in ``out_dir``.
    extra_args
        More martinize2 arguments, passed as given (e.g. ``["-from", "amber"]``,
        ``["-water-bias"]``, ``["-ef", "500"]``).
    executable
        The ``martinize2`` program; default: the one beside this Python, else on ``PATH``.
    timeout
        Seconds before martinize2 is stopped.

    Returns
    -------
    MartinizeOutput

    Raises
    ------
    InputError
        If the structure does not exist, martinize2 is not installed, fails or times out (the
        message names the input file and ends with martinize2's standard error), or wrote
        no topology.
    """
    structure = Path(structure).resolve()
    if not structure.is_file():
        raise InputError(f"martinize2 input {str(structure)!r} does not exist")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    program = _martinize2_executable(executable)
    command = [program, "-f", str(structure), "-o", top_name, "-x", cg_name, "-ff", force_field]
    command += ["-dssp"] if secondary_structure is None else ["-ss", secondary_structure]
    if elastic:
        command.append("-elastic")
    command += [str(a) for a in extra_args]
    for stale in (out_dir / top_name, out_dir / cg_name):
        stale.unlink(missing_ok=True)  # a failed run must not leave last run's files looking fresh
    try:
        result = subprocess.run(command, cwd=out_dir, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise InputError(f"martinize2 on {str(structure)!r} did not finish in {timeout:g} s") from exc
    log = result.stderr
    if result.returncode != 0:
        raise InputError(
            f"martinize2 failed on {str(structure)!r} (exit status {result.returncode}; command: "
            f"{' '.join(command)}):\n{_tail(log)}"
        )
    top = out_dir / top_name
    cg_pdb = out_dir / cg_name
    if not top.is_file() or not cg_pdb.is_file():
        raise InputError(f"martinize2 on {str(structure)!r} wrote no {top_name} or {cg_name}:\n{_tail(log)}")
    includes, molecules = _read_top_outline(top)
    itps = tuple(out_dir / name for name in includes if (out_dir / name).is_file() and name != "martini.itp")
    return MartinizeOutput(top=top, itps=itps, cg_pdb=cg_pdb, includes=tuple(includes),
                           molecules=tuple(molecules), command=tuple(command), log=log)


def _martinize2_executable(executable: str | os.PathLike | None) -> str:
    if executable is not None:
        return str(executable)
    beside = Path(sys.executable).with_name("martinize2")
    found = str(beside) if beside.is_file() else shutil.which("martinize2")
    if found is None:
        raise InputError("martinize2 is not installed (pip install vermouth)")
    return found


def _tail(text: str, lines: int = 30) -> str:
    """The last ``lines`` lines of a program's log, where its error message is."""
    return "\n".join(text.strip().splitlines()[-lines:])


def _read_top_outline(top: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(``#include`` file names in order, ``[ molecules ]`` rows) of a simple .top file."""
    includes, molecules, section = [], [], None
    for number, raw in enumerate(top.read_text().splitlines(), start=1):
        line = raw.split(";")[0].strip()
        if not line:
            continue
        include = re.match(r'#include\s+"([^"]+)"', line)
        if include:
            includes.append(include.group(1))
            continue
        header = re.match(r"\[\s*(\w+)\s*\]", line)
        if header:
            section = header.group(1)
        elif section == "molecules":
            words = line.split()
            try:
                molecules.append((words[0], int(words[1])))
            except (IndexError, ValueError):
                raise InputError(f"{top}:{number}: [ molecules ] expects 'name count', got {raw!r}") from None
    return includes, molecules


# --------------------------------------------------------------------------------------------
# Water and ions


def lattice(box: np.ndarray, rng: np.random.Generator, density: float = W_DENSITY, jitter: float = 0.06) -> np.ndarray:
    """Points on a jittered lattice filling the (triclinic) box, ``density`` per nm^3."""
    volume = abs(np.linalg.det(box))
    lengths = np.linalg.norm(box, axis=1)
    n = np.maximum(1, np.round(lengths * (density * volume / np.prod(lengths)) ** (1 / 3))).astype(int)
    frac = np.stack(np.meshgrid(*[(np.arange(k) + 0.5) / k for k in n], indexing="ij"), -1).reshape(-1, 3)
    return frac @ box + rng.uniform(-jitter, jitter, (len(frac), 3))


def _min_distance(points: np.ndarray, others: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest of ``others`` under periodic boundaries
    (fractional-coordinate minimum image; exact enough to clear overlaps)."""
    inverse = np.linalg.inv(box)
    best = np.full(len(points), np.inf)
    for start in range(0, len(points), 512):
        d = points[start:start + 512, None] - others[None]
        frac = d @ inverse
        d = (frac - np.round(frac)) @ box
        best[start:start + 512] = np.linalg.norm(d, axis=-1).min(axis=1)
    return best


def solvate(
    solute: np.ndarray, box: np.ndarray, net_charge: float, n_salt: int, seed: int, clearance: float = 0.43
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions of Martini water and ions around a solute (nm).

    A jittered W lattice at :data:`W_DENSITY` fills the box; beads closer than ``clearance`` to
    the solute are removed; ``n_salt`` ion pairs plus the counter-ions that neutralise
    ``net_charge`` replace randomly chosen W.

    Returns
    -------
    (water, cations, anions)
        Each (n, 3), nm.
    """
    rng = np.random.default_rng(seed)
    water = lattice(box, rng)
    water = water[_min_distance(water, solute, box) > clearance]
    q = int(round(net_charge))
    n_cation, n_anion = n_salt + max(0, -q), n_salt + max(0, q)
    if n_cation + n_anion > len(water):
        raise InputError(f"{n_cation + n_anion} ions do not fit in a box with {len(water)} water beads")
    order = rng.permutation(len(water))
    cations = water[order[:n_cation]]
    anions = water[order[n_cation:n_cation + n_anion]]
    return water[order[n_cation + n_anion:]], cations, anions


def place_virtual_sites(top, positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``positions`` (nm) with every virtual site of ``top`` (a :class:`~openmmbackmap.gromacs.GromacsTopology`)
    placed from its constructing particles, as GROMACS places them."""
    import openmm

    system = top.create_system(box)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPeriodicBoxVectors(*box)
    context.setPositions(positions)
    context.computeVirtualSites()
    return context.getState(getPositions=True).getPositions(asNumpy=True)._value


def molecule_charge(top, molecule: str) -> float:
    """Net charge (e) of one molecule type of a :class:`~openmmbackmap.gromacs.GromacsTopology`."""
    return sum(a.charge for a in top.molecule_types[molecule].atoms)


@dataclass(frozen=True)
class SolvatedSystem:
    """A Martini system written by :func:`solvate_martinized`: ``topol.top``, ``conf.gro`` and the counts."""

    top: Path
    gro: Path
    counts: dict[str, int]
    box: np.ndarray = field(repr=False)


def solvate_martinized(
    martinized: MartinizeOutput,
    out_dir: str | os.PathLike,
    *,
    box: float | np.ndarray | None = None,
    padding: float = 1.2,
    salt_concentration: float = 0.15,
    seed: int = 0,
    master_itp: str | os.PathLike | None = None,
    top_name: str = "topol.top",
    gro_name: str = "conf.gro",
    decimals: int = 3,
) -> SolvatedSystem:
    """Put martinize2's molecules in Martini 3 water with NaCl and write ``topol.top`` and ``conf.gro``.

    Parameters
    ----------
    martinized
        What :func:`martinize` returned (Martini 3).
    out_dir
        Folder for ``topol.top``, ``conf.gro`` and the two halves of the master topology
        (:func:`split_martini3_itp`); martinize2's ``.itp`` files are copied there if elsewhere.
    box
        Cubic box edge (nm) or 3x3 box vectors (rows, nm, GROMACS's triclinic convention);
        default: a cube ``padding`` nm larger than the CG structure on every side.
    padding
        Space (nm) between the structure and the faces of the default box.
    salt_concentration
        NaCl in mol/L over the box volume (as ``gmx genion -conc``), plus the counter-ions that
        neutralise the molecules.
    seed
        Seed of the water lattice's jitter and of where the ions go.
    master_itp
        The Martini 3 master topology; default :func:`martini3_itp`.
    decimals
        Decimals of the ``.gro`` coordinates.

    Returns
    -------
    SolvatedSystem
        Paths and the number of each molecule type.
    """
    import mdtraj

    from openmmbackmap import gromacs

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    force_field, solvents = split_martini3_itp(out_dir, master_itp)
    for itp in martinized.itps:
        if itp.parent.resolve() != out_dir.resolve():
            shutil.copyfile(itp, out_dir / itp.name)
    # martinize2's .top includes "martini.itp" first: the force-field half replaces it; any other
    # include (molecules, water-bias atom types) keeps its place; W and ions come last.
    includes = [force_field.name if name == "martini.itp" else name for name in martinized.includes]
    if force_field.name not in includes:
        includes.insert(0, force_field.name)
    includes.append(solvents.name)
    header = "".join(f'#include "{name}"\n' for name in includes)
    molecules = "".join(f"{name} {count}\n" for name, count in martinized.molecules)
    # the solute alone, read the way the final topology will be, gives its charge and bead count
    solute_path = out_dir / ".solute.top"
    solute_path.write_text(header + f"\n[ system ]\nsolute\n\n[ molecules ]\n{molecules}")
    try:
        solute_top = gromacs.read_top(solute_path)
    finally:
        solute_path.unlink()

    solute = mdtraj.load(str(martinized.cg_pdb)).xyz[0].astype(float)
    if len(solute) != solute_top.n_particles:
        raise InputError(f"{martinized.cg_pdb} has {len(solute)} beads, {martinized.top} {solute_top.n_particles}")
    if box is None:
        edge = float(np.ceil((np.ptp(solute, axis=0).max() + 2 * padding) * 10) / 10)
        box = edge
    box = np.diag([float(box)] * 3) if np.ndim(box) == 0 else np.asarray(box, dtype=float)
    if box.shape != (3, 3):
        raise InputError(f"box must be an edge length or 3x3 vectors, got shape {box.shape}")
    solute = solute - solute.mean(axis=0) + box.sum(axis=0) / 2
    net_charge = sum(molecule_charge(solute_top, name) * count for name, count in martinized.molecules)
    volume_litre = abs(np.linalg.det(box)) * 1e-24
    n_salt = int(round(salt_concentration * volume_litre * _AVOGADRO))
    water, cations, anions = solvate(solute, box, net_charge, n_salt, seed)
    counts = dict(martinized.molecules)
    for name, beads in (("W", water), ("SOD", cations), ("CLA", anions)):
        if len(beads):
            counts[name] = counts.get(name, 0) + len(beads)
    rows = molecules + "".join(f"{name} {len(beads)}\n" for name, beads in
                               (("W", water), ("SOD", cations), ("CLA", anions)) if len(beads))
    top_path = out_dir / top_name
    top_path.write_text(header + f"\n[ system ]\n{_system_title(martinized)} in Martini water with NaCl\n\n"
                        f"[ molecules ]\n{rows}")
    top = gromacs.read_top(top_path)
    positions = place_virtual_sites(top, np.concatenate([solute, water, cations, anions]), box)
    gro_path = gromacs.write_gro(out_dir / gro_name, top, positions, box, decimals=decimals)
    return SolvatedSystem(top=top_path, gro=gro_path, counts=counts, box=box)


def _system_title(martinized: MartinizeOutput) -> str:
    return " + ".join(f"{name} x{count}" if count > 1 else name for name, count in martinized.molecules)


def martini_mdp(path: str | os.PathLike | None = None, base: str = MARTINI_MDP, **options) -> str:
    """Martini run settings: :data:`MARTINI_MDP` with ``options`` replaced or added.

    Option names follow GROMACS (``-`` or ``_``, any case: ``nsteps=1000``,
    ``integrator="steep"``, ``tcoupl="no"``); a value of None removes the option. Writes the
    text to ``path`` when given and returns it.
    """
    key = lambda name: name.strip().replace("_", "-").lower()  # noqa: E731
    todo = {key(k): v for k, v in options.items()}
    lines = []
    for line in base.splitlines():
        name = line.split(";")[0].split("=")[0]
        if "=" in line and key(name) in todo:
            value = todo.pop(key(name))
            if value is not None:
                lines.append(f"{name}= {value}")
        else:
            lines.append(line)
    lines += [f"{k:24s} = {v}" for k, v in todo.items() if v is not None]
    text = "\n".join(lines) + "\n"
    if path is not None:
        Path(path).write_text(text)
    return text
