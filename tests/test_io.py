"""io: topology and trajectory formats, atomic writes, error messages, PBC, serialisation."""

import os

import mdtraj
import numpy as np
import openmm.app as app
import openmm.unit as unit
import pytest

from openmmbackmap import io
from openmmbackmap.errors import InputError
from openmmbackmap.mapping import Mapping

#: Largest coordinate error (nm) each format may introduce when storing float32 nm values.
PRECISION = {".xtc": 1e-3, ".gro": 1e-3, ".pdb": 1e-4, ".dcd": 1e-5, ".trr": 1e-6, ".nc": 1e-5}


def _bonds(topology):
    return sorted(tuple(sorted((a.index, b.index))) for a, b in topology.bonds())


def _save(xyz, topology, path, **kwargs):
    """Write with mdtraj directly (not through the module under test)."""
    mdtraj.Trajectory(np.asarray(xyz, dtype=np.float32), io.to_mdtraj_topology(topology), **kwargs).save(str(path))
    return path


# ------------------------------------------------------------------------------ topologies


@pytest.fixture(scope="module")
def ala2_structure(ala2_paths):
    """parmed Structure of alanine dipeptide with amber99sb-ildn parameters, and its positions in nm."""
    parmed = pytest.importorskip("parmed")
    topology, positions = io.load_topology(ala2_paths[0])
    system = app.ForceField("amber99sbildn.xml").createSystem(topology, nonbondedMethod=app.NoCutoff)
    structure = parmed.openmm.load_topology(topology, system, xyz=positions * unit.nanometer)
    return structure, positions


def _write_topology(suffix, path, ala2_paths, ala2_structure):
    structure, positions = ala2_structure
    topology, _ = io.load_topology(ala2_paths[0])
    if suffix == ".pdb":
        path.write_text(ala2_paths[0].read_text())
    elif suffix == ".cif":
        with open(path, "w") as handle:
            app.PDBxFile.writeFile(topology, positions * unit.nanometer, handle)
    elif suffix == ".gro":
        io.write_trajectory(path, positions, topology)
    else:
        structure.save(str(path))
    return positions


@pytest.mark.parametrize("suffix", [".pdb", ".cif", ".gro", ".prmtop", ".psf", ".top"])
def test_load_topology_reads_every_supported_format(suffix, tmp_path, ala2_paths, ala2_structure):
    path = tmp_path / f"ala2{suffix}"
    positions = _write_topology(suffix, path, ala2_paths, ala2_structure)
    topology, loaded = io.load_topology(path)
    assert topology.getNumAtoms() == 22
    assert [r.name for r in topology.residues()] == ["ACE", "ALA", "NME"]
    assert topology.getNumBonds() == 21
    reference, _ = io.load_topology(ala2_paths[0])
    assert _bonds(topology) == _bonds(reference)
    assert [a.name for a in topology.atoms()] == [a.name for a in reference.atoms()]
    if suffix in (".pdb", ".cif", ".gro"):
        assert loaded.shape == (22, 3)
        # PDB and PDBx store 0.001 Å, GRO 0.001 nm (rounded: half a step at most)
        np.testing.assert_allclose(loaded, positions, atol=5e-4 + 1e-6 if suffix == ".gro" else 1e-4)
    else:
        assert loaded is None


def test_load_topology_of_a_gro_with_a_box_keeps_the_box(tmp_path, ala2):
    topology, xyz = ala2
    box = np.diag([2.0, 2.5, 3.0]).astype(np.float32)
    path = io.write_trajectory(tmp_path / "boxed.gro", xyz[0], topology, unitcell_vectors=box[None])
    loaded, positions = io.load_topology(path)
    vectors = loaded.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    np.testing.assert_allclose(np.array([list(v) for v in vectors]), box, atol=1e-5)
    np.testing.assert_allclose(positions, xyz[0], atol=6e-4)


# ------------------------------------------------------------------------------ trajectories


@pytest.mark.filterwarnings("ignore:Warning. The 'netCDF4' Python package is not installed")
@pytest.mark.parametrize("suffix", [".xtc", ".dcd", ".trr", ".nc", ".pdb", ".gro"])
def test_trajectory_formats_read_back_whole_chunked_and_strided(suffix, tmp_path, ala2):
    topology, xyz = ala2
    frames = xyz[:20]
    path = _save(frames, topology, tmp_path / f"first20{suffix}")
    atol = PRECISION[suffix]

    traj = io.load_trajectory(path, topology)
    assert traj.n_frames == 20 and traj.n_atoms == 22
    assert traj.topology == io.to_mdtraj_topology(topology)
    np.testing.assert_allclose(traj.xyz, frames, atol=atol)

    chunks = list(io.iter_trajectory(path, topology, chunk=7))
    assert [c.n_frames for c in chunks] == [7, 7, 6]
    assert all(c.topology == io.to_mdtraj_topology(topology) for c in chunks)
    np.testing.assert_allclose(np.concatenate([c.xyz for c in chunks]), frames, atol=atol)

    strided = io.load_trajectory(path, topology, stride=2)
    assert strided.n_frames == 10
    np.testing.assert_allclose(strided.xyz, frames[::2], atol=atol)


