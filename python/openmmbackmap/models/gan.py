"""The ``gan`` family: adversarial backmapping, one atom at a time, in its local environment.

The approach of DeepBackmap (Stieffenhofer, Wand and Bereau, arXiv:2003.07753 and
arXiv:2101.04996): a conditional generative adversarial network places the atoms of a molecule
sequentially, each conditioned on its *local environment* (the CG beads and the atoms already
placed around it), and the generator's objective carries force-field energy terms of the
atomistic force field as a physical prior.

What is kept and what is changed
--------------------------------
DeepBackmap voxelises the environment of each atom into a grid (one channel per atom type and
bonded relation) aligned with a local frame, and a 3-D CNN generates a density for the new
atom. Here the environment is a **point cloud in a local frame** instead, for three reasons:
a point cloud is exact (a 0.05 nm voxel grid cannot represent the 0.001-0.003 nm spread of
bond lengths that the bond and angle JSD targets measure); a small MLP over a few points is
some 1000 times cheaper than a 3-D CNN over a grid, which is what makes the speed targets
reachable on two CPU cores; and the local frame makes the model rotation- and
translation-equivariant by construction, as the voxel approach does with its aligned grid.
The ideas of the paper stay: local environment, sequential placement with teacher forcing in
training, adversarial training, the force-field prior in the generator's loss with a weight
that is a training option (0: the ablation).

- **Placement order**: the Z-matrix of the ``ic`` family
  (:func:`~openmmbackmap.models.ic.build_zmatrix`, main chain first), so every atom ``x`` has
  three placed references ``(a, b, c)`` (``a`` bonded to ``x``). Atoms that are a bead on
  their own (``backbone``, ``ca``) sit on it. Without three such anchors (``residue_com``) the
  first atoms are placed in a frame of three beads (the Z-matrix's virtual points are
  replaced by beads), and the finished molecule is superposed onto the beads (proper rotation,
  as the ``ic`` family). Rows are placed level by level, with the levels of
  :func:`sibling_levels`: atoms of one parent one after another, so the second and third
  hydrogen of a methyl group see the first (otherwise their environments are identical and
  two of them land on one spot).
- **Local frame** of ``x``: origin ``a``, ``e1 = (a - b)/|a - b|``, ``e3`` normal to the plane
  ``a, b, c``, ``e2 = e3 x e1`` (the NeRF frame). A mirror image is not a rotation, so the
  handedness of a centre is not given by the frame, and the force field cannot teach it (amber
  has no improper on C-alpha). It is imposed: a row that sets a handedness (a chiral improper,
  or the last substituent of a chiral centre placed from it) knows the two atoms that, with
  ``a``, span the plane ``x`` must lie on one side of, and an atom generated on the wrong side
  is reflected through that plane, which keeps its bond to ``a`` and its angles to the two
  (:attr:`Environment.chirality`: the side of the reference structures), and kept 15 degrees
  off it. A generator left to learn handedness got it
  right on the molecules it was trained on, but not on one it never saw (transferred from
  peptides to chignolin, a third of the threonine CB centres came out inverted). Likewise
  the cis/trans state of each non-proline peptide bond: the row whose atom completes the bond's
  omega (``CA-C-N-CA``, as the benchmark counts cis peptides; ``x``, ``a`` and ``b`` among its
  atoms, the fourth placed before) keeps the reference's sign of cos(omega)
  (:attr:`Environment.amide_side`); an atom that gives the other sign is turned by 180 degrees
  about ``a-b``, which keeps its bond length and angle and moves the four atoms' plane to the
  other state. A learnt trans state failed rarely but did fail (alanine dipeptide
  ``residue_com``: 5 cis in 10,000 frames; transferred to chignolin: up to 50 in 3,000).
- **Environment** (:class:`Environment`): a fixed, topology-derived list of slots per atom:
  the references ``a, b, c`` and the nearest atoms placed at earlier levels (along bonds),
  and the nearest beads. Each slot is its position in the local frame plus chemistry that
  transfers between molecules: element, bond-graph distance to ``x`` (bonded, angle,
  dihedral partner, further), bead flag. The atom to place is described by its element,
  its number of bonded atoms and of bonded hydrogens, and the element of ``a``. No weight
  belongs to one atom of one molecule, so the networks can be applied to another molecule's
  environment list (the chignolin transfer test).
- **Generator**: MLP(environment, atom descriptor, Gaussian noise, a noise angle) -> bond
  length, angle and torsion of ``x`` about ``a, b, c``. Length and angle are linear in the
  output, in units of the training data's spread about its mean (so the critic's inputs are
  of order one), clipped in use to 5 sigma and, for bonds and angles of the force field, to
  8 % and 20 degrees, so bonds stay within the bond score's 10 % whatever the noise. The
  torsion is a direction on the circle turned by the noise angle (:meth:`GANBackmapper.generate`:
  multimodal rotamers become a smooth map of the circle).
- **Discriminator** (:class:`Discriminator`): MLP(environment, atom descriptor, the placed
  atom: standardised bond length and angle, torsion cosine and sine, local coordinates and
  distances to every slot). It judges the atom *in its environment*, the conditional question
  of DeepBackmap's critic; whole-structure internal coordinates would tie the critic to one
  molecule, and with it any transfer. Trained with the logistic (non-saturating) GAN loss and
  an R1 gradient penalty: DeepBackmap's Wasserstein loss with gradient penalty was tried
  first and, on these narrow distributions (0.0005 nm for a constrained C-H), drove the
  generator to its bounds and kept it there.
- **Force-field prior**: :class:`ForceFieldPrior` evaluates bonds (constraints as stiff
  bonds at their distance), angles, periodic torsions and Lennard-Jones (with the force
  field's exceptions and 1-4 scaling) of an ``openmm.System`` in torch. In training each
  generated atom is charged with the terms between it and the atoms placed before it (each
  term once over the molecule), in kT per atom, times ``prior_weight``.

Examples
--------
>>> from openmmbackmap import io
>>> from openmmbackmap.models import load_backmapper
>>> backmapper = load_backmapper(io.bundled("models/ala2_backbone_gan.pt"))
>>> topology, positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
>>> backmapper(backmapper.mapping.map(positions), seed=1).shape
(22, 3)
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import openmm
import torch

from openmmbackmap import geometry, torch_geometry
from openmmbackmap.errors import MappingError
from openmmbackmap.mapping import Mapping
from openmmbackmap.relax import CONSTRAINT_BOND_K  # constraints as stiff bonds, as relaxation does
from openmmbackmap.models.ic import ZMatrix, ZMatrixModule, bond_graph, build_zmatrix

#: Boltzmann constant, kJ/mol/K (the prior is in units of kT).
BOLTZMANN = 0.0083144626
#: Coulomb's constant in OpenMM's units, kJ nm / (mol e^2).
ONE_4PI_EPS0 = 138.935456
#: Elements with their own one-hot channel; everything else shares the last one.
ELEMENTS = ("H", "C", "N", "O", "S")
#: Bond-graph distances with their own channel (0: x belongs to the bead; the last: this many or more).
MAX_HOPS = 4
#: Largest relative deviation of a bond length from the force field's (the ``tanh`` bound).
BOND_SPREAD = 0.08
#: Largest deviation of a bond angle from the force field's, radians (20 degrees).
ANGLE_SPREAD = math.radians(20.0)
#: Force-field geometry: the generator's unit for an angle x-a-b that no force-field term holds
#: (b not bonded to a: a backbone atom placed from the C-alpha trace, a ring atom from across the
#: ring), radians. Such angles follow the conformation; the generator learns their offsets.
UNBONDED_ANGLE_SCALE = 0.1
#: Smallest units of the generator's length and angle outputs (a constrained bond has no spread).
MIN_LENGTH_SCALE = 2e-4
MIN_ANGLE_SCALE = 5e-3
#: An improper torsion this far (radians) from 0 and 180 degrees in the reference is chiral: its side is kept.
CHIRAL_FROM_PLANAR = math.radians(20.0)
#: How close (radians, seen from a) a generated atom that keeps a side may come to its plane.
CHIRAL_MARGIN = math.radians(15.0)
#: A peptide bond's cis/trans state is held when the reference frames' mean cos(omega) is at
#: least this far from 0 (clearly cis or trans, not between).
AMIDE_FROM_PERPENDICULAR = 0.5
#: Where the reference geometry of a ``gan`` comes from (``build_environment``).
GEOMETRY_SOURCES = ("data", "forcefield")
#: Length scale of local coordinates fed to the networks, nm.
LENGTH_SCALE = 0.3


# ---------------------------------------------------------------------- force-field prior


class ForceFieldPrior(torch.nn.Module):
    """Energy terms of an ``openmm.System``, evaluated in torch (differentiable, any dtype).

    Read from the System: ``HarmonicBondForce``; constraints as harmonic bonds at the
    constraint distance with force constant ``constraint_k`` (kept apart as ``"constraints"``:
    OpenMM itself has no energy for them); ``HarmonicAngleForce``; ``PeriodicTorsionForce``;
    ``NonbondedForce`` without cutoff: Lennard-Jones with Lorentz-Berthelot combination for
    every pair that is not an exception, and the exceptions' own sigma, epsilon and charge
    product (1-4 scaling; zero for excluded 1-2 and 1-3 pairs, which are dropped); Coulomb on
    the same pairs. Implicit solvent, CMAP and custom forces are not read.

    Parameters
    ----------
    system
        The atomistic force field of the training system, e.g.
        :func:`openmmbackmap.data.reference_system`.
    constraint_k
        Force constant of constrained bonds, kJ/mol/nm^2.

    Examples
    --------
    >>> from openmmbackmap import io
    >>> from openmmbackmap.data import reference_system
    >>> topology, positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
    >>> prior = ForceFieldPrior(reference_system(topology))
    >>> sorted(prior.energies(torch.tensor(positions[None])))
    ['angles', 'bonds', 'constraints', 'coulomb', 'lennard_jones', 'torsions']
    """

    def __init__(self, system: openmm.System, constraint_k: float = CONSTRAINT_BOND_K):
        super().__init__()
        n = system.getNumParticles()
        bonds, bond_params, angles, angle_params, torsions, torsion_params = [], [], [], [], [], []
        constraints = [system.getConstraintParameters(i) for i in range(system.getNumConstraints())]
        nonbonded: Optional[openmm.NonbondedForce] = None
        for force in system.getForces():
            if isinstance(force, openmm.HarmonicBondForce):
                for i in range(force.getNumBonds()):
                    p, q, length, k = force.getBondParameters(i)
                    bonds.append((p, q))
                    bond_params.append((_value(length), _value(k)))
            elif isinstance(force, openmm.HarmonicAngleForce):
                for i in range(force.getNumAngles()):
                    p, q, r, theta, k = force.getAngleParameters(i)
                    angles.append((p, q, r))
                    angle_params.append((_value(theta), _value(k)))
            elif isinstance(force, openmm.PeriodicTorsionForce):
                for i in range(force.getNumTorsions()):
                    p, q, r, s, periodicity, phase, k = force.getTorsionParameters(i)
                    torsions.append((p, q, r, s))
                    torsion_params.append((periodicity, _value(phase), _value(k)))
            elif isinstance(force, openmm.NonbondedForce):
                nonbonded = force
        pairs, pair_params = [], []
        if nonbonded is not None:
            if nonbonded.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff:
                raise MappingError("the force-field prior evaluates NonbondedForce without cutoff only (NoCutoff)")
            particles = [nonbonded.getParticleParameters(i) for i in range(n)]
            charge = np.array([_value(p[0]) for p in particles])
            sigma = np.array([_value(p[1]) for p in particles])
            epsilon = np.array([_value(p[2]) for p in particles])
            exceptions = {}
            for i in range(nonbonded.getNumExceptions()):
                p, q, qq, s, e = nonbonded.getExceptionParameters(i)
                exceptions[(min(p, q), max(p, q))] = (_value(qq), _value(s), _value(e))
            for i in range(n):
                for j in range(i + 1, n):
                    if (i, j) in exceptions:
                        qq, s, e = exceptions[(i, j)]
                        if qq == 0.0 and e == 0.0:
                            continue  # excluded pair
                    else:
                        qq, s, e = charge[i] * charge[j], 0.5 * (sigma[i] + sigma[j]), math.sqrt(epsilon[i] * epsilon[j])
                    pairs.append((i, j))
                    pair_params.append((qq, s, e))

        def buffer(name: str, value, width: int, dtype=torch.float64) -> None:
            array = np.asarray(value, dtype=np.float64 if dtype == torch.float64 else np.int64).reshape(-1, width)
            self.register_buffer(name, torch.as_tensor(array, dtype=dtype))

        self.n_atoms = n
        buffer("bond_atoms", bonds, 2, torch.long)
        buffer("bond_params", bond_params, 2)
        buffer("constraint_atoms", [c[:2] for c in constraints], 2, torch.long)
        buffer("constraint_params", [(_value(c[2]), constraint_k) for c in constraints], 2)
        buffer("angle_atoms", angles, 3, torch.long)
        buffer("angle_params", angle_params, 2)
        buffer("torsion_atoms", torsions, 4, torch.long)
        buffer("torsion_params", torsion_params, 3)
        buffer("pair_atoms", pairs, 2, torch.long)
        buffer("pair_params", pair_params, 3)

    # Per-term energies from the terms' points (..., terms, k, 3) and parameters (terms, m), kJ/mol.

    @staticmethod
    def bond_terms(points: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        r = torch.linalg.vector_norm(points[..., 1, :] - points[..., 0, :], dim=-1)
        return 0.5 * params[:, 1] * (r - params[:, 0]) ** 2

    @staticmethod
    def angle_terms(points: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        theta = torch_geometry.angle(points[..., 0, :], points[..., 1, :], points[..., 2, :])
        return 0.5 * params[:, 1] * (theta - params[:, 0]) ** 2

    @staticmethod
    def torsion_terms(points: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        phi = torch_geometry.dihedral(points[..., 0, :], points[..., 1, :], points[..., 2, :], points[..., 3, :])
        return params[:, 2] * (1.0 + torch.cos(params[:, 0] * phi - params[:, 1]))

    @staticmethod
    def pair_terms(points: torch.Tensor, params: torch.Tensor, min_sigma: float = 0.0) -> Tuple[torch.Tensor, torch.Tensor]:
        """Lennard-Jones and Coulomb energies of pairs; ``min_sigma > 0`` floors r at that many sigma (a soft core)."""
        r = torch.linalg.vector_norm(points[..., 1, :] - points[..., 0, :], dim=-1)
        if min_sigma > 0.0:
            r = torch.maximum(r, min_sigma * params[:, 1])
        s6 = (params[:, 1] / r) ** 6
        return 4.0 * params[:, 2] * (s6 * s6 - s6), ONE_4PI_EPS0 * params[:, 0] / r

    def energies(self, xyz: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Energy of each kind of term, (frames,) kJ/mol, of coordinates (frames, atoms, 3) nm."""
        params = {name: getattr(self, name).to(xyz.dtype) for name in
                  ("bond_params", "constraint_params", "angle_params", "torsion_params", "pair_params")}
        lj, coulomb = self.pair_terms(xyz[:, self.pair_atoms], params["pair_params"])
        return {
            "bonds": self.bond_terms(xyz[:, self.bond_atoms], params["bond_params"]).sum(-1),
            "constraints": self.bond_terms(xyz[:, self.constraint_atoms], params["constraint_params"]).sum(-1),
            "angles": self.angle_terms(xyz[:, self.angle_atoms], params["angle_params"]).sum(-1),
            "torsions": self.torsion_terms(xyz[:, self.torsion_atoms], params["torsion_params"]).sum(-1),
            "lennard_jones": lj.sum(-1),
            "coulomb": coulomb.sum(-1),
        }

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        """Total of the bonded terms (constraints included) and Lennard-Jones, (frames,) kJ/mol: the prior's energy."""
        e = self.energies(xyz)
        return e["bonds"] + e["constraints"] + e["angles"] + e["torsions"] + e["lennard_jones"]

    def reference_geometry(
        self, temperature: float = 300.0
    ) -> Tuple[Dict[Tuple[int, int], Tuple[float, float]], Dict[Tuple[int, int, int], Tuple[float, float]]]:
        """Equilibrium bond lengths (bonds and constraints) and angles with their thermal spread, by sorted atom tuples.

        Values are ``(equilibrium, sqrt(kT / k))`` in nm or radians: the standard deviation of a
        harmonic term alone at ``temperature`` (0 for a constraint).
        """
        kt = BOLTZMANN * temperature
        lengths = {}
        for (i, j), (r0, k) in zip(self.bond_atoms.tolist(), self.bond_params.tolist()):
            lengths[(min(i, j), max(i, j))] = (r0, math.sqrt(kt / k) if k > 0 else 0.0)
        for (i, j), (r0, _) in zip(self.constraint_atoms.tolist(), self.constraint_params.tolist()):
            lengths[(min(i, j), max(i, j))] = (r0, 0.0)
        angles = {}
        for (i, j, k), (theta0, kk) in zip(self.angle_atoms.tolist(), self.angle_params.tolist()):
            angles[(min(i, k), j, max(i, k))] = (theta0, math.sqrt(kt / kk) if kk > 0 else 0.0)
        return lengths, angles


