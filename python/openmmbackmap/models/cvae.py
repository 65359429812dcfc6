"""The ``cvae`` family: temporally coherent backmapping with a conditional variational autoencoder.

Frame ``t`` is generated conditioned on CG frame ``t`` *and* on the atomistic frame generated
at ``t - 1`` (the approach of Shmilovich et al., "Temporally coherent backmapping of molecular
trajectories from coarse-grained to atomistic resolution", arXiv:2205.05213), so that a
backmapped trajectory stays in the rotamers and basins it was in as long as the CG lets it,
instead of redrawing them every frame. The first frame, or any frame given ``previous=None``,
takes the non-temporal path of the same network.

What is generated, and how (built on :mod:`openmmbackmap.models.ic`):

- the geometry is the ``ic`` family's: the same Z-matrix (:func:`~openmmbackmap.models.ic.build_zmatrix`),
  the same Gaussian bond lengths, angles and clipped dependent torsions, the same NeRF
  placement and superposition (:class:`~openmmbackmap.models.ic.ZMatrixModule`), so bonds,
  chirality and trans peptides are right by construction;
- the *free* torsions (backbone phi/psi-like torsions, rotors) come from the CVAE. Its
  condition ``c`` is the rotation-invariant CG features of frame ``t``, the sine and cosine
  of the previous frame's free torsions, and a flag that says whether there was a previous
  frame (zeros and flag 0 on the non-temporal path; during training the previous frame is
  dropped at random, ``condition_dropout``, so one network learns both). The CG image of the
  previous frame is deliberately left out: in training it is the exact CG, along a generated
  trajectory only an approximation of it (an unanchored build is a best fit to the beads),
  and that mismatch made generated trajectories hop between basins more;
- with the Z-matrix built ``chain_first`` the free torsions are the backbone phi and psi
  themselves (plus rotors), so the basin of frame ``t - 1`` is exactly in the condition;
- a latent ``z`` (``latent`` dimensions) has a learnt conditional Gaussian prior
  ``p(z | c)``; the encoder ``q(z | torsions, c)`` is used in training only; the decoder
  ``p(torsions | z, c)`` is a categorical distribution over :data:`~openmmbackmap.models.ic.N_BINS`
  bins per free torsion, independent given ``z`` (so correlations between torsions, e.g.
  phi and psi, have to pass through ``z``), sampled by the Gumbel-max trick with a uniform
  jitter inside the bin. To the decoder's logits of torsion ``k`` is added a learnt
  persistence kernel ``kappa_k cos(bin - previous_k)`` (zero on the first-frame path): how
  strongly a torsion stays where it was is one parameter per torsion rather than something
  an MLP must learn from sine and cosine inputs, which the few thousand frame pairs of a
  reference are not enough for. Torsions that move together are coupled: the kernel's centre
  moves by a linear function of the steps the torsions of earlier levels just took (a
  torsion measured from an atom that moved, like a terminal residue's C from the peptide
  plane before it, steps with that plane; drawn independently, the residue swings between
  frames), fitted on the training steps (:func:`openmmbackmap.training.fit_step_coupling`);
  the torsions are then drawn level by level;
- training maximises the evidence lower bound (cross-entropy of the torsion bins plus the KL
  divergence of ``q`` from the prior), :func:`openmmbackmap.training.train_cvae`, on pairs of
  frames ``stride`` apart. A model backmaps trajectories whose frames are that far apart;
  the spacing is recorded in the file (``provenance["temporal"]``) and
  :meth:`openmmbackmap.models.base.Backmapper.trajectory` runs it along a trajectory.

Everything is rotation- and translation-invariant until the final placement (features,
torsions of the previous frame), which is equivariant, so the output moves with ``cg``
whatever the orientation of ``previous``.

Examples
--------
>>> from openmmbackmap import io
>>> from openmmbackmap.models import load_backmapper
>>> backmapper = load_backmapper(io.bundled("models/ala2_residue_com_cvae.pt"))
>>> topology, positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
>>> cg = backmapper.mapping.map(positions[None].repeat(10, axis=0))  # 10 frames of 3 beads
>>> backmapper.trajectory(cg, samples=2, seed=1).shape                 # frame t sees frame t-1
(2, 10, 22, 3)
"""

import math
from typing import List, Optional, Tuple

import numpy as np
import torch

