"""Reading and writing structures, topologies and trajectories.

Everything here is a thin layer over mdtraj, OpenMM and parmed, which do the parsing; this
module adds the package's conventions: OpenMM :class:`openmm.app.Topology` as the topology
object, numpy arrays of shape (frames, atoms, 3) in nm, errors that name the file at fault,
and outputs that are written atomically (a crash never leaves half a file under the final
name).

Examples
--------
>>> from openmmbackmap import io
>>> topology, positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
>>> topology.getNumAtoms()
22
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import mdtraj
import numpy as np
import openmm.app as app
import openmm.unit as unit

from openmmbackmap.errors import InputError

#: Extensions read as a topology (with or without coordinates).
TOPOLOGY_FORMATS = (".pdb", ".cif", ".pdbx", ".gro", ".prmtop", ".parm7", ".psf", ".top")
#: Extensions read as a trajectory (coordinates only; the topology comes from elsewhere).
TRAJECTORY_FORMATS = (".pdb", ".cif", ".pdbx", ".gro", ".dcd", ".xtc", ".trr", ".nc", ".netcdf")
#: Extensions written as a trajectory or structure.
WRITE_FORMATS = (".pdb", ".dcd", ".xtc", ".gro")

_DATA_DIR = Path(__file__).resolve().parent / "data"


def bundled(relative_path: str) -> Path:
    """Path of a file bundled with the package under ``openmmbackmap/data``.

    Parameters
    ----------
    relative_path
        Path relative to the data folder, for example ``"alanine_dipeptide/ala2.pdb"``.
    """
    path = _DATA_DIR / relative_path
    if not path.exists():
        raise InputError(f"bundled file {relative_path!r} is not in {_DATA_DIR}")
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (what provenance records to name data exactly)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _suffix(path: str | os.PathLike) -> str:
    return Path(path).suffix.lower()


def _require_file(path: str | os.PathLike, formats: tuple[str, ...], what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file {str(path)!r} does not exist")
    if _suffix(path) not in formats:
        raise InputError(
            f"{what} file {str(path)!r}: unsupported format {path.suffix!r}; "
            f"supported: {', '.join(formats)}"
        )
    return path


def load_topology(path: str | os.PathLike) -> tuple[app.Topology, np.ndarray | None]:
    """Read an atomistic or CG topology, with its coordinates where the file has them.

    PDB and PDBx/mmCIF are read with OpenMM (bonds from residue templates and CONECT
    records), GRO with mdtraj (bonds of standard residues), prmtop and PSF with OpenMM, and
    GROMACS .top with parmed.

    Parameters
    ----------
    path
        A .pdb, .cif/.pdbx, .gro, .prmtop/.parm7, .psf or .top file.

    Returns
    -------
    topology
        The OpenMM topology.
    positions
        Coordinates of the first model in nm, shape (atoms, 3), or None for files without
        coordinates (prmtop, psf, top).
    """
    path = _require_file(path, TOPOLOGY_FORMATS, "topology")
    suffix = _suffix(path)
    try:
        if suffix in (".pdb", ".cif", ".pdbx"):
            reader = app.PDBFile if suffix == ".pdb" else app.PDBxFile
            structure = reader(str(path))
            topology, positions = structure.topology, _nm_array(structure.positions)
            add_missing_bonds(topology, positions)
            return topology, positions
        if suffix == ".gro":
            traj = mdtraj.load(str(path))
            # a GRO box of zeros (no box) reads as None, which to_openmm(traj) cannot take
            box_source = traj if traj.unitcell_vectors is not None else None
            topology = traj.topology.to_openmm(box_source)
            positions = np.asarray(traj.xyz[0], dtype=np.float64)
            add_missing_bonds(topology, positions)
            return topology, positions
        if suffix in (".prmtop", ".parm7"):
            return app.AmberPrmtopFile(str(path)).topology, None
        if suffix == ".psf":
            return app.CharmmPsfFile(str(path)).topology, None
        import parmed  # imported here: parmed is slow to import and only .top needs it

        # Only the topology is needed: no parameter lookup, which parmed cannot do for some
        # valid GROMACS terms (connection bonds, funct 5, as write_gromacs writes them).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", parmed.exceptions.GromacsWarning)
            return parmed.load_file(str(path), parametrize=False).topology, None
    except InputError:
        raise
    except Exception as exc:  # the parsers raise many types; name the file for the user
        raise InputError(f"cannot read topology file {str(path)!r}: {exc}") from exc


def add_missing_bonds(topology: app.Topology, positions: np.ndarray) -> int:
    """Give residues that have no bonds (no template, no CONECT) bonds guessed from distances.

    OpenMM and mdtraj bond standard residues from templates; a residue they do not know
    (a protonation variant such as ASPP, a ligand, a lipid) is left without bonds, which
    breaks anything that follows the bond graph. The guess is vermouth's (van der Waals
    radii with a fudge factor, as martinize2 does), applied to those residues and their links to chain neighbours.

    Returns
    -------
    int
        The number of bonds added.
    """
    import vermouth
    from vermouth.processors.make_bonds import make_bonds

    bonded = {a.residue.index for bond in topology.bonds() for a in bond if bond[0].residue is bond[1].residue}
    lonely = [r for r in topology.residues() if r.index not in bonded and len(r) > 1]
    if not lonely:
        return 0
    lonely_indices = {r.index for r in lonely}
    # Chain neighbours come along so that the links to them (peptide bonds) are found too.
    residues = list(topology.residues())
    near = sorted({n for r in lonely for n in (r.index - 1, r.index, r.index + 1)
                   if 0 <= n < len(residues) and residues[n].chain is r.chain})
    existing = {frozenset((a.index, b.index)) for a, b in topology.bonds()}
    atoms = list(topology.atoms())
    system = vermouth.System()
    molecule = vermouth.molecule.Molecule()
    for residue in (residues[n] for n in near):
        for atom in residue.atoms():
            molecule.add_node(
                atom.index, element=atom.element.symbol if atom.element is not None else None,
                position=positions[atom.index], atomname=atom.name, resname=residue.name,
                resid=residue.index, chain=str(residue.chain.id), insertion_code="", omm_index=atom.index,
            )
    system.add_molecule(molecule)
    added = 0
    for found in make_bonds(system, allow_name=False, allow_dist=True):
        for i, j in found.edges:
            a, b = atoms[found.nodes[i]["omm_index"]], atoms[found.nodes[j]["omm_index"]]
            involves_lonely = a.residue.index in lonely_indices or b.residue.index in lonely_indices
            if involves_lonely and frozenset((a.index, b.index)) not in existing:
                topology.addBond(a, b)
                added += 1
    return added


def _nm_array(positions: unit.Quantity) -> np.ndarray:
    return np.asarray(positions.value_in_unit(unit.nanometer), dtype=np.float64)


def to_mdtraj_topology(topology: app.Topology | mdtraj.Topology) -> mdtraj.Topology:
    """Convert an OpenMM topology to mdtraj's (particles without element become virtual)."""
    if isinstance(topology, mdtraj.Topology):
        return topology
    return mdtraj.Topology.from_openmm(topology)