# ------------------------------------------------------------------------------ writing


@pytest.mark.parametrize("suffix", [".pdb", ".dcd", ".xtc", ".gro"])
def test_write_trajectory_round_trips_atomistic_frames_with_box_and_time(suffix, tmp_path, ala2):
    topology, xyz = ala2
    frames = xyz[:5]
    boxes = np.stack([np.diag([3.0 + 0.1 * i, 3.2, 3.4]) for i in range(5)]).astype(np.float32)
    time = np.arange(5, dtype=np.float32) * 2.5 + 10.0
    path = io.write_trajectory(tmp_path / f"out{suffix}", frames, topology, time=time, unitcell_vectors=boxes)
    assert path == tmp_path / f"out{suffix}"
    traj = io.load_trajectory(path, topology)
    np.testing.assert_allclose(traj.xyz, frames, atol=PRECISION[suffix])
    if suffix == ".pdb":  # mdtraj writes a single CRYST1 record: every model gets the first box
        boxes = np.broadcast_to(boxes[:1], boxes.shape)
    np.testing.assert_allclose(traj.unitcell_vectors, boxes, atol=1e-3)
    if suffix == ".xtc":
        np.testing.assert_allclose(traj.time, time, atol=1e-3)


def test_write_trajectory_accepts_a_single_frame(tmp_path, ala2):
    topology, xyz = ala2
    path = io.write_trajectory(tmp_path / "one.dcd", xyz[0], topology)
    traj = io.load_trajectory(path, topology)
    assert traj.xyz.shape == (1, 22, 3)
    np.testing.assert_allclose(traj.xyz[0], xyz[0], atol=1e-6)


@pytest.mark.parametrize("suffix", [".pdb", ".dcd", ".xtc", ".gro"])
def test_write_trajectory_round_trips_a_cg_topology_without_elements(suffix, tmp_path, ala2):
    topology, xyz = ala2
    mapping = Mapping.from_scheme(topology, "residue_com")
    cg_topology = mapping.cg_topology
    assert all(atom.element is None for atom in cg_topology.atoms())
    beads = mapping.map(xyz[:4])
    assert beads.shape == (4, 3, 3)
    path = io.write_trajectory(tmp_path / f"cg{suffix}", beads, cg_topology)
    traj = io.load_trajectory(path, cg_topology)
    assert traj.n_atoms == 3
    np.testing.assert_allclose(traj.xyz, beads, atol=PRECISION[suffix])
    if suffix in (".pdb", ".gro"):
        loaded, positions = io.load_topology(path)
        assert [r.name for r in loaded.residues()] == ["ACE", "ALA", "NME"]
        assert [a.name for a in loaded.atoms()] == [a.name for a in cg_topology.atoms()]
        np.testing.assert_allclose(positions, beads[0], atol=PRECISION[suffix])


# ------------------------------------------------------------------------------ atomic output


def test_failed_write_leaves_no_file_and_no_temporary(tmp_path, ala2):
    topology, xyz = ala2
    frames = xyz[:5].copy()
    frames[3, 8, 0] = np.nan  # the PDB writer refuses NaN, after writing frames 0-2
    with pytest.raises(ValueError, match="NaN"):
        io.write_trajectory(tmp_path / "out.pdb", frames, topology)
    assert os.listdir(tmp_path) == []
    # atom count that does not match the topology
    with pytest.raises(ValueError):
        io.write_trajectory(tmp_path / "out.dcd", xyz[:5, :10], topology)
    assert os.listdir(tmp_path) == []


def test_failed_write_leaves_an_existing_file_untouched(tmp_path, ala2):
    topology, xyz = ala2
    path = io.write_trajectory(tmp_path / "out.pdb", xyz[:2], topology)
    before = path.read_bytes()
    frames = xyz[:5].copy()
    frames[3, 8, 0] = np.nan
    with pytest.raises(ValueError):
        io.write_trajectory(path, frames, topology)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.pdb"]


def test_successful_write_replaces_an_existing_file(tmp_path, ala2):
    topology, xyz = ala2
    path = io.write_trajectory(tmp_path / "out.xtc", xyz[:2], topology)
    io.write_trajectory(path, xyz[:6], topology)
    assert io.load_trajectory(path, topology).n_frames == 6
    assert os.listdir(tmp_path) == ["out.xtc"]


