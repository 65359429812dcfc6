"""The ``ic`` family: knowledge-driven backmapping over internal coordinates.

Atoms are placed one after another by NeRF (natural extension reference frame) from three
atoms placed before them, with a bond length, a bond angle and a torsion. Stereochemistry is
correct by construction: the handedness of every centre is fixed by an *improper-like*
torsion (a substituent placed against an already-placed sibling) whose samples are kept
within a few standard deviations of its mean, so its sign never flips.

The Z-matrix comes from the topology and the mapping (:func:`build_zmatrix`):

- **anchors**: atoms that are a bead on their own (one atom with non-zero weight, as in the
  ``backbone`` and ``ca`` schemes) sit exactly on their bead;
- every other atom ``x`` is placed from a bonded, already-placed parent ``a`` and the two
  placed atoms ``b``, ``c`` closest to ``x`` along the bond graph. When ``a`` already has two
  placed neighbours this makes ``c`` a sibling of ``x`` (an improper, near +-120 or 180
  degrees); otherwise the torsion runs along the chain (phi, psi, chi, methyl rotations).
  Heavy atoms are placed before hydrogens;
- with three or more anchors the frame comes from the anchors. With fewer (``residue_com``,
  ``heavy_com``), the molecule is built in an internal frame from three virtual points and
  then superposed onto the beads by the proper rotation and translation that best fit its
  own mapped bead positions onto the input beads (Kabsch with determinant correction), so the
  model is rotation- and translation-equivariant by construction in both modes.

Closures: a bond that no row places (a ring bond such as Tyr CE2-CZ or Pro CD-CG, and, with
anchors on both sides, every peptide C-N) gets its length only implicitly, from the sampled
values of the rows around it, and independent noise in each of them spreads it well beyond
the 10 % a bond score allows. After NeRF the build therefore runs :data:`CLOSURE_ITERATIONS`
over-relaxed, averaged SHAKE-like sweeps (:meth:`ZMatrixModule.close`) over the closure bonds
and the 1-3 pairs of the angles on either side of them (targets drawn from their training
Gaussians), the row bonds and the 1-3 distances of the row angles (targets: their values as
placed), with anchors held on their beads and only atoms within :data:`CLOSURE_REACH` of a
closure moving. The closure angles matter for peptides between anchors: with both C-alpha
fixed, bond lengths and the two angles leave omega only its trans magnitude (chignolin `ca`
cvae, held-out tails: cis peptides 20 -> 2 in 500 frames). The correction is a few
hundredths of a nm spread over neighbouring atoms: no improper moves far enough to change a
handedness, and the move is rotation- and translation-equivariant.

Distributions, learnt by :func:`openmmbackmap.training.train_ic`:

- bond lengths, angles and dependent torsions: one joint Gaussian over all of them whose mean
  is linear in the CG features and the sine and cosine of the free torsions
  (:func:`conditional_geometry`, fitted on the training frames; the covariance is that of
  the residuals), sampled as ``mean + L eps`` with the standard normal ``eps`` truncated at
  3, after the free torsions. Both parts matter. Sampled independently, the deviations of
  neighbouring angles and impropers add up along side chains instead of compensating as
  they do in the reference; with one mean for all conformations every sample carries the
  spread of all of them (chignolin `ca`, held-out frames with the true free torsions:
  angle JSD 0.08 independent, 0.04 joint, 0.02 conditional);
- *dependent* torsions (impropers, and proper torsions whose training spread is below
  :data:`FREE_TORSION_SPREAD`, e.g. the peptide omega) are part of that Gaussian, as
  deviations from their circular mean, clipped to ``min(3 sigma, 60 degrees)`` and, for an improper that sets a
  handedness, to 10 degrees short of planar (:func:`dependent_limits`), so neither chirality
  nor cis/trans can change whatever sigma was learnt;
- *free* torsions: a categorical distribution over :data:`N_BINS` bins (uniform jitter inside
  the bin) from a small MLP per torsion, conditioned on rotation-invariant CG features (all
  bead distances, cosines and sines of bonded bead angles and torsions) and autoregressively
  on the free torsions sampled before it. Sampling uses the Gumbel-max trick with a
  ``torch.Generator`` seeded by the ``seed`` argument, so a saved model is reproducible.

Examples
--------
>>> from openmmbackmap import io
>>> from openmmbackmap.mapping import Mapping
>>> from openmmbackmap.models.ic import build_zmatrix
>>> topology, _ = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
>>> zmatrix = build_zmatrix(Mapping.from_scheme(topology, "backbone"))
>>> zmatrix.anchored, len(zmatrix.anchor_atoms), len(zmatrix.rows)
(True, 5, 17)
"""

import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch

from openmmbackmap import geometry
from openmmbackmap.errors import MappingError
from openmmbackmap.mapping import Mapping