def load_trajectory(
    path: str | os.PathLike,
    topology: app.Topology,
    *,
    stride: int = 1,
    topology_source: str | os.PathLike | None = None,
) -> mdtraj.Trajectory:
    """Read a whole trajectory and check it against its topology.

    Parameters
    ----------
    path
        A .dcd, .xtc, .trr, .nc, .pdb, .gro or .cif file.
    topology
        The topology whose atoms the trajectory holds.
    stride
        Read every ``stride``-th frame.
    topology_source
        Name of the topology file, used only in error messages.

    Raises
    ------
    InputError
        If the file is missing or unreadable, its atom count does not match the topology,
        or any coordinate is NaN or infinite (the message names frame, residue and atom).
    """
    chunks = list(iter_trajectory(path, topology, stride=stride, topology_source=topology_source))
    return chunks[0] if len(chunks) == 1 else mdtraj.join(chunks, check_topology=False)


def iter_trajectory(
    path: str | os.PathLike,
    topology: app.Topology,
    *,
    chunk: int = 0,
    stride: int = 1,
    topology_source: str | os.PathLike | None = None,
) -> Iterator[mdtraj.Trajectory]:
    """Read a trajectory in chunks of ``chunk`` frames (0: all at once), checking each.

    See :func:`load_trajectory` for the parameters and the checks.
    """
    path = _require_file(path, TRAJECTORY_FORMATS, "trajectory")
    md_top = to_mdtraj_topology(topology)
    source = f" {str(topology_source)!r}" if topology_source else ""
    n_atoms = _count_atoms_in_file(path)
    if n_atoms is not None and n_atoms != md_top.n_atoms:
        raise InputError(
            f"trajectory {str(path)!r} has {n_atoms} atoms but the topology{source} has "
            f"{md_top.n_atoms}"
        )
    first_frame = 0
    try:
        for traj in _read_chunks(path, md_top, chunk, stride, source):
            check_finite(traj.xyz, topology, path, first_frame=first_frame)
            first_frame += traj.n_frames
            yield traj
    except InputError:
        raise
    except Exception as exc:  # the readers raise many types; name the file for the user
        raise InputError(f"cannot read trajectory {str(path)!r}{source}: {exc}") from exc


