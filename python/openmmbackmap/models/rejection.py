"""Rejection of impossible frames: redraw where a backmapper clashed atoms or turned a peptide bond cis.

A backmapper samples from a model of the Boltzmann distribution; a structure with two heavy
atoms nearly on top of each other, or a non-proline peptide bond cis, has next to no weight in
the real one. Where a model's output has such a defect (side-chain rings drawn through each
other across a hairpin is the typical clash, where every torsion is plausible alone), drawing
that frame again from the *same* conditional distribution until it has none is rejection
sampling from the model restricted to the physically allowed region: closer to the Boltzmann
distribution, not further, and the conditioning (CG frame, previous frame of a temporal model)
is untouched. Frames whose first draw is sound are returned as drawn.

:class:`RejectionSampler` wraps any model of the contract (:mod:`openmmbackmap.models.base`) in
TorchScript, so a simulation that loads the file gets the redraws too; :func:`add_rejection`
wraps a saved model file (``backmap train`` does it unless ``--rejection-rounds 0``).

The criterion
-------------
- Clash: heavy atoms more than three bonds apart (the pairs of
  :func:`openmmbackmap.bench.structural.clashscore`) closer than ``min_ratio`` times the sum of
  their Bondi radii (:data:`~openmmbackmap.bench.structural.VDW_RADII_NM`). The default 0.75
  (C-C 2.55 A, N-O 2.30 A, O-O 2.28 A) lies below every frame of the chignolin and alanine
  dipeptide references (chignolin's closest pair over 3,000 frames at 300 K is at 0.79: a
  hydrogen-bonded carboxylate and hydroxyl), so correct structures are never redrawn.
- Cis: a peptide bond (CA-C-N-CA, ``TopologyFeatures.omegas``) before a residue other than
  proline with ``|omega| < 90`` degrees, the benchmark's definition
  (:func:`~openmmbackmap.bench.structural.cis_peptides`).

A temporal model is redrawn first with its previous frame and then, for a frame whose previous
state no longer fits the beads (a rotamer the CG has moved into), on its first-frame path. A
frame still defective after ``rounds`` redraws (of each kind) keeps its last draw, and the
benchmarks count it like any other.

Examples
--------
>>> from openmmbackmap import io
>>> from openmmbackmap.models import load_backmapper
>>> from openmmbackmap.models.rejection import add_rejection
>>> add_rejection(io.bundled("models/ala2_backbone_ic.pt"), "ic_rejecting.pt")   # doctest: +SKIP
>>> load_backmapper("ic_rejecting.pt").rejection                               # doctest: +SKIP
{'clash_pairs': 15, 'min_ratio': 0.75, 'peptide_bonds': 2, 'rounds': 32}
"""

import argparse
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import openmm.app as app
import torch

from openmmbackmap.errors import InputError

if TYPE_CHECKING:
    from openmmbackmap.models.base import Backmapper
    from openmmbackmap.training import TrainingResult

#: Default fraction of the sum of van der Waals radii below which two heavy atoms clash.
MIN_RATIO = 0.75
#: Default number of redraws of a defective frame.
ROUNDS = 32
#: Largest number of heavy-atom pairs the all-pairs clash check takes (about 2,000 heavy atoms:
#: 32 MB of pair indices in the file, a 24 MB temporary per frame); beyond it a neighbour search
#: would be needed, which this module does not have.
MAX_PAIRS = 2_000_000
#: A redraw call of fewer frames than this draws each of them several times (at most MAX_COPIES).
MIN_BATCH = 32
MAX_COPIES = 16
#: Seed offset of redraw ``r`` (a prime far from the offsets :meth:`Backmapper.__call__` and
#: ``trajectory`` add per batch, sample and frame, so redraws reuse none of their streams).
SEED_STRIDE = 7_919_993


class TooManyPairs(InputError):
    """The molecule has more heavy-atom pairs than :data:`MAX_PAIRS`."""


