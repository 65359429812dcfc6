"""The backmapper contract: one TorchScript file, self-describing, loadable without training code.

Every family's model is a TorchScript module with one signature::

    forward(cg: Tensor[B, n_beads, 3], previous: Optional[Tensor[B, n_atoms, 3]], seed: int)
        -> Tensor[B, n_atoms, 3]

nm in, nm out; rotating and translating ``cg`` (and ``previous``) moves the output the same
way. The file carries ``backmap.json`` (``torch.jit.save(..., _extra_files=...)``): format and
version, family, the full mapping with its fingerprint (the atomistic topology is inside it),
units, training provenance and validation metrics. Loading needs ``torch.jit.load`` and this
module only.

Examples
--------
>>> from openmmbackmap import io
>>> from openmmbackmap.models.base import load_backmapper
>>> backmapper = load_backmapper(io.bundled("models/ala2_backbone_ic.pt"))
>>> topology, positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
>>> cg = backmapper.mapping.map(positions)          # 5 backbone beads, nm
>>> backmapper(cg, seed=1).shape
(22, 3)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import openmm.app as app
import torch

from openmmbackmap import __version__, io
from openmmbackmap.errors import InputError, MappingError
from openmmbackmap.mapping import Mapping, canonical_json, check_same_topology

FORMAT = "openmm-backmap/backmapper"
FORMAT_VERSION = 1
METADATA_FILE = "backmap.json"
#: Units of the contract: fixed, recorded in every file so that readers need not assume.
UNITS = {"length": "nm", "time": "ps", "energy": "kJ/mol"}


@dataclass
class BackmapperMetadata:
    """What a backmapper file says about itself.

    Attributes
    ----------
    family
        Model family (``"ic"``, ``"cvae"``, ``"gan"``).
    mapping
        The mapping the model was trained with (its canonical dict, topology included).
    provenance
        How it was trained: data, seeds, options, package version, timing.
    validation
        Metrics on held-out data, as measured at training time.
    """

    family: str
    mapping: dict
    provenance: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return canonical_json(
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "family": self.family,
                "units": UNITS,
                "mapping": self.mapping,
                "fingerprint": self.mapping["fingerprint"],
                "provenance": self.provenance,
                "validation": self.validation,
                "openmm_backmap_version": __version__,
            }
        )


def save_backmapper(
    module: torch.nn.Module,
    path: str | os.PathLike,
    *,
    family: str,
    mapping: Mapping,
    provenance: dict[str, Any] | None = None,
    validation: dict[str, Any] | None = None,
) -> Path:
    """Script (if needed) and save a model with its metadata, atomically.

    Parameters
    ----------
    module
        A module with the contract's ``forward`` (scripted here unless it already is).
    path
        Output ``.pt`` file.
    family
        The family name from the registry.
    mapping
        The mapping the model was trained on.
    provenance, validation
        Training provenance and held-out metrics (JSON-serialisable).
    """
    scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
    metadata = BackmapperMetadata(family, mapping.to_dict(), provenance or {}, validation or {})
    path = Path(path)
    with io.atomic_output(path) as temporary:
        torch.jit.save(scripted, str(temporary), _extra_files={METADATA_FILE: metadata.to_json()})
    return path


class Backmapper:
    """A loaded backmapping model: call it on CG coordinates (numpy, nm) to get atoms (numpy, nm).

    Use :func:`load_backmapper` to create one.
    """

    def __init__(self, module: torch.jit.ScriptModule, metadata: BackmapperMetadata, mapping: Mapping, path: Path):
        self.module = module
        self.metadata = metadata
        self.mapping = mapping
        self.path = path

    @property
    def family(self) -> str:
        return self.metadata.family

    @property
    def topology(self) -> app.Topology:
        """The atomistic topology of the output."""
        return self.mapping.topology

    @property
    def n_beads(self) -> int:
        return self.mapping.n_beads

    @property
    def temporal(self) -> bool:
        """True for a family whose frame ``t`` is conditioned on frame ``t - 1`` (run it with :meth:`trajectory`)."""
        return bool(self.metadata.provenance.get("temporal"))

    @property
    def frame_interval_ps(self) -> float | None:
        """Time between the frames a temporal model was trained on, ps (None: frame-wise or unknown)."""
        temporal = self.metadata.provenance.get("temporal") or {}
        return temporal.get("frame_interval_ps")

    @property
    def n_atoms(self) -> int:
        return self.mapping.n_atoms

    @property
    def rejection(self) -> dict | None:
        """How the module redraws frames that clash or have a cis peptide (:mod:`openmmbackmap.models.rejection`); None if it does not."""
        return self.metadata.provenance.get("rejection")

    def __call__(
        self,
        cg: np.ndarray,
        previous: np.ndarray | None = None,
        seed: int = 0,
        batch_size: int = 1024,
    ) -> np.ndarray:
        """Backmap CG frames.

        Parameters
        ----------
        cg
            Bead coordinates in nm, (frames, beads, 3) or (beads, 3).
        previous
            Atomistic coordinates of the previous frames (temporally coherent families), same
            leading shape as ``cg``; None for the first frame or frame-wise families.
        seed
            Seed of the model's sampling; batch ``k`` uses ``seed + k`` so results do not
            depend on how many batches ran before in the same process.
        batch_size
            Frames per call of the TorchScript module.

        Returns
        -------
        numpy.ndarray
            Atomistic coordinates, nm, float32, (frames, atoms, 3) or (atoms, 3).
        """
        cg = np.asarray(cg, dtype=np.float32)
        single = cg.ndim == 2
        if single:
            cg = cg[None]
        if cg.ndim != 3 or cg.shape[1:] != (self.n_beads, 3):
            raise InputError(
                f"model {self.path.name} takes {self.n_beads} beads; got coordinates of shape {cg.shape}"
            )
        io.check_finite(cg, self.mapping.cg_topology, "CG coordinates")
        if previous is not None:
            previous = np.asarray(previous, dtype=np.float32)
            previous = previous[None] if previous.ndim == 2 else previous
            if previous.shape != (len(cg), self.n_atoms, 3):
                raise InputError(
                    f"model {self.path.name}: previous frames must have shape {(len(cg), self.n_atoms, 3)}; "
                    f"got {previous.shape}"
                )
        out = np.empty((len(cg), self.n_atoms, 3), dtype=np.float32)
        with torch.inference_mode():
            for k, start in enumerate(range(0, len(cg), batch_size)):
                stop = start + batch_size
                prev = None if previous is None else torch.from_numpy(previous[start:stop])
                result = self.module(torch.from_numpy(cg[start:stop]), prev, int(seed) + k)
                out[start:stop] = result.numpy()
        return out[0] if single else out

    def trajectory(
        self,
        cg: np.ndarray,
        samples: int = 1,
        seed: int = 0,
        *,
        progress: Callable[[int], None] | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 1000,
    ) -> np.ndarray:
        """Backmap a CG trajectory: ``samples`` independent atomistic trajectories of it.

        A temporal model (:attr:`temporal`) runs autoregressively: frame ``t`` is conditioned
        on the frame it generated at ``t - 1`` (the first frame on none); the samples advance
        side by side, one call of the module per frame (:func:`run_temporal`). A frame-wise
        model backmaps every frame on its own, sample ``k`` with seed ``seed + 1_000_003 k``.

        Parameters
        ----------
        cg
            Bead coordinates in nm, (frames, beads, 3), in time order, with the frame spacing
            the model was trained on (:attr:`frame_interval_ps`).
        samples, seed
            Independent trajectories and the seed; frame ``t`` of a temporal model uses
            ``seed + t``, so a resumed run gives the frames an uninterrupted one would.
        progress
            Called with the number of frames done (temporal models).
        checkpoint
            A temporal run saves the frames done so far to this ``.npz`` every
            ``checkpoint_every`` frames and, if it exists for the same model, CG, seed and
            samples, resumes from it. The caller deletes it once the output is written.

        Returns
        -------
        numpy.ndarray
            (samples, frames, atoms, 3), nm, float32.
        """
        cg = np.asarray(cg, dtype=np.float32)
        if cg.ndim != 3 or cg.shape[1:] != (self.n_beads, 3):
            raise InputError(f"model {self.path.name} takes {self.n_beads} beads; got a trajectory of shape {cg.shape}")
        if samples < 1:
            raise InputError(f"samples must be positive; got {samples}")
        if not self.temporal:
            return np.stack([self(cg, seed=seed + 1_000_003 * k) for k in range(samples)])
        io.check_finite(cg, self.mapping.cg_topology, "CG coordinates")
        chains = np.broadcast_to(cg, (samples, *cg.shape))
        out = np.empty((samples, len(cg), self.n_atoms, 3), dtype=np.float32)
        done, key = 0, None
        if checkpoint is not None:
            checkpoint = Path(checkpoint)
            key = json.dumps({
                "model": io.file_sha256(self.path),
                "cg": hashlib.sha256(np.ascontiguousarray(cg).tobytes()).hexdigest(),
                "seed": int(seed), "samples": int(samples),
                # without_rejection() keeps the file's path: its draws are another run's
                "rejection": self.rejection,
            }, sort_keys=True)
            if checkpoint.is_file():
                with np.load(checkpoint) as saved:
                    if str(saved["key"]) != key:
                        raise InputError(
                            f"checkpoint {str(checkpoint)!r} belongs to another run (model, CG trajectory, seed or "
                            "samples differ); delete it to start again"
                        )
                    done = int(saved["xyz"].shape[1])
                    out[:, :done] = saved["xyz"]
        while done < len(cg):
            stop = min(done + checkpoint_every, len(cg)) if checkpoint is not None else len(cg)
            previous = out[:, done - 1] if done > 0 else None
            out[:, done:stop] = run_temporal(self.module, chains, seed=seed, previous=previous, start=done, stop=stop,
                                             progress=progress)
            done = stop
            if checkpoint is not None and done < len(cg):
                with io.atomic_output(checkpoint) as temporary:
                    with open(temporary, "wb") as handle:
                        np.savez(handle, xyz=out[:, :done], key=np.array(key))
        return out

    def __repr__(self) -> str:
        return f"<Backmapper {self.family!r} {self.path.name}: {self.n_beads} beads -> {self.n_atoms} atoms>"


def run_temporal(
    module: torch.nn.Module,
    cg: np.ndarray,
    *,
    seed: int = 0,
    previous: np.ndarray | None = None,
    start: int = 0,
    stop: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Run a contract module along CG trajectories, each frame conditioned on the one it generated before.

    Parameters
    ----------
    module
        A TorchScript (or plain) module with the contract's ``forward``.
    cg
        (chains, frames, beads, 3), nm: independent trajectories that advance together (samples
        of one CG trajectory, or blocks of equal length), one module call per frame.
    seed
        Frame ``t`` (of all chains) is generated with seed ``seed + t``.
    previous
        (chains, atoms, 3): the atomistic frame ``start - 1``; None: frame ``start`` takes the
        non-temporal path.
    start, stop
        The frames to generate (default: all from ``start``).
    progress
        Called with the number of the last frame done plus one, after every frame.

    Returns
    -------
    numpy.ndarray
        (chains, stop - start, atoms, 3), nm, float32.
    """
    stop = cg.shape[1] if stop is None else stop
    frames = []
    prev = None if previous is None else torch.from_numpy(np.ascontiguousarray(previous, dtype=np.float32))
    with torch.inference_mode():
        for t in range(start, stop):
            prev = module(torch.tensor(cg[:, t], dtype=torch.float32), prev, int(seed) + t)
            frames.append(prev)
            if progress is not None:
                progress(t + 1)
    if not frames:
        return np.zeros((cg.shape[0], 0, 0, 3), dtype=np.float32)
    return torch.stack(frames, dim=1).numpy()


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``backmap.json`` of a model file, without loading the model."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist")
    extra = {METADATA_FILE: ""}
    try:
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # a corrupt zip, a pickle, a foreign format...
        raise InputError(f"model file {str(path)!r} is not a TorchScript model: {exc}") from exc
    if not extra[METADATA_FILE]:
        raise InputError(f"model file {str(path)!r} has no {METADATA_FILE}: not an openmm-backmap backmapper")
    try:
        return json.loads(extra[METADATA_FILE])
    except json.JSONDecodeError as exc:
        raise InputError(f"model file {str(path)!r}: {METADATA_FILE} is damaged: {exc}") from exc