def _read_chunks(
    path: Path, md_top: mdtraj.Topology, chunk: int, stride: int, source: str
) -> Iterator[mdtraj.Trajectory]:
    """Frames of ``path`` on ``md_top``, in chunks of ``chunk`` frames (0: all at once)."""
    if _suffix(path) in (".pdb", ".cif", ".pdbx", ".gro"):
        # Text formats carry their own topology, which mdtraj's chunked reader uses instead of
        # ``md_top`` (and for .gro/.cif ignores ``chunk`` or fails): read the file whole, check
        # its atom count, then put the given topology on it.
        whole = mdtraj.load(str(path), stride=stride)
        if whole.n_atoms != md_top.n_atoms:
            raise InputError(
                f"trajectory {str(path)!r} has {whole.n_atoms} atoms but the topology{source} "
                f"has {md_top.n_atoms}"
            )
        whole.topology = md_top
        step = chunk or max(whole.n_frames, 1)
        for start in range(0, whole.n_frames, step):
            yield whole[start : start + step]
    elif chunk:
        yield from mdtraj.iterload(str(path), top=md_top, chunk=chunk, stride=stride)
    else:
        yield mdtraj.load(str(path), top=md_top, stride=stride)


def _count_atoms_in_file(path: Path) -> int | None:
    """Atom count stored in a trajectory file, where the format stores one."""
    if _suffix(path) not in (".xtc", ".trr", ".dcd", ".nc", ".netcdf"):
        return None
    try:
        with mdtraj.open(str(path)) as handle:
            # every binary reader returns the coordinates first, shaped (frames, atoms, 3)
            return int(handle.read(n_frames=1)[0].shape[1])
    except Exception as exc:
        raise InputError(f"cannot read trajectory {str(path)!r}: {exc}") from exc


def check_finite(
    xyz: np.ndarray,
    topology: app.Topology,
    source: str | os.PathLike,
    *,
    first_frame: int = 0,
) -> None:
    """Raise :class:`InputError` naming the first frame and atom whose coordinates are not finite."""
    if np.isfinite(np.add.reduce(xyz, axis=None, dtype=np.float64)):
        return  # one pass: a NaN or infinity anywhere makes the sum non-finite
    finite = np.isfinite(xyz).all(axis=-1)
    if finite.all():
        return
    frame, atom_index = (int(i) for i in np.argwhere(~finite)[0])
    raise InputError(
        f"{str(source)!r}: frame {first_frame + frame} has non-finite coordinates "
        f"(NaN or infinity) at {describe_atom(topology, atom_index)}"
    )


def describe_atom(topology: app.Topology | mdtraj.Topology, index: int) -> str:
    """Human-readable name of an atom: ``atom CA (index 4) of residue ALA2 in chain A``."""
    atom = list(topology.atoms())[index] if isinstance(topology, app.Topology) else topology.atom(index)
    return f"atom {atom.name} (index {index}) of {describe_residue(atom.residue)}"


def describe_residue(residue: app.topology.Residue | mdtraj.core.topology.Residue) -> str:
    """Human-readable name of a residue: ``residue ALA 2 (index 1, chain 'A')``."""
    chain = residue.chain
    chain_id = getattr(chain, "id", None) or getattr(chain, "chain_id", None) or str(chain.index)
    residue_id = getattr(residue, "id", None) or getattr(residue, "resSeq", None)
    return f"residue {residue.name} {residue_id} (index {residue.index}, chain {chain_id!r})"