#: Torsion histogram bins of a free torsion (5 degrees each).
N_BINS = 72
#: A proper torsion whose circular standard deviation over the training frames is above this
#: (radians, 25 degrees) is *free*: sampled from the learnt conditional distribution.
FREE_TORSION_SPREAD = math.radians(25.0)
#: Largest deviation of a dependent torsion from its mean (radians): chirality and cis/trans
#: cannot flip however wide the training spread was.
MAX_DEPENDENT_DEVIATION = math.radians(60.0)
#: Gaussian samples of bonds, angles and dependent torsions are truncated at this many sigma.
TRUNCATION_SIGMA = 3.0
#: Averaged SHAKE-like sweeps that close ring and peptide bonds after NeRF (see the module docstring).
CLOSURE_ITERATIONS = 30
#: Over-relaxation of those sweeps (a Jacobi mean converges slowly; 1.6 halves the sweeps needed).
CLOSURE_RELAXATION = 1.6
#: Atoms more than this many bonds (or closure pairs) away from every closure do not move.
CLOSURE_REACH = 2
#: Weight of a bond (row or closure) against one row constraint in those sweeps: a ring closure meets
#: about six constraints that want the ring as placed, and at equal weight would stay half
#: open (chignolin `ca`, held-out frames: bond score 0.997 at weight 1, 1.000 at 5).
CLOSURE_WEIGHT = 5.0
#: Weight of a bond to hydrogen: constrained in the reference simulations, so its distribution is
#: a spike that any stretch shows in the JSD (chignolin `ca`: amide N-H JSD 0.15 at weight 5).
HYDROGEN_BOND_WEIGHT = 50.0
#: Shrinkage of the internal-coordinate covariance towards its diagonal (:func:`conditional_geometry`).
COVARIANCE_SHRINKAGE = 0.05
#: Ridge penalty of the conditional mean of the bonded geometry (:func:`conditional_geometry`).
GEOMETRY_RIDGE = 0.01
#: The three virtual points the internal frame of an unanchored model starts from (nm).
VIRTUAL_POINTS = np.array([[0.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [-1.0, 1.0, 0.0]])


# ---------------------------------------------------------------------- Z-matrix


@dataclass(frozen=True)
class ZMatrix:
    """How to place every atom that is not an anchor, in the order it is placed.

    Indices ``>= n_atoms`` name the virtual points of the internal frame
    (``n_atoms + k`` is ``VIRTUAL_POINTS[k]``).

    Attributes
    ----------
    n_atoms
        Atoms of the topology.
    anchor_atoms, anchor_beads
        Atoms placed exactly at a bead, and those beads (empty unless ``anchored``).
    anchored
        True when the anchors define the frame (three or more); False when the molecule is
        built in an internal frame and superposed onto the beads.
    rows
        (n, 4) ``(x, a, b, c)``: atom ``x`` is placed at distance ``r`` from ``a``, angle
        ``theta`` = x-a-b and dihedral ``phi`` = x-a-b-c. Rows are in placement order.
    improper
        Per row, True when ``b`` and ``c`` are both bonded to ``a`` (``x``, ``b``, ``c`` are
        substituents of ``a``): its torsion sets a handedness and is always dependent.
    fixed_r, fixed_theta, fixed_phi
        Per row, NaN where the value is learnt, else the constant it takes (rows that involve
        virtual points).
    level
        Per row, 1 + the largest level of its references (anchors and virtual points are 0):
        rows of one level are placed together.
    bead_pairs, bead_angles, bead_torsions
        Bead index tuples of the CG features: all pairs, bonded triplets, bonded quadruplets.
    closures
        (m, 2) atom pairs whose distance no row sets, held by :meth:`ZMatrixModule.close`:
        first the topology bonds that no row places and that do not join two anchors (ring
        closures and, between anchors, peptide bonds), then the 1-3 pairs of the angles on
        either side of them and of the angles at anchors that no row sets.
    n_closure_bonds
        How many of ``closures`` are bonds (the first ones).
    hydrogen
        Per atom, True for hydrogens.
    """

    n_atoms: int
    anchor_atoms: np.ndarray
    anchor_beads: np.ndarray
    anchored: bool
    rows: np.ndarray
    improper: np.ndarray
    fixed_r: np.ndarray
    fixed_theta: np.ndarray
    fixed_phi: np.ndarray
    level: np.ndarray
    bead_pairs: np.ndarray
    bead_angles: np.ndarray
    bead_torsions: np.ndarray
    closures: np.ndarray
    n_closure_bonds: int
    hydrogen: np.ndarray

    @property
    def n_features(self) -> int:
        """Length of the CG feature vector: distances, then cos/sin of angles and torsions."""
        return len(self.bead_pairs) + 2 * len(self.bead_angles) + 2 * len(self.bead_torsions)

    def describe(self, mapping: Mapping) -> list[str]:
        """Human-readable rows, ``"x <- a b c"`` with atom names (V0-V2: virtual points)."""
        atoms = list(mapping.topology.atoms())

        def name(i: int) -> str:
            return f"V{i - self.n_atoms}" if i >= self.n_atoms else f"{atoms[i].residue.name}{atoms[i].residue.id}:{atoms[i].name}"

        return [" ".join([name(int(row[0])), "<-", *(name(int(i)) for i in row[1:])]) for row in self.rows]


def _anchors(mapping: Mapping) -> dict[int, int]:
    """Atom -> bead for beads whose weight sits on a single atom (first bead wins)."""
    anchors: dict[int, int] = {}
    for b, bead in enumerate(mapping.beads):
        weighted = [atom for atom, w in zip(bead.atom_indices, bead.weights) if w > 0]
        if len(weighted) == 1 and weighted[0] not in anchors:
            anchors[weighted[0]] = b
    return anchors


def _bead_features(mapping: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = mapping.n_beads
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)], dtype=np.int64).reshape(-1, 2)
    neighbours: dict[int, set[int]] = {i: set() for i in range(n)}
    for i, j in mapping.bead_bonds:
        neighbours[int(i)].add(int(j))
        neighbours[int(j)].add(int(i))
    angles = sorted(
        (i, j, k) for j in range(n) for i in neighbours[j] for k in neighbours[j] if i < k
    )
    torsions = sorted(
        {
            min((i, j, k, l), (l, k, j, i))
            for j in range(n)
            for k in neighbours[j]
            for i in neighbours[j] - {k}
            for l in neighbours[k] - {j, i}
        }
    )
    return (
        pairs,
        np.array(angles, dtype=np.int64).reshape(-1, 3),
        np.array(torsions, dtype=np.int64).reshape(-1, 4),
    )


def bond_graph(topology) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """The symmetric adjacency matrix of ``topology``'s bonds and the bond count between every two atoms (inf: not connected)."""
    n = topology.getNumAtoms()
    bonds = np.array([[a.index, b.index] for a, b in topology.bonds()], dtype=np.int64).reshape(-1, 2)
    adjacency = scipy.sparse.csr_matrix((np.ones(len(bonds)), (bonds[:, 0], bonds[:, 1])), shape=(n, n))
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64).tocsr()
    return adjacency, scipy.sparse.csgraph.shortest_path(adjacency, unweighted=True, directed=False)


