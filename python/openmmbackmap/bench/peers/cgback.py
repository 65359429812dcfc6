"""CGBack: a diffusion model that rebuilds all atoms from a C-alpha trace.

CGBack (Ugarte La Torre & Sugita, J. Chem. Inf. Model. 2025, doi:10.1021/acs.jcim.5c01281;
``pip install cgback``) ships its model weights in the wheel, so it runs offline. It reads a
PDB of ``CA`` atoms (``ATOM`` records, standard residue names, ``TER`` between chains), keeps
every C-alpha where it is, samples the other heavy atoms residue by residue, adds hydrogens
(pH 7 protonation) and regenerates residues with ring penetrations, clashes or wrong
chirality. The structure it writes has hydrogens, residues renumbered from 1 and chains
lettered from A.

Run here as ``python -m cgback.backmapper_app INPUT -o OUT -m M -d cpu -s SEED`` (the
console script need not be on PATH). CGBack reports its own errors on stdout with
``[ERROR]`` and exits with status 0, so a run is judged by those lines and by its output file.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import ClassVar

from openmmbackmap.bench.peers.base import Availability, Peer, PeerError, _tail, pdb_atom_records
from openmmbackmap.errors import InputError

#: CGBack's default seed (used when ``seed`` is None).
DEFAULT_SEED = 42


class CgbackPeer(Peer):
    """CGBack on the CPU (or ``device="cuda"``).

    Parameters
    ----------
    model
        Model size: ``"S"``, ``"M"`` (CGBack's default) or ``"L"``.
    device
        ``"cpu"`` or ``"cuda"``.
    num_timesteps
        Diffusion steps; None: the model's own (20).
    energy_minimization
        Let CGBack minimise with OpenMM after building (off, as CGBack's default).
    **options
        Passed to :class:`~openmmbackmap.bench.peers.base.Peer` (timeout, threads, keep_scratch).
    """

    name: ClassVar[str] = "cgback"
    input_kind: ClassVar[str] = "ca"
    writes_hydrogens: ClassVar[bool] = True

    def __init__(self, *, model: str = "M", device: str = "cpu", num_timesteps: int | None = None,
                 energy_minimization: bool = False, **options):
        super().__init__(**options)
        if model not in ("S", "M", "L"):
            raise InputError(f"cgback: model must be 'S', 'M' or 'L', not {model!r}")
        self.model, self.device = model, device
        self.num_timesteps, self.energy_minimization = num_timesteps, energy_minimization

    def available(self) -> Availability:
        try:
            spec = importlib.util.find_spec("cgback")
        except (ImportError, ValueError) as exc:
            return Availability(False, f"cgback cannot be located: {exc}")
        if spec is None or spec.origin is None:
            return Availability(False, "the cgback package is not installed (pip install cgback)")
        checkpoints = Path(spec.origin).parent / "checkpoints"
        if not any(checkpoints.glob("*.pt")):
            return Availability(False, f"cgback's model weights are missing from {checkpoints}")
        if importlib.util.find_spec("torch") is None:
            return Availability(False, "cgback needs torch, which is not installed")
        return Availability(True, f"cgback {self.version()}")

    def version(self) -> str:
        try:
            return importlib.metadata.version("cgback")
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    def _check_input(self, cg_pdb: Path) -> None:
        records = pdb_atom_records(cg_pdb)
        if not any(line.startswith("ATOM  ") and line[12:16].strip() == "CA" for line in records):
            raise InputError(f"cgback: {str(cg_pdb)!r} has no ATOM records named CA; cgback reads a C-alpha trace")

    def _run(self, cg_pdb: Path, scratch: Path, seed: int | None) -> Path:
        output = scratch / "cgback_out.pdb"
        command = [sys.executable, "-m", "cgback.backmapper_app", cg_pdb, "-o", output, "-m", self.model,
                   "-d", self.device, "-s", str(DEFAULT_SEED if seed is None else int(seed))]
        if self.num_timesteps is not None:
            command += ["-n", str(int(self.num_timesteps))]
        if self.energy_minimization:
            command.append("-e")
        result = self._execute(command, scratch, cg_pdb)
        errors = [line for line in result.stdout.splitlines() if line.startswith("[ERROR]")]
        if errors:
            raise PeerError(self.name, cg_pdb, "; ".join(e[len("[ERROR]"):].strip() for e in errors),
                            _tail(result.stderr, result.stdout))
        return output