def test_atomic_output_creates_missing_folders(tmp_path, ala2):
    topology, xyz = ala2
    path = io.write_trajectory(tmp_path / "a" / "b" / "out.gro", xyz[0], topology)
    assert path.is_file()
    assert os.listdir(path.parent) == ["out.gro"]


# ------------------------------------------------------------------------------ errors


def test_missing_files_are_named(tmp_path, ala2):
    topology, _ = ala2
    missing = tmp_path / "nowhere.pdb"
    with pytest.raises(InputError, match="nowhere.pdb.*does not exist"):
        io.load_topology(missing)
    with pytest.raises(InputError, match="nowhere.xtc.*does not exist"):
        io.load_trajectory(tmp_path / "nowhere.xtc", topology)
    with pytest.raises(InputError, match="nowhere.dcd.*does not exist"):
        list(io.iter_trajectory(tmp_path / "nowhere.dcd", topology, chunk=5))


def test_unsupported_extensions_are_named(tmp_path, ala2, ala2_paths):
    topology, xyz = ala2
    odd = tmp_path / "ala2.mol2"
    odd.write_text(ala2_paths[0].read_text())
    with pytest.raises(InputError, match=r"ala2\.mol2.*unsupported format '\.mol2'"):
        io.load_topology(odd)
    with pytest.raises(InputError, match=r"ala2\.mol2.*unsupported format '\.mol2'"):
        io.load_trajectory(odd, topology)
    # a trajectory-only format is no topology
    dcd = io.write_trajectory(tmp_path / "t.dcd", xyz[:2], topology)
    with pytest.raises(InputError, match=r"t\.dcd.*unsupported format"):
        io.load_topology(dcd)
    with pytest.raises(InputError, match=r"out\.h5.*unsupported format '\.h5'"):
        io.write_trajectory(tmp_path / "out.h5", xyz[:2], topology)
    assert sorted(os.listdir(tmp_path)) == ["ala2.mol2", "t.dcd"]


@pytest.mark.parametrize("suffix", [".xtc", ".dcd", ".pdb", ".gro"])
@pytest.mark.parametrize("chunk", [0, 7])
def test_atom_count_mismatch_names_both_counts(suffix, chunk, tmp_path, ala2):
    topology, xyz = ala2
    sub = mdtraj.Trajectory(xyz[:10], io.to_mdtraj_topology(topology)).atom_slice(range(10))
    path = tmp_path / f"ten{suffix}"
    sub.save(str(path))
    with pytest.raises(InputError, match=rf"ten\{suffix}.* 10 atoms .*topology 'ala2.pdb' has 22"):
        list(io.iter_trajectory(path, topology, chunk=chunk, topology_source="ala2.pdb"))


@pytest.fixture()
def nan_dcd(tmp_path, ala2):
    """20 frames of alanine dipeptide with a NaN at atom CA (index 8) in frame 3."""
    topology, xyz = ala2
    frames = xyz[:20].copy()
    frames[3, 8, 1] = np.nan
    path = _save(frames, topology, tmp_path / "nan.dcd")
    stored = mdtraj.load(str(path), top=io.to_mdtraj_topology(topology)).xyz
    assert np.isnan(stored).sum() == 1 and np.isnan(stored[3, 8, 1])  # the NaN survives DCD
    return path


def test_nan_coordinate_is_reported_with_frame_and_atom(nan_dcd, ala2):
    topology, _ = ala2
    with pytest.raises(InputError) as error:
        io.load_trajectory(nan_dcd, topology)
    message = str(error.value)
    assert "nan.dcd" in message
    assert "frame 3 " in message
    assert "atom CA (index 8)" in message and "residue ALA 2" in message


@pytest.mark.parametrize("chunk", [2, 3])
def test_nan_frame_number_is_global_when_reading_in_chunks(nan_dcd, ala2, chunk):
    topology, _ = ala2
    chunks = io.iter_trajectory(nan_dcd, topology, chunk=chunk)
    # the chunks before the bad one come through
    assert next(chunks).n_frames == chunk
    with pytest.raises(InputError, match=r"nan\.dcd.*frame 3 .*atom CA"):
        list(chunks)


def test_nan_frame_number_with_stride_counts_frames_read(nan_dcd, ala2):
    topology, _ = ala2
    # stride 3 reads frames 0, 3, 6...: the NaN is in the second frame read
    with pytest.raises(InputError, match=r"frame 1 .*atom CA"):
        io.load_trajectory(nan_dcd, topology, stride=3)


@pytest.mark.parametrize("suffix", [".xtc", ".dcd", ".trr", ".pdb"])
def test_corrupt_trajectory_is_an_input_error_naming_the_file(suffix, tmp_path, ala2):
    topology, _ = ala2
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match=rf"garbage\{suffix}"):
        io.load_trajectory(path, topology)