def make_molecules_whole(
    xyz: np.ndarray, unitcell_vectors: np.ndarray, topology: app.Topology
) -> np.ndarray:
    """Undo the wrapping of molecules split by periodic boundaries, following the bonds.

    Parameters
    ----------
    xyz
        Coordinates, shape (frames, atoms, 3), nm.
    unitcell_vectors
        Box vectors, shape (frames, 3, 3) or (3, 3), nm.
    topology
        Topology with bonds; each connected set of atoms is made whole.

    Returns
    -------
    numpy.ndarray
        New coordinates with every bonded pair closer than half a box.
    """
    xyz = np.asarray(xyz, dtype=np.float32)
    boxes = np.broadcast_to(np.asarray(unitcell_vectors, dtype=np.float32), (len(xyz), 3, 3))
    traj = mdtraj.Trajectory(xyz.copy(), to_mdtraj_topology(topology))
    traj.unitcell_vectors = np.array(boxes)
    traj.make_molecules_whole(inplace=True)
    return traj.xyz


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary name keeps the extension, so writers that pick a format by extension
    (mdtraj, OpenMM) write the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent
    )
    os.close(handle)
    os.unlink(temporary)  # writers such as mdtraj refuse to overwrite an existing file
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_json(path: str | os.PathLike, data, *, indent: int | None = 2, allow_nan: bool = True, default=None) -> Path:
    """Write ``data`` as JSON (with a final newline), atomically; the folder is created.

    ``allow_nan=False`` refuses NaN/infinity, for files that strict JSON readers must accept.
    """
    path = Path(path)
    text = json.dumps(data, indent=indent, allow_nan=allow_nan, default=default) + "\n"
    with atomic_output(path) as temporary:
        temporary.write_text(text)
    return path


def write_trajectory(
    path: str | os.PathLike,
    xyz: np.ndarray,
    topology: app.Topology | mdtraj.Topology,
    *,
    time: np.ndarray | None = None,
    unitcell_vectors: np.ndarray | None = None,
) -> Path:
    """Write coordinates as a .pdb, .dcd, .xtc or .gro file, atomically.

    Parameters
    ----------
    path
        Output file; the format follows its extension.
    xyz
        Coordinates, shape (frames, particles, 3) or (particles, 3), nm.
    topology
        Topology of the particles (atomistic or CG).
    time
        Time of each frame in ps.
    unitcell_vectors
        Box vectors, shape (frames, 3, 3), nm.
    """
    path = Path(path)
    if _suffix(path) not in WRITE_FORMATS:
        raise InputError(
            f"cannot write {str(path)!r}: unsupported format {path.suffix!r}; "
            f"supported: {', '.join(WRITE_FORMATS)}"
        )
    xyz = np.asarray(xyz, dtype=np.float32)
    if xyz.ndim == 2:
        xyz = xyz[None]
    traj = mdtraj.Trajectory(xyz, to_mdtraj_topology(topology), time=time)
    if unitcell_vectors is not None:
        traj.unitcell_vectors = np.broadcast_to(
            np.asarray(unitcell_vectors, dtype=np.float32), (len(xyz), 3, 3)
        ).copy()
    with atomic_output(path) as temporary:
        traj.save(str(temporary))
    return path


def topology_to_dict(topology: app.Topology) -> dict:
    """Serialise a topology (chains, residues, atom names and elements, bonds) to plain data.

    The result is canonical (no floats, fixed order), so it can be hashed for fingerprints.
    """
    chains = []
    for chain in topology.chains():
        residues = []
        for residue in chain.residues():
            residues.append(
                {
                    "name": residue.name,
                    "id": str(residue.id),
                    "insertion_code": (residue.insertionCode or "").strip(),
                    "atoms": [
                        [atom.name, atom.element.symbol if atom.element is not None else ""]
                        for atom in residue.atoms()
                    ],
                }
            )
        chains.append({"id": str(chain.id), "residues": residues})
    bonds = sorted(sorted((bond[0].index, bond[1].index)) for bond in topology.bonds())
    return {"chains": chains, "bonds": [list(bond) for bond in bonds]}


def topology_from_dict(data: dict) -> app.Topology:
    """Rebuild an OpenMM topology from :func:`topology_to_dict` output."""
    topology = app.Topology()
    atoms = []
    for chain_data in data["chains"]:
        chain = topology.addChain(chain_data["id"])
        for residue_data in chain_data["residues"]:
            residue = topology.addResidue(
                residue_data["name"], chain, residue_data["id"], residue_data.get("insertion_code", "")
            )
            for name, symbol in residue_data["atoms"]:
                element = app.Element.getBySymbol(symbol) if symbol else None
                atoms.append(topology.addAtom(name, element, residue))
    for i, j in data["bonds"]:
        topology.addBond(atoms[i], atoms[j])
    return topology