def _value(quantity) -> float:
    """A plain float in OpenMM's default units (nm, kJ/mol, radians, e) from a Quantity or a number."""
    return float(quantity._value) if hasattr(quantity, "_value") else float(quantity)


# ---------------------------------------------------------------------- environment


@dataclass(frozen=True)
class Environment:
    """The sequential build of one topology: placement order, frames and environment slots.

    Points are indexed in one array: atoms ``0..n_atoms-1``, then the three frame points of
    the Z-matrix (``n_atoms + k``: the beads :attr:`frame_beads`), then every bead
    (``n_atoms + 3 + k``), then an empty point (the padding of missing slots). Every array is
    in the Z-matrix's row order; rows are placed level by level.

    Attributes
    ----------
    zmatrix
        The Z-matrix the order and references come from.
    frame_beads
        The beads that stand in for the Z-matrix's virtual points (unanchored builds).
    slots
        (rows, slots) point indices of each atom's environment (references first).
    slot_features
        (rows, slots, F) chemistry of each slot (zeros for padding).
    atom_features
        (rows, T) descriptor of each atom to place.
    r0, r_spread, theta0, theta_spread
        (rows,) reference bond length and angle of each row and the largest deviation from them.
    r_scale, theta_scale
        (rows,) deviation of length and angle per unit of the generator's output.
    chirality, chiral_slots
        (rows,) the side of the plane ``a, s1, s2`` the row's atom ``x`` keeps: the sign of
        ``det[s1 - a, s2 - a, x - a]`` in the reference structures, for a row that sets a
        handedness (a chiral improper, or the last substituent of a chiral centre ``a``; 0 for
        every other row), and (rows, 2) the slots of ``s1`` and ``s2`` (:func:`_chirality`).
    amide_side, amide_slots
        (rows,) for the row that completes a non-proline peptide bond's omega: the sign of the
        reference's mean cos(omega) (-1: trans), which generated atoms keep; 0 for every other
        row. (rows, 4) where the omega's four atoms are, in order: -1 for the row's own ``x``,
        else the slot (:func:`_amide_sides`).
    """

    zmatrix: ZMatrix
    frame_beads: np.ndarray
    slots: np.ndarray
    slot_features: np.ndarray
    atom_features: np.ndarray
    r0: np.ndarray
    r_spread: np.ndarray
    theta0: np.ndarray
    theta_spread: np.ndarray
    r_scale: np.ndarray
    theta_scale: np.ndarray
    chirality: np.ndarray
    chiral_slots: np.ndarray
    amide_side: np.ndarray
    amide_slots: np.ndarray

    @property
    def n_slot_features(self) -> int:
        return self.slot_features.shape[-1]


