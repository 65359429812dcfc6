"""CG2AT2: fragment-based conversion of Martini structures to atomistic, refined with GROMACS.

CG2AT2 (Vickery & Stansfeld, J. Chem. Theory Comput. 2021, doi:10.1021/acs.jctc.1c00295;
``pip install cg2at2``) places an atomistic fragment on each CG bead, then energy-minimises
each residue and the merged protein with GROMACS. It needs GROMACS' ``gmx`` on PATH (Debian:
``apt-get install gromacs``) and a box (a ``CRYST1`` record) in the CG PDB; its force fields
and fragment libraries ship in the wheel, so it runs offline.

This adapter runs the *de novo* conversion only (``-o none``: fragments fitted and minimised,
no MD): it never gives CG2AT2 the atomistic structure (``-a``), which CG2AT2 would otherwise
morph its result onto, so the score measures the tool and not the reference it was handed.
It runs ``python -m cg2at.bin.cg2at -c IN -ff charmm36-cg2at -fg LIBRARY -w tip3p -o none
-loc cg2at -silent`` with no standard input (so a question it would ask fails instead of
hanging). The fragment library must match the Martini version of the input: see
:data:`FRAGMENT_LIBRARIES` and :meth:`Cg2at2Peer.for_force_field`.

CG2AT2 draws from numpy's global random generator (fallback fragment rotations and
placements) and seeds nothing; with a ``seed`` the adapter seeds it before starting CG2AT2,
which makes runs repeatable. Measured with ``-o none`` and ``threads=1``: ubiquitin with the
same seed came out byte-identical, with other seeds 0.007 nm RMS apart; trp-cage did not
depend on the seed (repeatability with several GROMACS threads was not checked).
Pass ``threads=1`` on a busy machine: GROMACS pins its OpenMP threads (``mdrun -pin on``);
on two shared cores ubiquitin took 34 s with the default and 13-15 s with one thread. The
structure it writes (``FINAL/final_cg2at_de_novo.pdb``) has hydrogens with CHARMM names,
residues numbered from 0, a blank chain id, and is translated into the box.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from openmmbackmap.bench.peers.base import Availability, Peer, pdb_atom_records
from openmmbackmap.errors import InputError

#: CG2AT2 fragment library for each martinize2 force field (``-ff`` of martinize2).
FRAGMENT_LIBRARIES = {
    "martini3001": "martini_3-0_charmm36",
    "martini22": "martini_2-2_charmm36",
    "elnedyn22": "martini_2-2_charmm36",
}
#: Box margin (Å) around the beads when the input has no usable box.
BOX_PADDING = 15.0

# Run CG2AT2's own entry point after seeding numpy's global generator (CG2AT2 does not seed it).
_LAUNCHER = (
    "import sys, runpy, numpy; seed = sys.argv[1]; "
    "seed != 'none' and numpy.random.seed(int(seed)); "
    "sys.argv = ['cg2at'] + sys.argv[2:]; "
    "runpy.run_module('cg2at.bin.cg2at', run_name='__main__', alter_sys=True)"
)


class Cg2at2Peer(Peer):
    """CG2AT2's de novo conversion of a Martini protein.

    Parameters
    ----------
    fragments
        Fragment library (or libraries, in priority order), e.g. ``"martini_3-0_charmm36"``
        (the default) or ``"martini_2-2_charmm36"``; it must match the input's Martini version.
    forcefield, water
        Atomistic force field and water model CG2AT2 builds with.
    output
        ``"none"`` (minimised, no MD; the default) or ``"de_novo"`` (plus a 5 ps NVT run).
    gmx
        The GROMACS executable.
    **options
        Passed to :class:`~openmmbackmap.bench.peers.base.Peer` (timeout, threads, keep_scratch).
    """

    name: ClassVar[str] = "cg2at2"
    input_kind: ClassVar[str] = "martini"
    writes_hydrogens: ClassVar[bool] = True

    def __init__(self, *, fragments: str | Sequence[str] = "martini_3-0_charmm36", forcefield: str = "charmm36-cg2at",
                 water: str = "tip3p", output: str = "none", gmx: str = "gmx", **options):
        super().__init__(**options)
        if output not in ("none", "de_novo"):
            raise InputError(f"cg2at2: output must be 'none' or 'de_novo', not {output!r} (aligned outputs use the reference)")
        self.fragments = [fragments] if isinstance(fragments, str) else list(fragments)
        self.forcefield, self.water, self.output, self.gmx = forcefield, water, output, gmx

    @classmethod
    def for_force_field(cls, martini_force_field: str, **options) -> "Cg2at2Peer":
        """The peer with the fragment library for a martinize2 force field (``martini3001``, ``elnedyn22``...)."""
        try:
            library = FRAGMENT_LIBRARIES[martini_force_field]
        except KeyError:
            raise InputError(
                f"cg2at2: no fragment library known for {martini_force_field!r}; known: {', '.join(FRAGMENT_LIBRARIES)}"
            ) from None
        return cls(fragments=library, **options)

    def available(self) -> Availability:
        try:
            importlib.metadata.version("cg2at2")
            spec = importlib.util.find_spec("cg2at")
        except importlib.metadata.PackageNotFoundError:
            return Availability(False, "the cg2at2 package is not installed (pip install cg2at2)")
        except (ImportError, ValueError) as exc:
            return Availability(False, f"cg2at2 cannot be located: {exc}")
        if spec is None or spec.origin is None:
            return Availability(False, "cg2at2 is installed but its 'cg2at' module cannot be found")
        database = Path(spec.origin).parent
        for library in self.fragments:
            if not (database / "fragments" / library).is_dir():
                return Availability(False, f"cg2at2 has no fragment library {library!r} in {database / 'fragments'}")
        if not (database / "forcefields" / f"{self.forcefield}.ff").is_dir():
            return Availability(False, f"cg2at2 has no force field {self.forcefield!r} in {database / 'forcefields'}")
        gmx_version = _gmx_version(self.gmx)
        if gmx_version is None:
            return Availability(
                False, f"GROMACS {self.gmx!r} is not on PATH or does not run (Debian: apt-get install gromacs)"
            )
        return Availability(True, f"cg2at2 {self.version()}")

    def version(self) -> str:
        try:
            version = importlib.metadata.version("cg2at2")
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        return f"{version} (GROMACS {_gmx_version(self.gmx) or 'not found'})"

    def _check_input(self, cg_pdb: Path) -> None:
        # Martini 2 and 3 have one BB bead per residue; the next-generation model has N, CA, C, O beads.
        backbone = {"BB", "CA"} if any("nextgen" in library for library in self.fragments) else {"BB"}
        records = pdb_atom_records(cg_pdb)
        if not any(line.startswith("ATOM  ") and line[12:16].strip() in backbone for line in records):
            raise InputError(
                f"cg2at2: {str(cg_pdb)!r} has no ATOM records named {' or '.join(sorted(backbone))}; "
                "cg2at2 reads Martini beads"
            )

    def _run(self, cg_pdb: Path, scratch: Path, seed: int | None) -> Path:
        boxed = with_box(cg_pdb, scratch / f"{cg_pdb.stem}_boxed.pdb")
        command = [
            sys.executable, "-c", _LAUNCHER, "none" if seed is None else str(int(seed)),
            "-c", boxed, "-ff", self.forcefield, "-fg", *self.fragments, "-w", self.water, "-o", self.output,
            "-loc", "cg2at", "-gmx", self.gmx, "-silent",
        ]
        self._execute(command, scratch, cg_pdb)
        return scratch / "cg2at" / "FINAL" / "final_cg2at_de_novo.pdb"  # for -o none and -o de_novo


def with_box(cg_pdb: str | Path, copy: str | Path, padding: float = BOX_PADDING) -> Path:
    """``cg_pdb`` itself if its ``CRYST1`` box holds the beads, else ``copy`` written with one that does.

    The added box is orthorhombic: the beads' extent plus ``padding`` Å on each side (a
    missing box, or a 1 Å placeholder such as PDB files of NMR models carry, is replaced).
    Coordinates are not moved.
    """
    cg_pdb, copy = Path(cg_pdb), Path(copy)
    lines = cg_pdb.read_text(errors="replace").splitlines(keepends=True)
    atoms = [line for line in lines if line.startswith(("ATOM  ", "HETATM"))]
    if not atoms:
        raise InputError(f"{str(cg_pdb)!r} has no ATOM records")
    xyz = np.array([[float(line[30:38]), float(line[38:46]), float(line[46:54])] for line in atoms])
    extent = xyz.max(axis=0) - xyz.min(axis=0)
    cryst = [line for line in lines if line.startswith("CRYST1")]
    if cryst:
        try:
            edges = np.array([float(cryst[0][6:15]), float(cryst[0][15:24]), float(cryst[0][24:33])])
        except ValueError:
            edges = np.zeros(3)
        if (edges > extent).all():
            return cg_pdb
    edges = extent + 2 * padding
    record = f"CRYST1{edges[0]:9.3f}{edges[1]:9.3f}{edges[2]:9.3f}  90.00  90.00  90.00 P 1           1\n"
    copy.write_text(record + "".join(line for line in lines if not line.startswith("CRYST1")))
    return copy


@functools.lru_cache(maxsize=8)
def _gmx_version(gmx: str) -> str | None:
    """GROMACS' version string (``2022.5-Debian_2022.5_2``), or None if ``gmx`` is missing or fails."""
    path = shutil.which(gmx)
    if path is None:
        return None
    try:
        result = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL, errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    for line in result.stdout.splitlines():
        if line.strip().startswith("GROMACS version:"):
            return line.split(":", 1)[1].strip()
    return "unknown version"