def load_backmapper(
    path: str | os.PathLike,
    mapping: Mapping | None = None,
    topology: app.Topology | None = None,
) -> Backmapper:
    """Load a backmapper file with ``torch.jit.load`` and check it against what the caller has.

    Parameters
    ----------
    path
        The ``.pt`` file.
    mapping
        If given, its fingerprint must equal the one the model was trained with.
    topology
        If given, it must be the model's atomistic topology (same residues, atoms, bonds).

    Raises
    ------
    InputError
        For a missing, corrupt or foreign file, or an unsupported format version.
    MappingError
        For a mapping or topology that does not match the model's, naming what differs.
    """
    path = Path(path)
    data = read_metadata(path)
    if data.get("format") != FORMAT:
        raise InputError(f"model file {str(path)!r}: format {data.get('format')!r} is not {FORMAT!r}")
    if data.get("version") != FORMAT_VERSION:
        raise InputError(
            f"model file {str(path)!r}: format version {data.get('version')} is not supported "
            f"(this openmm-backmap reads version {FORMAT_VERSION})"
        )
    stored = Mapping.from_dict(data["mapping"], source=f"model file {path.name}")
    if mapping is not None and mapping.fingerprint != stored.fingerprint:
        raise MappingError(
            f"model file {str(path)!r} was trained with mapping {stored.scheme!r} (fingerprint "
            f"{stored.fingerprint[:12]}); the given mapping {mapping.scheme!r} has fingerprint "
            f"{mapping.fingerprint[:12]}: different beads, weights or topology"
        )
    if topology is not None:
        check_same_topology(data["mapping"]["topology"], topology, f"model file {path.name}")
        stored = Mapping(topology, stored.beads, scheme=stored.scheme)
    elif mapping is not None:
        stored = mapping
    module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    metadata = BackmapperMetadata(
        family=data["family"], mapping=data["mapping"],
        provenance=data.get("provenance", {}), validation=data.get("validation", {}),
    )
    return Backmapper(module, metadata, stored, path)