def _element_channels(symbol: Optional[str]) -> np.ndarray:
    out = np.zeros(len(ELEMENTS) + 1)
    out[ELEMENTS.index(symbol) if symbol in ELEMENTS else len(ELEMENTS)] = 1.0
    return out


def _hop_channels(hops: float) -> np.ndarray:
    out = np.zeros(MAX_HOPS + 1)
    out[int(min(hops, MAX_HOPS))] = 1.0
    return out


def sibling_levels(zmatrix: ZMatrix) -> ZMatrix:
    """The Z-matrix with levels that place atoms of one parent one after another.

    Rows of one level are placed together, each blind to the others. The ``ic`` levels put
    siblings such as the three hydrogens of a methyl group on one level: their environments
    are then identical, and a generator that cannot tell them apart puts two of them on the
    same spot as often as not. Here a row also waits for every earlier row with the same
    parent ``a``, so each sibling sees the ones placed before it, as in DeepBackmap's strictly
    sequential build.
    """
    n = zmatrix.n_atoms
    level = np.zeros(n + 3, dtype=np.int64)
    last_child = {}
    rows_level = np.zeros(len(zmatrix.rows), dtype=np.int64)
    for k, (x, a, b, c) in enumerate(zmatrix.rows):
        rows_level[k] = level[x] = 1 + max(level[a], level[b], level[c], last_child.get(int(a), 0))
        last_child[int(a)] = rows_level[k]
    return dataclasses.replace(zmatrix, level=rows_level)