@pytest.mark.parametrize("suffix", [".pdb", ".gro", ".prmtop", ".psf", ".top", ".cif"])
def test_corrupt_topology_is_an_input_error_naming_the_file(suffix, tmp_path):
    path = tmp_path / f"garbage{suffix}"
    path.write_text("this is not a topology\n" * 5)
    with pytest.raises(InputError, match=rf"garbage\{suffix}"):
        io.load_topology(path)


# ------------------------------------------------------------------------------ PBC


def test_make_molecules_whole_undoes_wrapping(ala2):
    topology, xyz = ala2
    box = np.diag([1.8, 2.0, 2.2]).astype(np.float32)
    frames = xyz[:4] - xyz[:4, :1]  # atom 0 at the origin: the molecule straddles the faces
    frames = frames + np.array([0.05, -0.1, 0.2], dtype=np.float32)
    wrapped = frames - np.floor(frames / np.diag(box)) * np.diag(box)
    bonds = np.array(_bonds(topology))

    def bond_lengths(x):
        return np.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], axis=-1)

    assert bond_lengths(wrapped).max() > 1.0  # wrapping did split the molecule
    whole = io.make_molecules_whole(wrapped, box, topology)
    assert whole.shape == wrapped.shape
    assert bond_lengths(whole).max() < 0.2
    # whole = unwrapped + one lattice translation per frame
    shift = whole - frames
    np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1], shift.shape), atol=1e-5)
    cells = shift[:, 0] / np.diag(box)
    np.testing.assert_allclose(cells, np.round(cells), atol=1e-5)
    # per-frame boxes give the same result
    np.testing.assert_allclose(io.make_molecules_whole(wrapped, np.repeat(box[None], 4, 0), topology), whole)


# ------------------------------------------------------------------------------ serialisation and bonds


def test_topology_dict_round_trip_for_ubiquitin(ubiquitin):
    topology, _ = ubiquitin
    data = io.topology_to_dict(topology)
    rebuilt = io.topology_from_dict(data)
    assert io.topology_to_dict(rebuilt) == data
    assert rebuilt.getNumAtoms() == topology.getNumAtoms() == 602
    assert _bonds(rebuilt) == _bonds(topology)
    assert [r.name for r in rebuilt.residues()] == [r.name for r in topology.residues()]
    assert [(a.name, a.element) for a in rebuilt.atoms()] == [(a.name, a.element) for a in topology.atoms()]


def test_topology_dict_keeps_particles_without_element(ala2):
    topology, _ = ala2
    cg = Mapping.from_scheme(topology, "residue_com").cg_topology
    data = io.topology_to_dict(cg)
    rebuilt = io.topology_from_dict(data)
    assert io.topology_to_dict(rebuilt) == data
    assert all(atom.element is None for atom in rebuilt.atoms())


@pytest.mark.parametrize("keep_conect", [True, False])
def test_residue_without_template_gets_its_bonds_back(keep_conect, tmp_path, ala2, ala2_paths):
    reference, _ = ala2
    lines = ala2_paths[0].read_text().replace("ALA", "ALX").splitlines(keepends=True)
    if not keep_conect:  # without CONECT records nothing links ALX to ACE
        lines = [line for line in lines if not line.startswith("CONECT")]
    path = tmp_path / "alx.pdb"
    path.write_text("".join(lines))
    bare = app.PDBFile(str(path)).topology
    alx = [r for r in bare.residues() if r.name == "ALX"][0]
    assert not any(a.residue is alx and b.residue is alx for a, b in bare.bonds())

    topology, positions = io.load_topology(path)
    assert [r.name for r in topology.residues()] == ["ACE", "ALX", "NME"]
    assert topology.getNumBonds() == reference.getNumBonds() == 21
    assert _bonds(topology) == _bonds(reference)
    # a second pass has nothing left to add
    assert io.add_missing_bonds(topology, positions) == 0


def test_pdbx_trajectory_reads_whole_and_chunked(tmp_path, ala2):
    topology, xyz = ala2
    path = tmp_path / "one.cif"
    with open(path, "w") as handle:
        app.PDBxFile.writeFile(topology, xyz[0] * unit.nanometer, handle)
    for chunk in (0, 7):
        chunks = list(io.iter_trajectory(path, topology, chunk=chunk))
        assert [c.n_frames for c in chunks] == [1]
        assert chunks[0].topology == io.to_mdtraj_topology(topology)
        np.testing.assert_allclose(chunks[0].xyz[0], xyz[0], atol=1e-4)


def test_file_sha256_reads_in_blocks_and_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "blob.bin"
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # three whole blocks and a partial one
    path.write_bytes(data)
    assert io.file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert io.file_sha256(io.bundled("alanine_dipeptide/ala2.pdb")) != io.file_sha256(path)
