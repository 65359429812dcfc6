"""Shared fixtures: real structures from the bundled data and from vermouth's test data."""

from pathlib import Path

import numpy as np
import pytest
import vermouth

from openmmbackmap import io

#: martinize2's own inputs and outputs, shipped with vermouth.
VERMOUTH_CASES = Path(vermouth.__file__).parent / "tests" / "data" / "integration_tests"


@pytest.fixture(scope="session")
def ala2_paths() -> tuple[Path, Path]:
    """Bundled alanine dipeptide topology and 1 ns trajectory."""
    return io.bundled("alanine_dipeptide/ala2.pdb"), io.bundled("alanine_dipeptide/ala2.xtc")


@pytest.fixture(scope="session")
def ala2(ala2_paths):
    """(topology, trajectory coordinates in nm) of the bundled alanine dipeptide run."""
    topology, _ = io.load_topology(ala2_paths[0])
    trajectory = io.load_trajectory(ala2_paths[1], topology)
    return topology, trajectory.xyz


@pytest.fixture(scope="session")
def ubiquitin():
    """1UBQ heavy atoms without its crystal waters (vermouth's martinize2 test input): (topology, positions nm)."""
    import openmm.app as app
    import openmm.unit as unit

    topology, positions = io.load_topology(VERMOUTH_CASES / "tier-1" / "1UBQ" / "aa.pdb")
    modeller = app.Modeller(topology, positions * unit.nanometer)
    modeller.delete([r for r in modeller.topology.residues() if r.name == "HOH"])
    return modeller.topology, np.asarray(modeller.positions.value_in_unit(unit.nanometer))


@pytest.fixture(scope="session")
def martini3_itp() -> Path:
    """The Martini 3 master topology (GPL-3.0, not shipped: see :func:`openmmbackmap.martinize.martini3_itp`)."""
    from openmmbackmap.errors import InputError
    from openmmbackmap.martinize import martini3_itp as find

    try:
        return find()
    except InputError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def features(ala2):
    """Benchmark topology features of the bundled alanine dipeptide."""
    from openmmbackmap.bench.structure import TopologyFeatures

    return TopologyFeatures.from_topology(ala2[0])


@pytest.fixture(scope="session")
def ubiquitin_features(ubiquitin):
    """Benchmark topology features of ubiquitin (heavy atoms, waters removed)."""
    from openmmbackmap.bench.structure import TopologyFeatures

    return TopologyFeatures.from_topology(ubiquitin[0])


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module's tests (deterministic training; CI has two cores).

    Model test modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