def build_environment(
    mapping: Mapping,
    prior: ForceFieldPrior,
    reference_xyz: Optional[np.ndarray],
    atom_slots: int = 8,
    bead_slots: int = 4,
    template: Optional[np.ndarray] = None,
    temperature: float = 300.0,
) -> Environment:
    """The environment description of ``mapping``'s topology (topology-only, plus reference values).

    The generator works in units of a reference bond length and angle per row, which come
    either from data (``reference_xyz``: a model of one molecule) or from the force field
    (``reference_xyz=None``: a model that can be applied to molecules it never saw, because the
    same definition holds for any molecule with an ``openmm.System``).

    Parameters
    ----------
    mapping
        The CG mapping.
    prior
        The force field's terms: its bond lengths and angles cap how far the generator may
        deviate from the reference in use (8 %, 20 degrees), and give the reference itself
        when ``reference_xyz`` is None.
    reference_xyz
        Atomistic frames (frames, atoms, 3), nm (the training frames): mean and spread of every
        row's bond length and angle, about which the generator works in standard units.
        None: the force field's equilibrium values and thermal spreads ``sqrt(kT / k)``
        (:meth:`ForceFieldPrior.reference_geometry`); an angle no force-field term holds is
        measured on ``template``, in units of :data:`UNBONDED_ANGLE_SCALE`.
    atom_slots, bead_slots
        Placed atoms and beads in each environment.
    template
        (atoms, 3) nm, one structure of the molecule (force-field geometry only).
    temperature
        Kelvin of the thermal spreads (force-field geometry only).

    Raises
    ------
    MappingError
        With force-field geometry: no ``template``, or an atom placed from a reference it is not
        bonded to in the force field (an unanchored mapping such as ``residue_com``).
    """
    zmatrix = sibling_levels(build_zmatrix(mapping, chain_first=True))
    topology = mapping.topology
    atoms = list(topology.atoms())
    n, n_beads = mapping.n_atoms, mapping.n_beads
    symbols = [a.element.symbol if a.element is not None else None for a in atoms]
    adjacency, hops = bond_graph(topology)
    neighbours = [adjacency.indices[adjacency.indptr[i] : adjacency.indptr[i + 1]] for i in range(n)]
    weighted = [np.array([i for i, w in zip(b.atom_indices, b.weights) if w > 0], dtype=np.int64) for b in mapping.beads]
    bead_hops = np.array([[hops[x, members].min() if len(members) else np.inf for members in weighted] for x in range(n)])

    rows = zmatrix.rows
    # Frame beads: the bead the root belongs to most, then the two nearest others along bonds.
    root = int(rows[0, 0])
    order = np.lexsort((np.arange(n_beads), bead_hops[root]))
    frame_beads = order[:3] if n_beads >= 3 else np.zeros(3, dtype=np.int64)
    bead_point = n + 3
    empty = n + 3 + n_beads
    level_of = np.zeros(n + 3, dtype=np.int64)  # anchors and frame points: level 0
    for (x, *_), lv in zip(rows, zmatrix.level):
        level_of[x] = lv

    lengths, angle_table = prior.reference_geometry(temperature)
    if reference_xyz is None and template is None:
        raise MappingError("force-field geometry needs a template structure of the molecule (its angles that no "
                           "force-field term holds are measured on it)")
    measured_xyz = np.asarray(reference_xyz if reference_xyz is not None else np.asarray(template)[None], dtype=np.float64)
    extended = np.concatenate([measured_xyz, mapping.map(measured_xyz)[:, frame_beads].astype(np.float64)], axis=1)

    def describe(i: int) -> str:
        return f"{atoms[i].residue.name}{atoms[i].residue.id}:{atoms[i].name}" if i < n else "a frame bead"

    n_features = (len(ELEMENTS) + 1) + 1 + (MAX_HOPS + 1) + 1  # element, bead flag, hops, present
    slots = np.full((len(rows), atom_slots + bead_slots), empty, dtype=np.int64)
    slot_features = np.zeros((len(rows), atom_slots + bead_slots, n_features), dtype=np.float32)
    atom_features = np.zeros((len(rows), 2 * (len(ELEMENTS) + 1) + 2 * 5 + 1), dtype=np.float32)
    r0, r_spread, r_scale = np.zeros(len(rows)), np.zeros(len(rows)), np.zeros(len(rows))
    theta0, theta_spread, theta_scale = np.zeros(len(rows)), np.zeros(len(rows)), np.zeros(len(rows))
    for k, (x, a, b, c) in enumerate(rows):
        lv = zmatrix.level[k]
        placed = [j for j in range(n) if level_of[j] < lv and j != x and (j in zmatrix.anchor_atoms or j in rows[:, 0])]
        placed = [j for j in placed if not (level_of[j] == 0 and j not in zmatrix.anchor_atoms)]
        references = [int(j) for j in (a, b, c) if j < n]
        others = sorted((j for j in placed if j not in references), key=lambda j: (hops[x, j], -level_of[j], j))
        chosen = (references + others)[:atom_slots]
        for s, j in enumerate(chosen):
            slots[k, s] = j
            slot_features[k, s] = np.r_[_element_channels(symbols[j]), 0.0, _hop_channels(hops[x, j]), 1.0]
        for s, bead in enumerate(np.lexsort((np.arange(n_beads), bead_hops[x]))[:bead_slots]):
            slots[k, atom_slots + s] = bead_point + bead
            slot_features[k, atom_slots + s] = np.r_[np.zeros(len(ELEMENTS) + 1), 1.0, _hop_channels(bead_hops[x, bead]), 1.0]
        n_h = sum(symbols[j] == "H" for j in neighbours[x])
        parent = _element_channels(symbols[a]) if a < n else np.zeros(len(ELEMENTS) + 1)
        atom_features[k] = np.r_[_element_channels(symbols[x]), parent, np.eye(5)[min(len(neighbours[x]), 4)],
                                 np.eye(5)[min(n_h, 4)], float(a >= n)]
        # Reference geometry, about which the generator works in standard units (which keeps the
        # critic's inputs of order one); bounds in use: 5 units, and for a bond (angle) of the
        # force field also 8 % of its length (20 degrees).
        bond = lengths.get((min(x, a), max(x, a))) if a < n else None
        angle = angle_table.get((min(x, b), a, max(x, b))) if a < n and b < n else None
        measured_r = np.linalg.norm(extended[:, x] - extended[:, a], axis=-1)
        v1, v2 = extended[:, x] - extended[:, a], extended[:, b] - extended[:, a]
        cos = (v1 * v2).sum(-1) / np.linalg.norm(v1, axis=-1) / np.linalg.norm(v2, axis=-1)
        measured_theta = np.arccos(np.clip(cos, -1.0, 1.0))
        if reference_xyz is not None:
            r0[k], r_scale[k] = measured_r.mean(), max(measured_r.std(), MIN_LENGTH_SCALE)
            theta0[k], theta_scale[k] = measured_theta.mean(), max(measured_theta.std(), MIN_ANGLE_SCALE)
        else:
            if bond is None:
                raise MappingError(
                    f"force-field geometry: {describe(x)} is placed from {describe(a)}, and the force field has no bond "
                    f"between them; it needs every placed atom bonded to its reference (an anchored mapping such as "
                    f"ca or backbone)"
                )
            r0[k], r_scale[k] = bond[0], max(bond[1], MIN_LENGTH_SCALE)
            if angle is None:
                theta0[k], theta_scale[k] = measured_theta[0], UNBONDED_ANGLE_SCALE
            else:
                theta0[k], theta_scale[k] = angle[0], max(angle[1], MIN_ANGLE_SCALE)
        r_spread[k], theta_spread[k] = 5.0 * r_scale[k], 5.0 * theta_scale[k]
        if bond is not None:
            r_spread[k] = min(r_spread[k], BOND_SPREAD * bond[0])
        if angle is not None:
            theta_spread[k] = min(theta_spread[k], ANGLE_SPREAD)
    chirality, chiral_slots = _chirality(topology, zmatrix, slots, extended)
    amide_side, amide_slots = _amide_sides(topology, zmatrix, slots, extended)
    return Environment(zmatrix, np.asarray(frame_beads, dtype=np.int64), slots, slot_features, atom_features,
                       r0, r_spread, theta0, theta_spread, r_scale, theta_scale, chirality, chiral_slots,
                       amide_side, amide_slots)