def build_zmatrix(mapping: Mapping, chain_first: bool = False) -> ZMatrix:
    """The Z-matrix of ``mapping``'s topology, anchored on its single-atom beads.

    Parameters
    ----------
    mapping
        The mapping the model backmaps from; its topology must have bonds.
    chain_first
        Place the neighbours of an atom in order of their heavy-atom neighbour count (chain
        atoms before terminal substituents) and, among equally near references, prefer chain
        atoms. Torsions along the main chain then become the free ones (for a peptide the
        backbone phi and psi themselves, with the carbonyl O and CB placed as impropers),
        instead of torsions of a terminal substituent that equal them only up to an
        independently sampled improper deviation. The ``cvae`` family uses it: a basin's
        persistence in time is then set by the generated torsion alone.

    Raises
    ------
    MappingError
        With fewer than three beads (no frame to superpose onto), or when a molecule of the
        topology cannot be reached through bonds from where the build starts.
    """
    topology = mapping.topology
    n = mapping.n_atoms
    if mapping.n_beads < 3:
        raise MappingError(
            f"the ic family needs at least 3 beads to orient the molecule; mapping {mapping.scheme!r} has {mapping.n_beads}"
        )
    atoms = list(topology.atoms())
    heavy = np.array([not (a.element is not None and a.element.symbol == "H") for a in atoms])
    bonds = np.array([[a.index, b.index] for a, b in topology.bonds()], dtype=np.int64).reshape(-1, 2)
    if n > 1 and len(bonds) == 0:
        raise MappingError("the ic family needs a topology with bonds")
    adjacency, hops = bond_graph(topology)
    neighbours = [sorted(int(j) for j in adjacency.indices[adjacency.indptr[i] : adjacency.indptr[i + 1]]) for i in range(n)]
    # Chain atoms (more heavy neighbours) first; 0 for all without chain_first, so nothing changes.
    chain_rank = [-int(heavy[neighbours[i]].sum()) if chain_first else 0 for i in range(n)]
    if chain_first:
        neighbours = [sorted(row, key=lambda j: chain_rank[j]) for row in neighbours]  # stable: index order on ties

    anchors = _anchors(mapping)
    anchored = len(anchors) >= 3
    if not anchored:
        anchors = {}
    order: list[int] = list(anchors)
    placed = {i: k for k, i in enumerate(order)}
    rows: list[tuple[int, int, int, int]] = []

    def big(d: float) -> float:
        return d if np.isfinite(d) else 1e9

    def place(x: int) -> None:
        parents = [j for j in neighbours[x] if j in placed]
        a = min(parents, key=lambda j: (not heavy[j], j not in anchors, placed[j]))
        if len(placed) == 1:
            row = (x, a, n + 1, n + 2)
        elif len(placed) == 2:
            row = (x, a, next(j for j in placed if j != a), n + 2)
        else:
            # References are the placed atoms nearest to x along bonds; look near x first.
            near = [j for j in np.flatnonzero(hops[x] <= 4) if j in placed and j != a]
            pool = near if len(near) >= 2 else [j for j in placed if j != a]
            # Ties go to anchors: they sit exactly on the beads, so the geometry they fix is the CG's.
            b = min(pool, key=lambda j: (big(hops[x, j]), j not in anchors, big(hops[a, j]), not heavy[j], chain_rank[j], placed[j]))
            c = min(
                (j for j in pool if j != b),
                key=lambda j: (big(hops[x, j]), big(hops[a, j]) + big(hops[b, j]), not heavy[j], chain_rank[j], placed[j]),
            )
            row = (x, a, int(b), int(c))
        rows.append(row)
        placed[x] = len(order)
        order.append(x)

    if not anchored:
        # Start from the heavy atom at the centre of the bond graph, so chains grow both ways.
        candidates = np.flatnonzero(heavy) if heavy.any() else np.arange(n)
        eccentricity = np.where(np.isfinite(hops[candidates]), hops[candidates], 1e9).max(axis=1)
        root = int(candidates[np.argmin(eccentricity)])
        rows.append((root, n, n + 1, n + 2))
        placed[root] = 0
        order.append(root)
    for heavy_only in (True, False):
        # Breadth-first from what is placed, heavy atoms in the first pass and hydrogens after.
        cursor = 0
        while cursor < len(order):
            for j in neighbours[order[cursor]]:
                if j not in placed and (heavy[j] or not heavy_only):
                    place(j)
            cursor += 1
    if len(placed) != n:
        missing = [i for i in range(n) if i not in placed]
        raise MappingError(
            f"the ic family cannot reach atom {missing[0]} ({atoms[missing[0]].residue.name}"
            f"{atoms[missing[0]].residue.id}:{atoms[missing[0]].name}) through bonds from "
            + ("the single-atom beads" if anchored else "the first molecule")
            + "; every molecule needs a bonded path to where the build starts"
        )

    rows_array = np.array(rows, dtype=np.int64).reshape(-1, 4)
    fixed_r = np.full(len(rows), np.nan)
    fixed_theta = np.full(len(rows), np.nan)
    fixed_phi = np.full(len(rows), np.nan)
    improper = np.zeros(len(rows), dtype=bool)
    level = np.zeros(n + 3, dtype=np.int64)
    row_level = np.zeros(len(rows), dtype=np.int64)
    for k, (x, a, b, c) in enumerate(rows_array):
        if a >= n:  # the root sits on the first virtual point
            fixed_r[k], fixed_theta[k] = 0.0, math.pi / 2
        if b >= n:  # the second atom lies along x
            fixed_theta[k] = math.pi
        if c >= n:  # the third atom lies in the xy plane
            fixed_phi[k] = 0.0
        improper[k] = c < n and b < n and a < n and c in neighbours[a] and b in neighbours[a]
        row_level[k] = level[x] = 1 + max(level[a], level[b], level[c])
    pairs, bead_angles, bead_torsions = _bead_features(mapping)
    anchor_atoms = np.array(list(anchors), dtype=np.int64)
    placed_bonds = {frozenset((int(x), int(a))) for x, a, _, _ in rows_array if a < n}
    placed_pairs = placed_bonds | {frozenset((int(x), int(b))) for x, _, b, _ in rows_array if b < n}
    closure_bonds = [(i, j) for i, j in bonds.tolist() if frozenset((i, j)) not in placed_bonds and not (i in anchors and j in anchors)]
    # The two angles on either side of a closure bond close with it: for a peptide bond between
    # anchors they fix omega's magnitude (trans) given the anchors' distance, as they fix a ring's shape.
    closure_angles = {
        frozenset((k, other))
        for i, j in closure_bonds
        for centre, other in ((i, j), (j, i))
        for k in neighbours[centre]
        if k != other and not (k in anchors and other in anchors)
    }
    # So do the angles at an anchor between substituents placed from different references (N-CA-C
    # of a C-alpha bead, each placed by its own free torsion): left open, a rare pair of samples
    # lays N, C and CB flat around the C-alpha and the closing sweeps can tip its handedness.
    closure_angles |= {
        frozenset((k, l)) for centre in anchors for k in neighbours[centre] for l in neighbours[centre]
        if k < l and not (k in anchors and l in anchors)
    }
    closure_angles -= placed_pairs
    closures = np.array(
        closure_bonds + sorted(tuple(sorted(pair)) for pair in closure_angles), dtype=np.int64
    ).reshape(-1, 2)
    return ZMatrix(
        n_atoms=n,
        anchor_atoms=anchor_atoms,
        anchor_beads=np.array([anchors[i] for i in anchor_atoms], dtype=np.int64),
        anchored=anchored,
        rows=rows_array,
        improper=improper,
        fixed_r=fixed_r,
        fixed_theta=fixed_theta,
        fixed_phi=fixed_phi,
        level=row_level,
        bead_pairs=pairs,
        bead_angles=bead_angles,
        bead_torsions=bead_torsions,
        closures=closures,
        n_closure_bonds=len(closure_bonds),
        hydrogen=~heavy,
    )