def clash_pairs(topology: app.Topology, min_ratio: float = MIN_RATIO) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The heavy-atom pairs the clash criterion checks and their closest allowed distance.

    Parameters
    ----------
    topology
        The atomistic topology of the model's output.
    min_ratio
        Fraction of the sum of the Bondi radii below which a pair clashes.

    Returns
    -------
    first, second, min_distance
        Atom indices (pairs, ) and distances (pairs, ), nm.
    """
    from openmmbackmap.bench import structural
    from openmmbackmap.bench.structure import TopologyFeatures

    if not 0.0 < min_ratio < 1.0:
        raise InputError(f"rejection: min_ratio must lie between 0 and 1; got {min_ratio}")
    features = TopologyFeatures.from_topology(topology)
    atoms = structural._clash_atoms(features)
    radii = structural._radii(features, structural.VDW_RADII_NM)
    # At least this many pairs are more than three bonds apart: refuse before listing them all.
    at_least = len(atoms) * (len(atoms) - 1) // 2 - features.within_three_bonds.nnz
    first, second = np.triu_indices(len(atoms) if at_least <= MAX_PAIRS else 0, 1)
    first, second = atoms[first], atoms[second]
    far = ~np.asarray(features.within_three_bonds[first, second]).ravel().astype(bool)
    first, second = first[far], second[far]
    if at_least > MAX_PAIRS or len(first) > MAX_PAIRS:
        raise TooManyPairs(
            f"{len(atoms)} heavy atoms make {max(at_least, len(first)):,} or more pairs to check for clashes, more "
            f"than the {MAX_PAIRS:,} the all-pairs check of openmmbackmap.models.rejection takes"
        )
    return first, second, min_ratio * (radii[first] + radii[second])


def trans_peptide_bonds(topology: app.Topology) -> np.ndarray:
    """Rows (CA, C, N, CA) of the peptide bonds that must be trans: every one not before a proline."""
    from openmmbackmap.bench.structure import CIS_ALLOWED, TopologyFeatures

    features = TopologyFeatures.from_topology(topology)
    keep = [name not in CIS_ALLOWED for name in features.omega_residues]
    return np.asarray(features.omegas, dtype=np.int64).reshape(-1, 4)[np.asarray(keep, dtype=bool)]


class RejectionSampler(torch.nn.Module):
    """A backmapper that redraws the frames of another that clash or have a cis peptide bond.

    Parameters
    ----------
    backmapper
        Any module with the contract's ``forward(cg, previous, seed)``.
    first, second, min_distance
        The pairs checked for clashes and their closest allowed distance, nm (:func:`clash_pairs`).
    omegas
        Rows (CA, C, N, CA) of the bonds that must be trans (:func:`trans_peptide_bonds`).
    rounds
        Redraw calls at most (and as many again on a temporal model's first-frame path). With
        fewer than :data:`MIN_BATCH` frames left, call ``r`` draws each of them up to
        ``2**r`` times (at most :data:`MAX_COPIES`) and keeps the first sound draw.
    """

    rounds: int
    chunk: int
    seed_stride: int
    min_batch: int
    max_copies: int

    def __init__(self, backmapper: torch.nn.Module, first: np.ndarray, second: np.ndarray,
                 min_distance: np.ndarray, omegas: np.ndarray, rounds: int = ROUNDS):
        super().__init__()
        if rounds < 0:
            raise InputError(f"rejection: rounds must be zero or more; got {rounds}")
        self.backmapper = backmapper
        self.rounds = int(rounds)
        self.seed_stride = SEED_STRIDE
        self.min_batch = MIN_BATCH
        self.max_copies = MAX_COPIES
        self.register_buffer("first", torch.as_tensor(np.asarray(first), dtype=torch.long))
        self.register_buffer("second", torch.as_tensor(np.asarray(second), dtype=torch.long))
        self.register_buffer("min_distance", torch.as_tensor(np.asarray(min_distance), dtype=torch.float32))
        self.register_buffer("omegas", torch.as_tensor(np.asarray(omegas), dtype=torch.long).reshape(-1, 4))
        # Frames per distance evaluation: bounds the (frames, pairs, 3) temporary to ~16 M numbers
        # whatever the molecule's size.
        self.chunk = max(1, 16_000_000 // max(3 * len(first), 1))

    def clashing(self, atoms: torch.Tensor) -> torch.Tensor:
        """Which frames (frames, ) of ``atoms`` (frames, atoms, 3) nm have a pair closer than allowed."""
        found = torch.zeros(atoms.size(0), dtype=torch.bool, device=atoms.device)
        if self.first.numel() == 0:
            return found
        for start in range(0, atoms.size(0), self.chunk):
            block = atoms[start : start + self.chunk]
            distance = torch.linalg.vector_norm(block.index_select(1, self.first) - block.index_select(1, self.second), dim=2)
            found[start : start + block.size(0)] = (distance < self.min_distance.to(distance.dtype)).any(dim=1)
        return found

    def cis(self, atoms: torch.Tensor) -> torch.Tensor:
        """Which frames (frames, ) of ``atoms`` have a peptide bond of :attr:`omegas` cis (``|omega| < 90``)."""
        if self.omegas.numel() == 0:
            return torch.zeros(atoms.size(0), dtype=torch.bool, device=atoms.device)
        a, b, c, d = (atoms.index_select(1, self.omegas[:, k]) for k in range(4))
        # cos(omega) > 0 without the angle: the two bond normals' projections on the C-N axis' plane.
        axis = c - b
        u = (a - b) - axis * ((a - b) * axis).sum(-1, keepdim=True) / (axis * axis).sum(-1, keepdim=True)
        v = (d - c) - axis * ((d - c) * axis).sum(-1, keepdim=True) / (axis * axis).sum(-1, keepdim=True)
        return ((u * v).sum(-1) > 0).any(dim=1)

    def defective(self, atoms: torch.Tensor) -> torch.Tensor:
        """Frames that clash or have a cis peptide bond."""
        return self.clashing(atoms) | self.cis(atoms)

    def forward(self, cg: torch.Tensor, previous: Optional[torch.Tensor], seed: int) -> torch.Tensor:
        atoms = self.backmapper(cg, previous, seed)
        todo = torch.nonzero(self.defective(atoms)).flatten()
        conditioned_first = [True, False] if previous is not None else [False]
        redraw = 0
        for conditioned in conditioned_first:
            for _ in range(self.rounds):
                if todo.numel() == 0:
                    break
                redraw += 1
                # Few frames left: draw each several times in one call (2, 4, ... copies, doubling per
                # call; the model's cost per call, not per frame, dominates small batches) and keep the
                # first sound copy: the same rejection sampling, the copies being independent draws in
                # a fixed order.
                copies = max(1, min(1 << min(redraw, 16), self.max_copies, self.min_batch // todo.numel()))
                index = todo.repeat_interleave(copies)
                before: Optional[torch.Tensor] = None
                if conditioned and previous is not None:
                    before = previous.index_select(0, index)
                drawn = self.backmapper(cg.index_select(0, index), before, seed + self.seed_stride * redraw)
                sound = ~self.defective(drawn).view(-1, copies)
                found = sound.any(dim=1)
                # The first sound copy of each frame (the last copy where none is).
                pick = torch.where(found, torch.argmax(sound.to(torch.int64), dim=1), torch.full_like(todo, copies - 1))
                chosen = drawn.view(todo.numel(), copies, drawn.size(1), 3)[torch.arange(todo.numel()), pick]
                atoms = atoms.index_copy(0, todo, chosen.to(atoms.dtype))
                todo = todo[~found]
        return atoms


def with_rejection(
    module: torch.nn.Module,
    topology: app.Topology,
    provenance: dict,
    *,
    min_ratio: float = MIN_RATIO,
    rounds: int = ROUNDS,
    command: str | None = None,
) -> tuple[RejectionSampler, dict]:
    """``module`` inside a :class:`RejectionSampler` for ``topology``, and ``provenance`` with ``rejection`` added.

    Parameters
    ----------
    module
        The model's module (contract of :mod:`openmmbackmap.models.base`), not yet wrapped.
    topology
        Its atomistic topology.
    provenance
        The model's provenance (not modified).
    min_ratio, rounds
        The clash criterion (:func:`clash_pairs`) and the redraw calls.
    command
        The command that asked for it, recorded in the provenance.

    Raises
    ------
    TooManyPairs
        For a molecule too large for the all-pairs clash check.
    """
    if "rejection" in provenance:
        raise InputError(f"the model redraws defective frames already ({provenance['rejection']})")
    first, second, min_distance = clash_pairs(topology, min_ratio)
    omegas = trans_peptide_bonds(topology)
    record = {"min_ratio": float(min_ratio), "rounds": int(rounds), "clash_pairs": int(len(first)),
              "peptide_bonds": int(len(omegas))}
    if command:
        record["command"] = command
    return RejectionSampler(module, first, second, min_distance, omegas, rounds), {**provenance, "rejection": record}


def add_rejection(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    min_ratio: float = MIN_RATIO,
    rounds: int = ROUNDS,
    command: str | None = None,
) -> Path:
    """Write a copy of a model file whose module redraws defective frames (:func:`with_rejection`).

    The metadata is kept; its provenance gains ``rejection`` (the criterion, the number of pairs
    and bonds checked) and the ``validation`` metrics stay those of the model as trained
    (without redraws).

    Parameters
    ----------
    path, out
        The model file and the file to write (may be the same: written atomically).
    min_ratio, rounds, command
        As :func:`with_rejection` takes them.
    """
    from openmmbackmap.models.base import load_backmapper, save_backmapper

    backmapper = load_backmapper(path)
    if backmapper.rejection is not None:
        raise InputError(f"model file {str(path)!r} redraws defective frames already ({backmapper.rejection})")
    module, provenance = with_rejection(backmapper.module, backmapper.topology, backmapper.metadata.provenance,
                                        min_ratio=min_ratio, rounds=rounds, command=command)
    return save_backmapper(module, out, family=backmapper.family, mapping=backmapper.mapping,
                           provenance=provenance, validation=backmapper.metadata.validation)


def without_rejection(backmapper: "Backmapper") -> "Backmapper":
    """The model's own draws: a loaded backmapper whose module is the one inside its :class:`RejectionSampler`.

    For benchmarks that report a model with and without the redraws side by side; a backmapper
    without rejection is returned as it is.
    """
    from openmmbackmap.models.base import Backmapper, BackmapperMetadata

    if backmapper.rejection is None:
        return backmapper
    provenance = {k: v for k, v in backmapper.metadata.provenance.items() if k != "rejection"}
    metadata = BackmapperMetadata(backmapper.family, backmapper.metadata.mapping, provenance, backmapper.metadata.validation)
    return Backmapper(backmapper.module.backmapper, metadata, backmapper.mapping, backmapper.path)


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--rejection-rounds`` and ``--clash-min-ratio``, shared by the commands that write a model file."""
    parser.add_argument("--rejection-rounds", type=int, default=ROUNDS, metavar="N",
                        help="the written model redraws a frame whose heavy atoms clash or that has a non-proline cis "
                             f"peptide up to N times (openmmbackmap.models.rejection; default {ROUNDS}, 0: never)")
    parser.add_argument("--clash-min-ratio", type=float, default=MIN_RATIO, metavar="F",
                        help="heavy atoms more than three bonds apart clash when closer than F times the sum of their "
                             f"van der Waals radii (default {MIN_RATIO})")
    return parser


def check_options(args: argparse.Namespace) -> None:
    """Refuse bad :func:`configure_parser` options before any work (training can take hours)."""
    if args.rejection_rounds < 0:
        raise InputError(f"--rejection-rounds must be zero or more; got {args.rejection_rounds}")
    if not 0.0 < args.clash_min_ratio < 1.0:
        raise InputError(f"--clash-min-ratio must lie between 0 and 1; got {args.clash_min_ratio}")


def apply_options(result: "TrainingResult", args: argparse.Namespace) -> None:
    """Wrap a freshly trained or transferred model, before it is saved, as the :func:`configure_parser` options say.

    Its ``validation`` metrics stay those of its own draws. A molecule too large for the
    all-pairs clash check keeps the model as it is, with a warning.
    """
    check_options(args)
    if not args.rejection_rounds:
        return
    try:
        result.module, result.provenance = with_rejection(
            result.module, result.mapping.topology, result.provenance,
            min_ratio=args.clash_min_ratio, rounds=args.rejection_rounds,
        )
    except TooManyPairs as exc:
        warnings.warn(f"the model will not redraw defective frames: {exc}", stacklevel=2)


__all__ = ["MAX_PAIRS", "MIN_RATIO", "ROUNDS", "RejectionSampler", "TooManyPairs", "add_rejection", "apply_options",
           "check_options", "clash_pairs", "configure_parser", "trans_peptide_bonds", "with_rejection",
           "without_rejection"]