def _amide_sides(topology, zmatrix: ZMatrix, slots: np.ndarray, reference: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per row, the cis/trans state it keeps and where the omega's atoms are (:attr:`Environment.amide_side`).

    The omegas are those of :class:`~openmmbackmap.bench.structure.TopologyFeatures` (the
    benchmark's cis-peptide definition) before a residue that may not be cis (not in
    ``CIS_ALLOWED``). A row keeps one when ``x``, ``a`` and ``b`` are three of its atoms and the
    fourth is among the row's slots (placed before): then ``x`` completes the omega, and a half
    turn about ``a-b`` takes it to the other state (the omega row itself, ``CA-N-C-CA``; with
    C-alpha beads, ``N`` placed between the two C-alphas and ``C``). The state is the sign of the
    reference frames' mean cos(omega), kept when at least :data:`AMIDE_FROM_PERPENDICULAR` from 0.
    """
    from openmmbackmap.bench.structure import CIS_ALLOWED, TopologyFeatures

    features = TopologyFeatures.from_topology(topology)
    omegas = [omega for omega, name in zip(features.omegas.tolist(), features.omega_residues) if name not in CIS_ALLOWED]
    rows = zmatrix.rows
    side = np.zeros(len(rows))
    where = np.zeros((len(rows), 4), dtype=np.int64)
    for omega in omegas:
        cosine = float(np.cos(geometry.dihedrals(reference, np.array([omega])).astype(np.float64)).mean())
        if abs(cosine) < AMIDE_FROM_PERPENDICULAR:
            continue
        for k, (x, a, b, _) in enumerate(rows.tolist()):
            rest = [atom for atom in omega if atom not in (x, a, b)]
            if len(rest) == 1 and rest[0] in slots[k]:
                side[k] = np.sign(cosine)
                where[k] = [-1 if atom == x else int(np.flatnonzero(slots[k] == atom)[0]) for atom in omega]
                break
    return side, where


def _chirality(topology, zmatrix: ZMatrix, slots: np.ndarray, reference: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per row, the handedness it must keep (:attr:`Environment.chirality`) and the two slots it is measured with.

    Two kinds of rows keep a side: a chiral improper (``b`` and ``c`` substituents of ``a`` like
    ``x``, its torsion at least :data:`CHIRAL_FROM_PLANAR` from planar in the reference: a C-alpha's
    HA, a CH2's second hydrogen), measured against ``b`` and ``c``; and the row that places, from
    the centre, the last substituent of a chiral centre of
    :class:`~openmmbackmap.bench.structure.TopologyFeatures` (the benchmark's definition), measured
    against the centre's two other substituents (both must be among its slots): with the ``ca``
    mapping a C-alpha's last substituent, N, is placed by a proper torsion from the C-alpha trace,
    and no improper holds its side. The sign is that of the reference frames' mean chiral volume.
    """
    from openmmbackmap.bench.structure import TopologyFeatures

    rows = zmatrix.rows
    chirality = np.zeros(len(rows))
    chiral_slots = np.zeros((len(rows), 2), dtype=np.int64)

    def keep(k: int, first: int, second: int) -> None:
        x, a = rows[k, 0], rows[k, 1]
        v1, v2 = reference[:, first] - reference[:, a], reference[:, second] - reference[:, a]
        volume = (np.cross(v1, v2) * (reference[:, x] - reference[:, a])).sum(-1)
        chirality[k] = np.sign(volume.mean())
        chiral_slots[k] = [int(np.flatnonzero(slots[k] == first)[0]), int(np.flatnonzero(slots[k] == second)[0])]

    torsion = np.angle(np.exp(1j * geometry.dihedrals(reference, rows).astype(np.float64)).mean(axis=0))
    to_planar = np.minimum(np.abs(torsion), math.pi - np.abs(torsion))
    for k in np.flatnonzero(zmatrix.improper & (to_planar > CHIRAL_FROM_PLANAR)):
        if rows[k, 2] in slots[k] and rows[k, 3] in slots[k]:
            keep(k, rows[k, 2], rows[k, 3])
    row_of = {int(x): k for k, x in enumerate(rows[:, 0])}
    for centre, *substituents in TopologyFeatures.from_topology(topology).chiral_centres.tolist():
        placed = [s for s in substituents if s in row_of]
        if not placed:
            continue  # all three are anchors: the beads fix the handedness
        last = max(placed, key=lambda s: (zmatrix.level[row_of[s]], row_of[s]))
        k = row_of[last]
        others = [s for s in substituents if s != last]
        if chirality[k] == 0 and rows[k, 1] == centre and all(s in slots[k] for s in others):
            keep(k, *others)
    return chirality, chiral_slots


def forcefield_closure_statistics(zmatrix: ZMatrix, prior: ForceFieldPrior, temperature: float = 300.0) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and spread (nm) of every closure pair of ``zmatrix`` from the force field alone.

    The counterpart of :func:`openmmbackmap.models.ic.closure_statistics` (measured on frames)
    for a model applied to a molecule without data: a closure bond takes its equilibrium length
    and ``sqrt(kT / k)``; a 1-3 pair the distance that its two bonds and the angle between them
    give, with the angle's thermal spread carried over (``r1 r2 sin(theta) sigma_theta / d``).

    Raises
    ------
    MappingError
        If a closure pair is neither a bond nor the ends of an angle of the force field.
    """
    lengths, angles = prior.reference_geometry(temperature)
    ends = {(i, k): (j, theta, sigma) for (i, j, k), (theta, sigma) in angles.items()}
    mean, spread = np.zeros(len(zmatrix.closures)), np.zeros(len(zmatrix.closures))
    for m, (p, q) in enumerate(zmatrix.closures.tolist()):
        key = (min(p, q), max(p, q))
        j, theta, sigma = ends.get(key, (None, 0.0, 0.0))
        arms = (lengths.get((min(p, j), max(p, j))), lengths.get((min(q, j), max(q, j)))) if j is not None else (None, None)
        if key in lengths:
            mean[m], spread[m] = lengths[key]
        elif None not in arms:
            r1, r2 = arms[0][0], arms[1][0]
            mean[m] = math.sqrt(r1 * r1 + r2 * r2 - 2.0 * r1 * r2 * math.cos(theta))
            spread[m] = r1 * r2 * math.sin(theta) * sigma / mean[m]
        else:
            raise MappingError(f"closure pair of atoms {p} and {q} is neither a bond nor an angle of the force field")
    return mean, spread


# ---------------------------------------------------------------------- networks


def _mlp(inputs: int, hidden: int, outputs: int, layers: int = 3) -> torch.nn.Sequential:
    modules: List[torch.nn.Module] = []
    width = inputs
    for _ in range(layers):
        modules += [torch.nn.Linear(width, hidden), torch.nn.SiLU()]
        width = hidden
    modules.append(torch.nn.Linear(width, outputs))
    return torch.nn.Sequential(*modules)


def local_frames(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Rows e1, e2, e3 (..., 3, 3) of the NeRF frame at ``a``: e1 along b->a, e3 normal to the plane a, b, c."""
    e1 = torch.nn.functional.normalize(a - b, dim=-1)
    e3 = torch.nn.functional.normalize(torch.linalg.cross(b - c, e1), dim=-1)
    e2 = torch.linalg.cross(e3, e1)
    return torch.stack([e1, e2, e3], dim=-2)


def spherical_to_local(r: torch.Tensor, theta: torch.Tensor, cos_phi: torch.Tensor, sin_phi: torch.Tensor) -> torch.Tensor:
    """Local coordinates (..., 3) of an atom at distance r from a, angle theta x-a-b and torsion phi x-a-b-c."""
    s = torch.sin(theta)
    return torch.stack([-r * torch.cos(theta), r * s * cos_phi, r * s * sin_phi], dim=-1)


def placement_features(
    u: torch.Tensor, env_local: torch.Tensor, r0: torch.Tensor, r_scale: torch.Tensor, theta0: torch.Tensor,
    theta_scale: torch.Tensor,
) -> torch.Tensor:
    """What the critic sees of an atom placed at local coordinates ``u`` (frames, rows, 3) among its slots (frames, rows, K, 3).

    Bond length and angle as deviations from the reference in the generator's own units (the
    spreads to tell apart are 0.0005-0.003 nm and a few degrees: in nm they would be invisible
    next to the 0.1 nm scale of the rest), the torsion as cosine and sine, the local
    coordinates and the distances to every slot (clashes, 1-3 and 1-4 distances).
    """
    r = torch.linalg.vector_norm(u, dim=-1).clamp_min(1e-9)
    theta = torch.acos((-u[..., 0] / r).clamp(-1.0 + 1e-7, 1.0 - 1e-7))
    rho = torch.linalg.vector_norm(u[..., 1:], dim=-1).clamp_min(1e-9)
    distances = torch.linalg.vector_norm(env_local - u.unsqueeze(-2), dim=-1)
    internal = torch.stack([(r - r0) / r_scale, (theta - theta0) / theta_scale, u[..., 1] / rho, u[..., 2] / rho], dim=-1)
    return torch.cat([internal, u / LENGTH_SCALE, distances / LENGTH_SCALE], dim=-1)


class GANBackmapper(ZMatrixModule):
    """The contract's module: CG beads in, atoms out, placed level by level by the generator.

    Built on :class:`~openmmbackmap.models.ic.ZMatrixModule` for the Z-matrix buffers (rows
    in level order), the anchors, the closing of ring and peptide bonds that no row places
    (:meth:`~openmmbackmap.models.ic.ZMatrixModule.close`, after the last atom; with
    ``closure_stats`` from the training frames) and the superposition of unanchored builds;
    the ``ic`` statistics it holds are unused. The discriminator is trained beside it and not saved.
    """

    n_slots: int
    noise: int
    n_rows: int
    n_points: int
    length_scale: float
    chiral_margin: float

    def __init__(
        self,
        environment: Environment,
        mapping_matrix: np.ndarray,
        hidden: int = 128,
        noise: int = 8,
        closure_stats: Optional[Tuple[np.ndarray, np.ndarray]] = None,
    ):
        zmatrix = environment.zmatrix
        rows = len(zmatrix.rows)
        stats = (np.zeros(rows), np.zeros(rows))
        n_features = zmatrix.n_features
        super().__init__(zmatrix, mapping_matrix, stats, stats, stats, np.zeros(rows, dtype=bool),
                         (np.zeros(n_features), np.ones(n_features)), closure_stats)
        by_level = np.argsort(zmatrix.level, kind="stable")  # the order of the parent's buffers

        def buffer(name: str, value, dtype=torch.float32) -> None:
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=dtype))

        self.n_rows = rows
        self.length_scale = float(LENGTH_SCALE)
        self.chiral_margin = math.sin(CHIRAL_MARGIN)
        self.n_slots = int(environment.slots.shape[1])
        self.noise = int(noise)
        self.n_points = self.n_atoms + 3 + self.n_beads + 1
        buffer("frame_beads", environment.frame_beads, torch.long)
        buffer("slots", environment.slots[by_level], torch.long)
        buffer("slot_features", environment.slot_features[by_level])
        buffer("atom_features", environment.atom_features[by_level])
        buffer("r0", environment.r0[by_level])
        buffer("r_spread", environment.r_spread[by_level])
        buffer("theta0", environment.theta0[by_level])
        buffer("theta_spread", environment.theta_spread[by_level])
        buffer("r_scale", environment.r_scale[by_level])
        buffer("theta_scale", environment.theta_scale[by_level])
        buffer("chirality", environment.chirality[by_level])
        buffer("chiral_slots", environment.chiral_slots[by_level], torch.long)
        buffer("amide_side", environment.amide_side[by_level])
        buffer("amide_slots", environment.amide_slots[by_level], torch.long)
        inputs = self.n_slots * (3 + environment.n_slot_features) + environment.atom_features.shape[1]
        # Gaussian noise plus one angle, fed as its cosine and sine (see generate).
        self.generator = _mlp(inputs + self.noise + 2, hidden, 4)

    # -------------------------------------------------------------- pieces

    def points(self, cg: torch.Tensor) -> torch.Tensor:
        """The point array (frames, points, 3): atoms (zero until placed; anchors on their beads), frame beads, beads, empty."""
        frames = cg.size(0)
        points = torch.zeros(frames, self.n_points, 3, dtype=cg.dtype)
        points[:, self.n_atoms : self.n_atoms + 3] = cg.index_select(1, self.frame_beads)
        points[:, self.n_atoms + 3 : self.n_atoms + 3 + self.n_beads] = cg
        if self.anchored:
            points.index_copy_(1, self.anchor_atoms, cg.index_select(1, self.anchor_beads))
        return points

    def environment(self, points: torch.Tensor, start: int, stop: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Frames (..., rows, 3, 3), origins (..., rows, 3) and slot positions in the local frame (..., rows, K, 3)."""
        a = points.index_select(1, self.a_index[start:stop])
        b = points.index_select(1, self.b_index[start:stop])
        c = points.index_select(1, self.c_index[start:stop])
        frames = local_frames(a, b, c)
        slots = self.slots[start:stop]
        env = points.index_select(1, slots.reshape(-1)).view(points.size(0), stop - start, self.n_slots, 3)
        local = torch.einsum("frkj,frij->frki", env - a.unsqueeze(2), frames)
        present = self.slot_features[start:stop, :, -1:].unsqueeze(0)
        return frames, a, local * present  # empty slots sit at the origin, flagged absent in their features

    def condition(self, local: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Network input (frames, rows, C) without the noise: slots and the atom's descriptor."""
        frames = local.size(0)
        features = self.slot_features[start:stop].unsqueeze(0).expand(frames, -1, -1, -1)
        slots = torch.cat([local / self.length_scale, features], dim=-1).flatten(2)
        return torch.cat([slots, self.atom_features[start:stop].unsqueeze(0).expand(frames, -1, -1)], dim=-1)

    def sample_noise(self, frames: int, generator: torch.Generator) -> torch.Tensor:
        """Noise (frames, rows, noise + 1): standard normal, then an angle uniform on [0, 2 pi)."""
        gaussian = torch.randn(frames, self.n_rows, self.noise, generator=generator)
        angle = torch.rand(frames, self.n_rows, 1, generator=generator) * (2.0 * math.pi)
        return torch.cat([gaussian, angle], dim=-1)

    def generate(
        self, condition: torch.Tensor, local: torch.Tensor, z: torch.Tensor, start: int, stop: int, bounded: bool = True
    ) -> torch.Tensor:
        """Local coordinates (frames, rows, 3) of the atoms of rows ``start:stop``, from noise ``z`` (:meth:`sample_noise`).

        ``local``: the slots' positions in the local frames (:meth:`environment`), against
        which a chiral centre's handedness is kept.

        Length and angle are linear in the network's output, in units of the data's spread
        (a squashing function saturated in training and then never recovered: no gradient);
        ``bounded`` clips them to :attr:`r_spread` and :attr:`theta_spread`, as in use. The
        torsion is the network's direction *turned by the noise angle* psi, which the network
        also sees: a torsion with three staggered rotamers is then a smooth, degree-one map of
        the uniform circle onto itself, where from Gaussian noise alone it needs a jump
        between modes (and a generator that cannot jump lands between them, eclipsed).
        """
        psi = z[..., -1]
        cos_psi, sin_psi = torch.cos(psi), torch.sin(psi)
        out = self.generator(torch.cat([condition, z[..., :-1], cos_psi.unsqueeze(-1), sin_psi.unsqueeze(-1)], dim=-1))
        dr = self.r_scale[start:stop] * out[..., 0]
        dtheta = self.theta_scale[start:stop] * out[..., 1]
        if bounded:
            dr = torch.maximum(torch.minimum(dr, self.r_spread[start:stop]), -self.r_spread[start:stop])
            dtheta = torch.maximum(torch.minimum(dtheta, self.theta_spread[start:stop]), -self.theta_spread[start:stop])
        r = self.r0[start:stop] + dr
        theta = (self.theta0[start:stop] + dtheta).clamp(0.01, math.pi - 0.01)
        direction = torch.nn.functional.normalize(out[..., 2:4], dim=-1, eps=1e-6)
        cos_phi = direction[..., 0] * cos_psi - direction[..., 1] * sin_psi
        sin_phi = direction[..., 0] * sin_psi + direction[..., 1] * cos_psi
        u = spherical_to_local(r, theta, cos_phi, sin_phi)
        # Handedness: an atom on the wrong side of the plane through the origin (a) and its two
        # guard slots is reflected through it, and one closer to the plane than CHIRAL_MARGIN
        # (as an angle) is lifted off it, at the same distance from a: the closing sweeps move
        # atoms near a closure by a little, and that must not carry a centre over.
        index = self.chiral_slots[start:stop].view(1, stop - start, 2, 1).expand(u.size(0), -1, -1, 3)
        others = torch.gather(local, 2, index)
        normal = torch.nn.functional.normalize(torch.linalg.cross(others[:, :, 0], others[:, :, 1]), dim=-1, eps=1e-9)
        height = (u * normal).sum(-1, keepdim=True)
        length = torch.linalg.vector_norm(u, dim=-1, keepdim=True)
        side = self.chirality[start:stop].view(1, -1, 1)
        kept = side * torch.maximum(height.abs(), self.chiral_margin * length)
        in_plane = u - height * normal
        scale = torch.sqrt((length * length - kept * kept).clamp_min(0.0)) / torch.linalg.vector_norm(in_plane, dim=-1, keepdim=True).clamp_min(1e-9)
        u = torch.where(side != 0, in_plane * scale + kept * normal, u)
        # Peptide bonds keep their reference state: cos(omega) from the four atoms (x generated,
        # the others in their slots) with the reference's sign, else a half turn of x about e1 (a-b).
        where = self.amide_slots[start:stop].view(1, stop - start, 4, 1).expand(u.size(0), -1, -1, 3)
        quad = torch.where(where < 0, u.unsqueeze(2).expand(-1, -1, 4, -1), torch.gather(local, 2, where.clamp_min(0)))
        b0, b1, b2 = quad[:, :, 1] - quad[:, :, 0], quad[:, :, 2] - quad[:, :, 1], quad[:, :, 3] - quad[:, :, 2]
        cosine = (torch.linalg.cross(b0, b1) * torch.linalg.cross(b1, b2)).sum(-1)
        flip = (self.amide_side[start:stop].view(1, -1) * cosine < 0).unsqueeze(-1)
        return torch.where(flip, u * torch.tensor([1.0, -1.0, -1.0], dtype=u.dtype), u)

    # -------------------------------------------------------------- the contract

    def forward(self, cg: torch.Tensor, previous: Optional[torch.Tensor], seed: int) -> torch.Tensor:
        if cg.dim() != 3 or cg.size(1) != self.n_beads or cg.size(2) != 3:
            raise RuntimeError(
                "gan backmapper takes CG coordinates of shape (frames, " + str(self.n_beads) + ", 3); got " + str(cg.shape)
            )
        with torch.no_grad():
            cg = cg.to(torch.float32)
            generator = torch.Generator()
            generator.manual_seed(seed)
            points = self.points(cg)
            z = self.sample_noise(cg.size(0), generator)
            for level in range(len(self.level_starts) - 1):
                start, stop = self.level_starts[level], self.level_starts[level + 1]
                frames, origin, local = self.environment(points, start, stop)
                u = self.generate(self.condition(local, start, stop), local, z[:, start:stop], start, stop)
                x = origin + torch.einsum("fri,frij->frj", u, frames)
                points.index_copy_(1, self.x_index[start:stop], x)
            atoms = self.close(points[:, : self.n_atoms], self.sample_closure(cg.size(0), generator))
            if not self.anchored:
                atoms = self.superpose(atoms, cg)
            return atoms


class Discriminator(torch.nn.Module):
    """The critic: a logit that an atom placed in its environment comes from the data.

    Its input is the generator's condition and :func:`placement_features` of the atom.
    """

    def __init__(self, condition_size: int, n_slots: int, hidden: int = 128):
        super().__init__()
        self.n_placement = 4 + 3 + n_slots
        self.network = _mlp(condition_size + self.n_placement, hidden, 1)

    def forward(self, condition: torch.Tensor, placement: torch.Tensor) -> torch.Tensor:
        return self.network(torch.cat([condition, placement], dim=-1)).squeeze(-1)


# ---------------------------------------------------------------------- family


class GANFamily:
    """Factory of the ``gan`` family (registered as ``"gan"``).

    Parameters
    ----------
    **options
        Training options passed on to :func:`openmmbackmap.training.train_gan` (``prior_weight``,
        ``hidden``, ``noise``, ``max_epochs``, ``seed``, ``checkpoint``...).

    Examples
    --------
    >>> from openmmbackmap.models import create_family
    >>> family = create_family("gan", prior_weight=0.0)              # the ablation: no force-field prior
    >>> result = family.train(mapping, [trajectory_xyz])            # doctest: +SKIP
    >>> family.save(result, "model.pt")                              # doctest: +SKIP
    """

    name = "gan"

    def __init__(self, **options):
        self.options = options

    def train(self, mapping: Mapping, segments, **options):
        """Train on atomistic segments (each (frames, atoms, 3) nm); see :func:`openmmbackmap.training.train_gan`."""
        from openmmbackmap.training import train_gan

        return train_gan(mapping, segments, **{**self.options, **options})

    def save(self, result, path):
        """Save a :class:`openmmbackmap.training.TrainingResult` with its metadata."""
        from openmmbackmap.training import save_result

        return save_result(result, path)


from openmmbackmap.models import register_family  # noqa: E402  (the registry imports nothing from here)

register_family("gan", GANFamily)

__all__ = ["Discriminator", "Environment", "ForceFieldPrior", "GANBackmapper", "GANFamily", "build_environment",
           "forcefield_closure_statistics"]