def internal_coordinates(xyz: np.ndarray, zmatrix: ZMatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bond lengths, angles and torsions (frames, rows) of every Z-matrix row, radians and nm.

    Rows involving virtual points take their fixed values (the internal frame is arbitrary).
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    if xyz.ndim == 2:
        xyz = xyz[None]
    virtual = np.broadcast_to(VIRTUAL_POINTS, (len(xyz), 3, 3))
    extended = np.concatenate([xyz, virtual], axis=1)
    rows = zmatrix.rows
    r = geometry.distances(extended, rows[:, :2])
    theta = geometry.angles(extended, rows[:, :3])
    phi = geometry.dihedrals(extended, rows)
    for values, fixed in ((r, zmatrix.fixed_r), (theta, zmatrix.fixed_theta), (phi, zmatrix.fixed_phi)):
        known = ~np.isnan(fixed)
        values[:, known] = fixed[known]
    return r, theta, phi


def closure_statistics(xyz: np.ndarray, zmatrix: ZMatrix) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (nm) of every closure bond's length over the frames ``xyz``."""
    lengths = geometry.distances(np.asarray(xyz, dtype=np.float64), zmatrix.closures)
    return lengths.mean(0), lengths.std(0)


def conditional_geometry(
    condition: np.ndarray,
    r: np.ndarray,
    theta: np.ndarray,
    phi: np.ndarray,
    means: tuple[np.ndarray, np.ndarray, np.ndarray],
    ridge: float = GEOMETRY_RIDGE,
    shrinkage: float = COVARIANCE_SHRINKAGE,
) -> tuple[np.ndarray, np.ndarray]:
    """Linear conditional mean of (r, theta, torsion deviation) given ``condition``, and the residuals' covariance.

    Bonded geometry follows the conformation: the N-CA-C angle with phi and psi, a ring's
    impropers with its chi. With one mean for all frames a sample carries the spread of every
    conformation at once, so consecutive frames of a trajectory differ by more than they do
    in the reference (chignolin `ca` cvae) and angle and dihedral distributions broaden.

    Parameters
    ----------
    condition
        (frames, conditions), :meth:`ZMatrixModule.geometry_condition` of the training frames
        (its last column is the constant 1, the intercept, which is not penalised).
    r, theta, phi
        (frames, rows) internal coordinates of the training frames.
    means
        The per-row means the module adds the deviations to (phi: the circular mean).
    ridge
        Ridge penalty per frame on the standardised conditions.
    shrinkage
        Weight of the residual covariance's diagonal against the full matrix (keeps it
        positive definite when rows outnumber frames).

    Returns
    -------
    regression, covariance
        (conditions, 3 rows) coefficients and (3 rows, 3 rows) residual covariance.
    """
    target = np.concatenate(
        [r - means[0], theta - means[1], np.angle(np.exp(1j * (phi - means[2])))], axis=1
    )
    penalty = ridge * len(condition) * np.eye(condition.shape[1])
    penalty[-1, -1] = 0.0
    regression = np.linalg.solve(condition.T @ condition + penalty, condition.T @ target)
    # Bond lengths barely follow the conformation, and their spread (0.003 nm) is so narrow that
    # the regression's noise would widen it: they keep one mean (chignolin `ca`: bond JSD 0.015
    # with one mean, 0.047 regressed).
    rows = r.shape[1]
    regression[:, :rows] = 0.0
    regression[-1, :rows] = target[:, :rows].mean(0)
    residual = target - condition @ regression
    covariance = np.atleast_2d(np.cov(residual, rowvar=False))
    return regression, (1.0 - shrinkage) * covariance + shrinkage * np.diag(np.diag(covariance))


def circular_statistics(phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Circular mean and circular standard deviation (radians) of each column of ``phi``."""
    z = np.exp(1j * np.asarray(phi, dtype=np.float64)).mean(axis=0)
    length = np.clip(np.abs(z), 1e-12, 1.0)
    return np.angle(z), np.sqrt(-2.0 * np.log(length))


def dependent_limits(mean: np.ndarray, std: np.ndarray, improper: np.ndarray) -> np.ndarray:
    """Largest deviation (radians) a dependent torsion may take from its mean.

    ``min(3 sigma, 60 degrees)``; an improper that sets a handedness (its mean more than 20
    degrees from 0 and 180) also stays 10 degrees short of the planar arrangement, so the
    sign of the torsion, and with it the chirality of the centre, cannot change whatever
    sigma was learnt.
    """
    limit = np.minimum(TRUNCATION_SIGMA * np.asarray(std), MAX_DEPENDENT_DEVIATION)
    to_planar = np.minimum(np.abs(mean), math.pi - np.abs(mean))
    chiral = np.asarray(improper) & (to_planar > math.radians(20.0))
    return np.where(chiral, np.minimum(limit, to_planar - math.radians(10.0)), limit)


# ---------------------------------------------------------------------- the TorchScript module


class ZMatrixModule(torch.nn.Module):
    """What the internal-coordinate families share: the Z-matrix, CG features, NeRF placement.

    Holds every row's Gaussian statistics, samples bond lengths, angles and dependent
    torsions (:meth:`sample_geometry`), places atoms (:meth:`place`), closes ring and
    peptide bonds (:meth:`close`) and superposes an unanchored build onto the beads
    (:meth:`superpose`). Families add how the *free*
    torsions are drawn: :class:`ICBackmapper` from the CG alone,
    :class:`openmmbackmap.models.cvae.CVAEBackmapper` also from the previous frame. Every
    array is a buffer, so ``torch.jit.script`` and ``torch.jit.load`` reproduce a subclass
    without the Python classes.
    """

    n_atoms: int
    n_beads: int
    n_free: int
    anchored: bool
    truncation: float
    level_starts: List[int]
    closure_iterations: int
    n_kept_constraints: int

    def __init__(
        self,
        zmatrix: ZMatrix,
        mapping_matrix: np.ndarray,
        r_stats: tuple[np.ndarray, np.ndarray],
        theta_stats: tuple[np.ndarray, np.ndarray],
        phi_stats: tuple[np.ndarray, np.ndarray],
        free: np.ndarray,
        feature_stats: tuple[np.ndarray, np.ndarray],
        closure_stats: Optional[tuple[np.ndarray, np.ndarray]] = None,
        closure_iterations: int = CLOSURE_ITERATIONS,
    ):
        super().__init__()
        # Rows sorted by level (stable, so placement order holds within a level).
        by_level = np.argsort(zmatrix.level, kind="stable")
        rows = zmatrix.rows[by_level]
        self.n_atoms = zmatrix.n_atoms
        self.n_beads = int(mapping_matrix.shape[0])
        self.anchored = bool(zmatrix.anchored)
        self.truncation = float(TRUNCATION_SIGMA)
        levels = zmatrix.level[by_level]
        self.level_starts = [int(i) for i in np.flatnonzero(np.r_[True, levels[1:] != levels[:-1]])] + [len(rows)]

        def buffer(name: str, value, dtype=torch.float32) -> None:
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=dtype))

        buffer("x_index", rows[:, 0], torch.long)
        buffer("a_index", rows[:, 1], torch.long)
        buffer("b_index", rows[:, 2], torch.long)
        buffer("c_index", rows[:, 3], torch.long)
        buffer("virtual_points", VIRTUAL_POINTS)
        buffer("anchor_atoms", zmatrix.anchor_atoms, torch.long)
        buffer("anchor_beads", zmatrix.anchor_beads, torch.long)
        buffer("mapping_matrix", mapping_matrix, torch.float64)
        buffer("r_mean", r_stats[0][by_level])
        buffer("r_std", r_stats[1][by_level])
        buffer("theta_mean", theta_stats[0][by_level])
        buffer("theta_std", theta_stats[1][by_level])
        buffer("phi_mean", phi_stats[0][by_level])
        buffer("phi_std", phi_stats[1][by_level])
        buffer("phi_limit", dependent_limits(phi_stats[0], phi_stats[1], zmatrix.improper)[by_level])
        # Free torsions, in placement order (the autoregressive order), as positions in level order.
        position = np.empty(len(rows), dtype=np.int64)
        position[by_level] = np.arange(len(rows))
        free_rows = position[np.flatnonzero(free)]
        self.n_free = len(free_rows)
        buffer("free_rows", free_rows, torch.long)
        buffer("bead_pairs", zmatrix.bead_pairs, torch.long)
        buffer("bead_angles", zmatrix.bead_angles, torch.long)
        buffer("bead_torsions", zmatrix.bead_torsions, torch.long)
        buffer("feature_mean", feature_stats[0])
        buffer("feature_std", feature_stats[1])
        self._closure_buffers(zmatrix, closure_stats, closure_iterations, buffer)
        # Independent Gaussians until training makes them joint and conditional (set_dependent_geometry).
        self.set_dependent_geometry(zmatrix, (r_stats[1], theta_stats[1], phi_stats[1]), None)

    def set_dependent_geometry(
        self,
        zmatrix: ZMatrix,
        spreads: tuple[np.ndarray, np.ndarray, np.ndarray],
        covariance: Optional[np.ndarray],
        regression: Optional[np.ndarray] = None,
    ) -> None:
        """The joint Gaussian of bond lengths, angles and dependent torsions (buffers, level order).

        Parameters
        ----------
        zmatrix
            The module's Z-matrix.
        spreads
            Standard deviations of r, theta and phi per row (Z-matrix order); only columns with
            a spread are sampled (not the free torsions, not values fixed by virtual points).
        covariance
            (3 rows, 3 rows) covariance of (r, theta, torsion deviation), or of the residuals of
            ``regression``; None: the diagonal of ``spreads`` (independent Gaussians).
        regression
            (conditions, 3 rows) coefficients of the conditional mean (:func:`conditional_geometry`)
            on :meth:`geometry_condition`; None: the mean does not depend on the frame.
        """
        by_level = np.argsort(zmatrix.level, kind="stable")
        rows = len(by_level)
        spread = np.concatenate(spreads)
        order = np.concatenate([by_level, rows + by_level, 2 * rows + by_level])
        columns = order[spread[order] > 0]
        if covariance is None:
            factor = np.diag(spread[columns])
        else:
            factor = np.linalg.cholesky(np.asarray(covariance)[np.ix_(columns, columns)])
        position = np.empty(3 * rows, dtype=np.int64)
        position[order] = np.arange(3 * rows)  # original column -> level-ordered column
        coefficients = np.zeros((0, len(columns))) if regression is None else np.asarray(regression)[:, columns]
        for name, value, dtype in (("sampled_columns", position[columns], torch.long), ("cholesky", factor, torch.float32),
                                   ("regression", coefficients, torch.float32)):
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=dtype))

    def geometry_condition(self, features: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        """What the dependent geometry's mean depends on: CG features, sin/cos of the free torsions, 1."""
        ones = torch.ones(features.size(0), 1, dtype=features.dtype)
        return torch.cat([features, torch.sin(free).to(features.dtype), torch.cos(free).to(features.dtype), ones], dim=1)

    def _closure_buffers(self, zmatrix: ZMatrix, closure_stats, iterations: int, buffer) -> None:
        """Distance constraints of :meth:`close`: row bonds, row angles' 1-3 pairs, then closures."""
        n = zmatrix.n_atoms
        closures = zmatrix.closures if closure_stats is not None else np.zeros((0, 2), dtype=np.int64)
        self.closure_iterations = int(iterations) if len(closures) else 0
        rows = zmatrix.rows
        row_bonds, row_angles = rows[rows[:, 1] < n][:, [0, 1]], rows[rows[:, 2] < n][:, [0, 2]]
        kept = np.concatenate([row_bonds, row_angles]).astype(np.int64)
        kept_is_bond = np.r_[np.ones(len(row_bonds), bool), np.zeros(len(row_angles), bool)]
        # Only atoms within CLOSURE_REACH constraints of a closure move: elsewhere the rows hold
        # exactly as placed, and sweeping them would only cost time.
        edges = np.concatenate([kept, closures])
        graph = scipy.sparse.csr_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
        reach = scipy.sparse.csgraph.shortest_path(graph, unweighted=True, directed=False, indices=np.unique(closures))
        mobile = (reach <= CLOSURE_REACH).any(axis=0).astype(np.float64) if len(closures) else np.zeros(n)
        if zmatrix.anchored:
            mobile[zmatrix.anchor_atoms] = 0.0
        near = mobile[kept].sum(axis=1) > 0
        kept, kept_is_bond = kept[near], kept_is_bond[near]
        n_kept = len(kept)
        pairs = np.concatenate([kept, closures]).astype(np.int64)
        total = mobile[pairs[:, 0]] + mobile[pairs[:, 1]]
        moving = total > 0  # a pair of anchors has nothing to move
        # Bonds (of rows and closures) weigh CLOSURE_WEIGHT, angles 1: where sampled torsions leave a
        # ring or peptide unit impossible to close exactly, its angles give way, not its bonds
        # (bonds to hydrogen are constrained in the reference: any stretch shows in their JSD).
        is_bond = np.r_[kept_is_bond, np.arange(len(closures)) < zmatrix.n_closure_bonds]
        to_hydrogen = is_bond & zmatrix.hydrogen[pairs].any(axis=1)
        weight = np.where(to_hydrogen, HYDROGEN_BOND_WEIGHT, np.where(is_bond, CLOSURE_WEIGHT, 1.0)) * moving
        share = weight[:, None] * mobile[pairs] / np.where(moving, total, 1.0)[:, None]
        # Each atom takes the weighted mean of the corrections its constraints ask for (a
        # Jacobi sweep that cannot overshoot however many constraints meet at an atom).
        count = np.bincount(pairs.ravel(), weights=np.repeat(weight, 2), minlength=n)
        self.n_kept_constraints = n_kept
        buffer("constraint_pairs", pairs, torch.long)
        buffer("constraint_share", share)
        buffer("constraint_weight", np.where(count > 0, CLOSURE_RELAXATION / np.maximum(count, 1e-12), 0.0))
        mean, std = closure_stats if closure_stats is not None else (np.zeros(0), np.zeros(0))
        buffer("closure_mean", mean)
        buffer("closure_std", std)

    def features(self, cg: torch.Tensor) -> torch.Tensor:
        """Rotation-invariant CG features (frames, F), standardised; sign-sensitive to mirror images."""
        parts: List[torch.Tensor] = []
        if self.bead_pairs.size(0) > 0:
            d = cg.index_select(1, self.bead_pairs[:, 1]) - cg.index_select(1, self.bead_pairs[:, 0])
            parts.append(torch.linalg.vector_norm(d, dim=-1))
        if self.bead_angles.size(0) > 0:
            v1 = cg.index_select(1, self.bead_angles[:, 0]) - cg.index_select(1, self.bead_angles[:, 1])
            v2 = cg.index_select(1, self.bead_angles[:, 2]) - cg.index_select(1, self.bead_angles[:, 1])
            cos = (v1 * v2).sum(-1)
            sin = torch.linalg.vector_norm(torch.linalg.cross(v1, v2), dim=-1)
            norm = torch.sqrt(cos * cos + sin * sin).clamp_min(1e-12)
            parts.append(cos / norm)
            parts.append(sin / norm)
        if self.bead_torsions.size(0) > 0:
            p0 = cg.index_select(1, self.bead_torsions[:, 0])
            p1 = cg.index_select(1, self.bead_torsions[:, 1])
            p2 = cg.index_select(1, self.bead_torsions[:, 2])
            p3 = cg.index_select(1, self.bead_torsions[:, 3])
            b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
            n1 = torch.linalg.cross(b1, b2)
            n2 = torch.linalg.cross(b2, b3)
            x = (n1 * n2).sum(-1)
            y = (torch.linalg.cross(n1, n2) * b2).sum(-1) / torch.linalg.vector_norm(b2, dim=-1).clamp_min(1e-12)
            norm = torch.sqrt(x * x + y * y).clamp_min(1e-12)
            parts.append(x / norm)
            parts.append(y / norm)
        return (torch.cat(parts, dim=1) - self.feature_mean) / self.feature_std

    def sample_geometry(self, frames: int, generator: torch.Generator, condition: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """Bond lengths, angles and dependent torsions (each (frames, rows), level order; free torsions
        left at 0) and closure bond lengths (frames, closures).

        ``condition`` (:meth:`geometry_condition`) shifts the mean where the model has a regression.
        """
        rows = self.x_index.size(0)
        eps = torch.randn(frames, self.cholesky.size(0), generator=generator).clamp(-self.truncation, self.truncation)
        sampled = eps @ self.cholesky.t()
        if condition is not None and self.regression.size(0) > 0:
            sampled = sampled + condition.to(sampled.dtype) @ self.regression
        deviations = torch.zeros(frames, 3 * rows).index_copy(1, self.sampled_columns, sampled)
        r = self.r_mean + deviations[:, :rows]
        theta = self.theta_mean + deviations[:, rows : 2 * rows]
        deviation = torch.maximum(torch.minimum(deviations[:, 2 * rows :], self.phi_limit), -self.phi_limit)
        phi = self.phi_mean + deviation
        return [r, theta, phi, self.sample_closure(frames, generator)]

    def sample_closure(self, frames: int, generator: torch.Generator) -> torch.Tensor:
        """Target lengths (frames, closures) of the closure pairs: their training Gaussians, truncated."""
        z = torch.randn(frames, self.closure_mean.size(0), generator=generator).clamp(-self.truncation, self.truncation)
        return self.closure_mean + self.closure_std * z

    def place(self, cg: torch.Tensor, r: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """NeRF: atoms (frames, atoms, 3) from internal coordinates (level order), anchors from ``cg``."""
        frames = cg.size(0)
        positions = torch.zeros(frames, self.n_atoms + 3, 3, dtype=cg.dtype)
        positions[:, self.n_atoms :] = self.virtual_points
        if self.anchored:
            positions.index_copy_(1, self.anchor_atoms, cg.index_select(1, self.anchor_beads))
        for level in range(len(self.level_starts) - 1):
            start, stop = self.level_starts[level], self.level_starts[level + 1]
            a = positions.index_select(1, self.a_index[start:stop])
            b = positions.index_select(1, self.b_index[start:stop])
            c = positions.index_select(1, self.c_index[start:stop])
            rr, tt, pp = r[:, start:stop, None], theta[:, start:stop, None], phi[:, start:stop, None]
            bc = torch.nn.functional.normalize(a - b, dim=-1)
            n = torch.nn.functional.normalize(torch.linalg.cross(b - c, bc), dim=-1)
            m = torch.linalg.cross(n, bc)
            sin_theta = torch.sin(tt)
            x = a + rr * (-torch.cos(tt) * bc + sin_theta * torch.cos(pp) * m + sin_theta * torch.sin(pp) * n)
            positions.index_copy_(1, self.x_index[start:stop], x)
        return positions[:, : self.n_atoms]

    def close(self, atoms: torch.Tensor, closure: torch.Tensor) -> torch.Tensor:
        """Bring closure bonds to ``closure`` (frames, closures) nm, keeping row bonds and angles as placed.

        Averaged SHAKE-like sweeps: every constraint asks its two atoms to move along their
        separation to its target length, split by mobility (anchors do not move), and each atom
        moves by the mean of what its constraints ask, closures weighted :data:`CLOSURE_WEIGHT`.
        """
        if self.closure_iterations == 0:
            return atoms
        # Atom-major layout (atoms, frames, 3): gathering and scattering whole rows is some 20
        # times faster than indexing the middle dimension.
        x = atoms.transpose(0, 1).contiguous()
        i = self.constraint_pairs[:, 0]
        j = self.constraint_pairs[:, 1]
        both = torch.cat([i, j])
        kept = self.constraint_pairs[: self.n_kept_constraints]
        as_placed = torch.linalg.vector_norm(x.index_select(0, kept[:, 1]) - x.index_select(0, kept[:, 0]), dim=-1)
        target = torch.cat([as_placed, closure.to(atoms.dtype).t()], dim=0)  # (constraints, frames)
        share = torch.cat([self.constraint_share[:, 0], -self.constraint_share[:, 1]]).to(atoms.dtype)[:, None, None]
        weight = self.constraint_weight.to(atoms.dtype)[:, None, None]
        for _ in range(self.closure_iterations):
            d = x.index_select(0, j) - x.index_select(0, i)
            length = torch.linalg.vector_norm(d, dim=-1).clamp_min(1e-6)
            step = ((length - target) / length).unsqueeze(-1) * d
            x = x + weight * torch.zeros_like(x).index_add(0, both, share * torch.cat([step, step]))
        return x.transpose(0, 1)

    def superpose(self, atoms: torch.Tensor, cg: torch.Tensor) -> torch.Tensor:
        """Move ``atoms`` by the proper rotation and translation fitting their mapped beads onto ``cg``."""
        p = atoms.to(torch.float64)
        q = cg.to(torch.float64)
        mapped = torch.einsum("ka,fai->fki", self.mapping_matrix, p)
        mapped_centre = mapped.mean(1, keepdim=True)
        target_centre = q.mean(1, keepdim=True)
        covariance = torch.einsum("fki,fkj->fij", mapped - mapped_centre, q - target_centre)
        u, _, vh = torch.linalg.svd(covariance)
        sign = torch.sign(torch.linalg.det(u @ vh))
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        flip = torch.ones(p.size(0), 3, dtype=torch.float64)
        flip[:, 2] = sign
        rotation_t = (u * flip[:, None, :]) @ vh  # row vectors: x' = x @ rotation_t
        return ((p - mapped_centre) @ rotation_t + target_centre).to(atoms.dtype)

    def build(
        self, cg: torch.Tensor, r: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor, closure: torch.Tensor
    ) -> torch.Tensor:
        """Atoms placed by NeRF, closed (:meth:`close`) and, for an unanchored Z-matrix, superposed onto ``cg``."""
        atoms = self.close(self.place(cg, r, theta, phi), closure)
        if not self.anchored:
            atoms = self.superpose(atoms, cg)
        return atoms


class ICBackmapper(ZMatrixModule):
    """The contract's module: CG beads in, atoms out, by sampled internal coordinates and NeRF.

    Free torsions come from per-torsion MLPs over the CG features and the free torsions
    sampled before them (the training code fits the MLPs after construction).
    """

    n_bins: int

    def __init__(
        self,
        zmatrix: ZMatrix,
        mapping_matrix: np.ndarray,
        r_stats: tuple[np.ndarray, np.ndarray],
        theta_stats: tuple[np.ndarray, np.ndarray],
        phi_stats: tuple[np.ndarray, np.ndarray],
        free: np.ndarray,
        feature_stats: tuple[np.ndarray, np.ndarray],
        hidden: int = 64,
        n_bins: int = N_BINS,
        closure_stats: Optional[tuple[np.ndarray, np.ndarray]] = None,
    ):
        super().__init__(zmatrix, mapping_matrix, r_stats, theta_stats, phi_stats, free, feature_stats, closure_stats)
        self.n_bins = int(n_bins)

        def buffer(name: str, value, dtype=torch.float32) -> None:
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=dtype))

        n_features = len(feature_stats[0])
        # Torsion k sees the CG features and sin/cos of the free torsions sampled before it.
        inputs = n_features + 2 * self.n_free
        mask = np.zeros((max(self.n_free, 1), inputs))
        mask[:, :n_features] = 1.0
        for k in range(self.n_free):
            mask[k, n_features : n_features + 2 * k] = 1.0
        buffer("input_mask", mask[: self.n_free] if self.n_free else mask[:0])
        m = self.n_free

        def uniform(*shape: int, fan_in: int) -> torch.nn.Parameter:
            bound = 1.0 / math.sqrt(fan_in)
            return torch.nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        self.w1 = uniform(m, inputs, hidden, fan_in=inputs)
        self.b1 = uniform(m, hidden, fan_in=inputs)
        self.w2 = uniform(m, hidden, hidden, fan_in=hidden)
        self.b2 = uniform(m, hidden, fan_in=hidden)
        self.w3 = uniform(m, hidden, self.n_bins, fan_in=hidden)
        self.b3 = uniform(m, self.n_bins, fan_in=hidden)

    # -------------------------------------------------------------- pieces

    def torsion_logits(self, features: torch.Tensor, previous: torch.Tensor, k: int) -> torch.Tensor:
        """Logits (frames, bins) of free torsion ``k`` given CG features and sin/cos of all free torsions (masked)."""
        x = torch.cat([features, previous], dim=1) * self.input_mask[k]
        h = torch.nn.functional.silu(x @ self.w1[k] + self.b1[k])
        h = torch.nn.functional.silu(h @ self.w2[k] + self.b2[k])
        return h @ self.w3[k] + self.b3[k]

    @torch.jit.ignore
    def all_torsion_logits(self, features: torch.Tensor, free_sincos: torch.Tensor) -> torch.Tensor:
        """Logits (frames, free, bins) of every free torsion at once (teacher forcing, for training)."""
        x = torch.cat([features, free_sincos], dim=1)[:, None, :] * self.input_mask[None]
        h = torch.nn.functional.silu(torch.einsum("bki,kih->bkh", x, self.w1) + self.b1)
        h = torch.nn.functional.silu(torch.einsum("bki,kih->bkh", h, self.w2) + self.b2)
        return torch.einsum("bki,kih->bkh", h, self.w3) + self.b3

    def sample_internal(self, features: torch.Tensor, generator: torch.Generator) -> List[torch.Tensor]:
        """Sampled (r, theta, phi), each (frames, rows) in level order, and closure lengths (frames, closures).

        The free torsions come first; the rest of the geometry is drawn given them and the CG.
        """
        frames = features.size(0)
        free = torch.zeros(frames, self.n_free, dtype=features.dtype)
        if self.n_free > 0:
            gumbel = -torch.log(-torch.log(torch.rand(self.n_free, frames, self.n_bins, generator=generator).clamp(1e-10, 1.0 - 1e-7)))
            jitter = torch.rand(self.n_free, frames, generator=generator)
            width = 2.0 * math.pi / self.n_bins
            previous = torch.zeros(frames, 2 * self.n_free, dtype=features.dtype)
            values: List[torch.Tensor] = []
            for k in range(self.n_free):
                logits = self.torsion_logits(features, previous, k)
                index = torch.argmax(logits + gumbel[k], dim=1)
                angle = -math.pi + (index.to(features.dtype) + jitter[k]) * width
                values.append(angle)
                previous[:, 2 * k] = torch.sin(angle)
                previous[:, 2 * k + 1] = torch.cos(angle)
            free = torch.stack(values, dim=1)
        r, theta, phi, closure = self.sample_geometry(frames, generator, self.geometry_condition(features, free))
        if self.n_free > 0:
            phi = phi.index_copy(1, self.free_rows, free)
        return [r, theta, phi, closure]

    # -------------------------------------------------------------- the contract

    def forward(self, cg: torch.Tensor, previous: Optional[torch.Tensor], seed: int) -> torch.Tensor:
        if cg.dim() != 3 or cg.size(1) != self.n_beads or cg.size(2) != 3:
            raise RuntimeError(
                "ic backmapper takes CG coordinates of shape (frames, " + str(self.n_beads) + ", 3); got " + str(cg.shape)
            )
        with torch.no_grad():
            cg = cg.to(torch.float32)
            generator = torch.Generator()
            generator.manual_seed(seed)
            features = self.features(cg)
            internal = self.sample_internal(features, generator)
            return self.build(cg, internal[0], internal[1], internal[2], internal[3])


# ---------------------------------------------------------------------- family


class ICFamily:
    """Factory of the ``ic`` family (registered as ``"ic"``).

    Parameters
    ----------
    **options
        Training options passed on to :func:`openmmbackmap.training.train_ic` (``hidden``,
        ``n_bins``, ``max_epochs``, ``seed``...).

    Examples
    --------
    >>> from openmmbackmap.models import create_family
    >>> family = create_family("ic", hidden=32)
    >>> result = family.train(mapping, [trajectory_xyz])            # doctest: +SKIP
    >>> family.save(result, "model.pt")                              # doctest: +SKIP
    """

    name = "ic"

    def __init__(self, **options):
        self.options = options

    def zmatrix(self, mapping: Mapping) -> ZMatrix:
        return build_zmatrix(mapping)

    def train(self, mapping: Mapping, segments, **options):
        """Train on atomistic segments (each (frames, atoms, 3) nm); see :func:`openmmbackmap.training.train_ic`."""
        from openmmbackmap.training import train_ic

        return train_ic(mapping, segments, **{**self.options, **options})

    def save(self, result, path):
        """Save a :class:`openmmbackmap.training.TrainingResult` with its metadata."""
        from openmmbackmap.training import save_result

        return save_result(result, path)


from openmmbackmap.models import register_family  # noqa: E402  (the registry imports nothing from here)

register_family("ic", ICFamily)