from openmmbackmap import torch_geometry
from openmmbackmap.errors import MappingError
from openmmbackmap.mapping import Mapping
from openmmbackmap.models.ic import N_BINS, ZMatrix, ZMatrixModule, build_zmatrix



def _mlp(inputs: int, hidden: int, outputs: int) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Linear(inputs, hidden), torch.nn.SiLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
        torch.nn.Linear(hidden, outputs),
    )


class CVAEBackmapper(ZMatrixModule):
    """The contract's module: CG frame ``t`` and atomistic frame ``t - 1`` in, atomistic frame ``t`` out.

    Parameters are those of :class:`~openmmbackmap.models.ic.ZMatrixModule` plus the network
    sizes; :func:`openmmbackmap.training.train_cvae` builds and fits it.

    Attributes
    ----------
    prior, encoder, decoder
        MLPs: condition -> (mean, log variance) of ``z``; condition and the true torsions
        (sin, cos) -> the same (training only); condition and ``z`` -> torsion-bin logits.
    """

    n_bins: int
    latent: int
    n_features: int
    condition_size: int
    free_levels: List[int]

    def __init__(
        self,
        zmatrix: ZMatrix,
        mapping_matrix: np.ndarray,
        r_stats: tuple[np.ndarray, np.ndarray],
        theta_stats: tuple[np.ndarray, np.ndarray],
        phi_stats: tuple[np.ndarray, np.ndarray],
        free: np.ndarray,
        feature_stats: tuple[np.ndarray, np.ndarray],
        hidden: int = 128,
        latent: int = 8,
        n_bins: int = N_BINS,
        closure_stats: Optional[tuple[np.ndarray, np.ndarray]] = None,
    ):
        super().__init__(zmatrix, mapping_matrix, r_stats, theta_stats, phi_stats, free, feature_stats, closure_stats)
        if self.n_free == 0:
            raise MappingError(
                "the cvae family generates free torsions, and this Z-matrix has none (every torsion is "
                "fixed by the CG or the bonded geometry): use the ic family"
            )
        self.n_bins = int(n_bins)
        self.latent = int(latent)
        self.n_features = int(len(feature_stats[0]))
        # Atoms (x, a, b, c) of each free torsion, in the order of free_rows: measured on the previous frame.
        free_atoms = zmatrix.rows[np.flatnonzero(free)]
        assert (free_atoms < zmatrix.n_atoms).all(), "a free torsion never involves a virtual point"
        self.register_buffer("free_atoms", torch.as_tensor(free_atoms, dtype=torch.long))
        m = self.n_free
        # CG features of t, sin/cos of t-1's free torsions, the has-previous flag.
        self.condition_size = self.n_features + 2 * m + 1
        condition = self.condition_size
        self.prior = _mlp(condition, hidden, 2 * self.latent)
        self.encoder = _mlp(condition + 2 * m, hidden, 2 * self.latent)
        self.decoder = _mlp(condition + self.latent, hidden, m * self.n_bins)
        # Persistence: torsion k's logits get kappa_k * cos(bin centre - its previous value), a von
        # Mises kernel around where it was (zero on the first-frame path, whose sin/cos are zeros).
        # An MLP learns "stay where you were" from sin/cos inputs only with far more frames than a
        # reference holds (chignolin `ca`: its temporal and first-frame bounds came out equal).
        self.persistence = torch.nn.Parameter(torch.zeros(m))
        centres = -math.pi + (np.arange(self.n_bins) + 0.5) * 2.0 * math.pi / self.n_bins
        self.register_buffer("bin_cos", torch.as_tensor(np.cos(centres), dtype=torch.float32))
        self.register_buffer("bin_sin", torch.as_tensor(np.sin(centres), dtype=torch.float32))
        # Level of each free torsion's row: torsions of one level are drawn together, after the
        # levels they hang from (whose steps shift their kernels, set_step_coupling).
        free_level = zmatrix.level[np.flatnonzero(free)]
        self.register_buffer("free_level", torch.as_tensor(free_level, dtype=torch.long))
        self.free_levels = [int(level) for level in np.unique(free_level)]
        self.register_buffer("step_coupling", torch.zeros(m, m))

    # -------------------------------------------------------------- pieces

    def free_torsions(self, atoms: torch.Tensor) -> torch.Tensor:
        """The free torsions (frames, free) of atomistic frames, radians (mdtraj's convention)."""
        return torch_geometry.dihedral(
            atoms.index_select(1, self.free_atoms[:, 0]), atoms.index_select(1, self.free_atoms[:, 1]),
            atoms.index_select(1, self.free_atoms[:, 2]), atoms.index_select(1, self.free_atoms[:, 3]),
        )

    def condition(self, cg: torch.Tensor, previous: Optional[torch.Tensor]) -> torch.Tensor:
        """The CVAE's condition (frames, C): zeros and flag 0 in place of the previous frame when there is none."""
        features = self.features(cg)
        frames = cg.size(0)
        if previous is None:
            rest = torch.zeros(frames, 2 * self.n_free + 1, dtype=features.dtype)
        else:
            torsions = self.free_torsions(previous.to(features.dtype))
            rest = torch.cat([torch.sin(torsions), torch.cos(torsions), torch.ones(frames, 1, dtype=features.dtype)], dim=1)
        return torch.cat([features, rest], dim=1)

    def gaussian(self, parameters: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mean and log variance from a network's output (frames, 2 * latent)."""
        mean, log_variance = parameters.chunk(2, dim=1)
        return mean, log_variance.clamp(-10.0, 4.0)  # numerical safety only

    def set_step_coupling(self, coupling: np.ndarray) -> None:
        """Shift each torsion's persistence kernel by the steps of torsions drawn at earlier levels.

        ``coupling`` (free, free): the kernel of torsion ``k`` is centred at its previous value
        plus ``sum_j coupling[k, j] * sin(step_j)``, where ``step_j`` is how far torsion ``j``
        moved since the previous frame (:func:`openmmbackmap.training.fit_step_coupling`). Only
        entries with ``j`` at an earlier level than ``k`` may be non-zero.
        """
        coupling = torch.as_tensor(np.asarray(coupling), dtype=torch.float32)
        later = self.free_level.view(1, -1) >= self.free_level.view(-1, 1)
        if coupling.shape != self.step_coupling.shape or bool((coupling.abs() * later).sum() > 0):
            raise ValueError("step coupling must be (free, free) and couple a torsion only to torsions of earlier levels")
        self.step_coupling.copy_(coupling)

    def previous_torsions(self, condition: torch.Tensor) -> torch.Tensor:
        """The previous frame's free torsions (frames, free), radians, read back from the condition (0 if none)."""
        start = self.n_features
        return torch.atan2(condition[:, start : start + self.n_free], condition[:, start + self.n_free : start + 2 * self.n_free])

    def persistence_kernel(self, condition: torch.Tensor, previous: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """``kappa_k cos(bin - centre_k)`` (frames, free, bins); zero on the first-frame path.

        The centre is the previous frame's torsion ``previous`` (:meth:`previous_torsions`),
        shifted by the coupled steps ``steps`` (frames, free) radians of the torsions drawn
        before (:meth:`set_step_coupling`).
        """
        centre = previous + torch.sin(steps) @ self.step_coupling.t()
        kappa = torch.nn.functional.softplus(self.persistence).view(1, -1)
        weight = (kappa * condition[:, -1:]).unsqueeze(2)  # the has-previous flag
        return weight * (torch.cos(centre).unsqueeze(2) * self.bin_cos + torch.sin(centre).unsqueeze(2) * self.bin_sin)

    def logits(self, condition: torch.Tensor, z: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Torsion-bin logits (frames, free, bins) of the decoder plus the persistence kernel.

        ``steps`` (frames, free): how far each torsion moved since the previous frame (in
        training the true steps; only those of earlier levels count, through the coupling).
        """
        logits = self.decoder(torch.cat([condition, z], dim=1)).view(-1, self.n_free, self.n_bins)
        return logits + self.persistence_kernel(condition, self.previous_torsions(condition), steps)

    def sample_free(self, condition: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Free torsions (frames, free), radians: ``z`` from the prior, bins from the decoder, jitter in the bin.

        With a step coupling and a previous frame, level by level: each level's kernels are
        centred using the steps just drawn at the levels before.
        """
        frames = condition.size(0)
        mean, log_variance = self.gaussian(self.prior(condition))
        epsilon = torch.randn(frames, self.latent, generator=generator)
        z = mean + torch.exp(0.5 * log_variance) * epsilon
        uniform = torch.rand(frames, self.n_free, self.n_bins, generator=generator).clamp(1e-10, 1.0 - 1e-7)
        gumbel = -torch.log(-torch.log(uniform))
        jitter = torch.rand(frames, self.n_free, generator=generator)
        width = 2.0 * math.pi / self.n_bins
        steps = torch.zeros(frames, self.n_free, dtype=condition.dtype)
        if not (bool((self.step_coupling != 0).any()) and bool((condition[:, -1] > 0).any())):
            index = torch.argmax(self.logits(condition, z, steps) + gumbel, dim=2)
            return -math.pi + (index.to(condition.dtype) + jitter) * width
        decoded = self.decoder(torch.cat([condition, z], dim=1)).view(-1, self.n_free, self.n_bins)
        previous = self.previous_torsions(condition)
        torsions = torch.zeros(frames, self.n_free, dtype=condition.dtype)
        for level in self.free_levels:
            drawn = (self.free_level == level).view(1, -1)
            index = torch.argmax(decoded + self.persistence_kernel(condition, previous, steps) + gumbel, dim=2)
            drawn_torsions = -math.pi + (index.to(condition.dtype) + jitter) * width
            torsions = torch.where(drawn, drawn_torsions, torsions)
            steps = torch.where(drawn, torch.remainder(drawn_torsions - previous + math.pi, 2.0 * math.pi) - math.pi, steps)
        return torsions

    # -------------------------------------------------------------- the contract

    def forward(self, cg: torch.Tensor, previous: Optional[torch.Tensor], seed: int) -> torch.Tensor:
        if cg.dim() != 3 or cg.size(1) != self.n_beads or cg.size(2) != 3:
            raise RuntimeError(
                "cvae backmapper takes CG coordinates of shape (frames, " + str(self.n_beads) + ", 3); got " + str(cg.shape)
            )
        if previous is not None:
            if previous.dim() != 3 or previous.size(0) != cg.size(0) or previous.size(1) != self.n_atoms or previous.size(2) != 3:
                raise RuntimeError(
                    "cvae backmapper: previous (the atomistic frames generated before these) must have shape ("
                    + str(cg.size(0)) + ", " + str(self.n_atoms) + ", 3); got " + str(previous.shape)
                )
        with torch.no_grad():
            cg = cg.to(torch.float32)
            generator = torch.Generator()
            generator.manual_seed(seed)
            condition = self.condition(cg, previous)
            torsions = self.sample_free(condition, generator)
            r, theta, phi, closure = self.sample_geometry(
                cg.size(0), generator, self.geometry_condition(condition[:, : self.n_features], torsions)
            )
            phi = phi.index_copy(1, self.free_rows, torsions)
            return self.build(cg, r, theta, phi, closure)


# ---------------------------------------------------------------------- family


class CVAEFamily:
    """Factory of the ``cvae`` family (registered as ``"cvae"``).

    Parameters
    ----------
    **options
        Training options passed on to :func:`openmmbackmap.training.train_cvae` (``stride``,
        ``hidden``, ``latent``, ``condition_dropout``, ``max_epochs``, ``seed``...).

    Examples
    --------
    >>> from openmmbackmap.models import create_family
    >>> family = create_family("cvae", stride=1, latent=8)
    >>> result = family.train(mapping, [trajectory_xyz])            # doctest: +SKIP
    >>> family.save(result, "model.pt")                              # doctest: +SKIP
    """

    name = "cvae"
    #: Frame t depends on frame t - 1: run it along trajectories, not frame by frame.
    temporal = True

    def __init__(self, **options):
        self.options = options

    def zmatrix(self, mapping: Mapping) -> ZMatrix:
        return build_zmatrix(mapping, chain_first=self.options.get("chain_first", True))

    def train(self, mapping: Mapping, segments, **options):
        """Train on atomistic segments (each (frames, atoms, 3) nm, contiguous in time); see :func:`openmmbackmap.training.train_cvae`."""
        from openmmbackmap.training import train_cvae

        return train_cvae(mapping, segments, **{**self.options, **options})

    def save(self, result, path):
        """Save a :class:`openmmbackmap.training.TrainingResult` with its metadata."""
        from openmmbackmap.training import save_result

        return save_result(result, path)


from openmmbackmap.models import register_family  # noqa: E402  (the registry imports nothing from here)

register_family("cvae", CVAEFamily)

__all__ = ["CVAEBackmapper", "CVAEFamily"]
