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

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    def n_atoms(self) -> int:
        return self.mapping.n_atoms

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

    def __repr__(self) -> str:
        return f"<Backmapper {self.family!r} {self.path.name}: {self.n_beads} beads -> {self.n_atoms} atoms>"


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
