"""CG Systems that need no training: an elastic network model of a mapped structure.

The switching driver runs any CG System. Martini systems come from GROMACS files
(:mod:`openmmbackmap.gromacs`) and learned force fields from :mod:`openmmbackmap.cgforce`; for a
molecule with neither, an elastic network model (ENM; Tirion, *Phys. Rev. Lett.* 1996, 77, 1905)
keeps the beads fluctuating around one structure: a harmonic spring, at its length in that
structure, between every pair of beads closer than a cutoff. It samples the native basin only,
which is what a quick test of switching or a refinement workflow needs, not a folding model.

Example
-------
>>> from openmmbackmap import io
>>> from openmmbackmap.mapping import Mapping
>>> topology, positions = io.load_topology(io.bundled("chignolin/cln025.pdb"))
>>> mapping = Mapping.from_scheme(topology, "ca")
>>> system = elastic_network_system(mapping, mapping.map(positions), cutoff=0.9)
>>> system.getNumParticles(), system.getForce(0).getNumBonds() > mapping.n_beads
(10, True)
"""

from __future__ import annotations

import numpy as np
import openmm
from openmm import unit

from openmmbackmap.errors import InputError
from openmmbackmap.mapping import Mapping

__all__ = ["elastic_network_system"]


def elastic_network_system(
    mapping: Mapping,
    bead_positions: np.ndarray,
    cutoff: float = 1.0,
    k: float = 1000.0,
    bonded_k: float = 20000.0,
) -> openmm.System:
    """An OpenMM System of the mapping's beads joined by an elastic network.

    Parameters
    ----------
    mapping
        Gives the beads' masses (:attr:`Mapping.bead_masses`) and bonds.
    bead_positions
        The structure the network holds, nm, (beads, 3).
    cutoff
        Pairs closer than this (nm) get a spring.
    k
        Spring constant, kJ/mol/nm^2.
    bonded_k
        Spring constant of bead pairs bonded in :attr:`Mapping.bead_bonds`, always included
        whatever their length. Stiffer than ``k``: at 300 K a spring fluctuates by
        sqrt(kT/k), 0.05 nm for k = 1000, enough to squeeze a C-alpha virtual bond (0.38 nm
        in a trans peptide) to a cis-like 0.29 nm, which no backmapper can rebuild with the
        right chirality; 20000 gives 0.011 nm, about what atomistic MD shows.

    Raises
    ------
    InputError
        If the positions do not fit the mapping or a parameter is out of range.
    """
    x = np.asarray(
        bead_positions.value_in_unit(unit.nanometer) if unit.is_quantity(bead_positions) else bead_positions,
        dtype=float,
    )
    if x.shape != (mapping.n_beads, 3) or not np.isfinite(x).all():
        raise InputError(f"bead positions must be finite with shape {(mapping.n_beads, 3)}; got {x.shape}")
    if cutoff <= 0 or k < 0 or bonded_k < 0:
        raise InputError(f"elastic network: cutoff must be > 0 and force constants >= 0; got {cutoff}, {k}, {bonded_k}")
    system = openmm.System()
    for mass in mapping.bead_masses:
        system.addParticle(float(mass))
    springs = openmm.HarmonicBondForce()
    distances = np.linalg.norm(x[:, None] - x[None], axis=-1)
    bonded = {tuple(sorted(map(int, pair))) for pair in mapping.bead_bonds}
    for i, j in zip(*np.triu_indices(len(x), 1)):
        pair = (int(i), int(j))
        if pair in bonded:
            springs.addBond(*pair, distances[pair], bonded_k)
        elif distances[pair] < cutoff:
            springs.addBond(*pair, distances[pair], k)
    system.addForce(springs)
    return system
