"""Reference all-atom simulations: the trajectories and forces that training and tests use.

:func:`run_reference_simulation` runs a plain, reproducible OpenMM simulation of a PDB
structure in implicit solvent and writes, next to each other:

``<prefix>.pdb``
    Topology and the starting frame (after minimisation and equilibration).
``<prefix>.xtc``
    Positions every ``report_interval`` steps (XTC, so rounded to 0.001 nm).
``<prefix>.forces.npy``
    float32 array ``(frames, atoms, 3)`` in kJ/mol/nm: the forces at exactly the frames
    of the XTC (computed from the unrounded positions), for force matching.
``<prefix>.positions.npy`` (only with ``save_positions=True``)
    float32 ``(frames, atoms, 3)`` in nm: the XTC frames without XTC's 0.001 nm rounding.
``<prefix>.json``
    Provenance: force field, thermostat, time step, steps, seed, platform, OpenMM
    version, wall time and speed.

Units are OpenMM's: nm, ps, kJ/mol, K.
"""

from __future__ import annotations

import contextlib
import io as _text_io
import json
import os
import platform as _platform
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from openmmbackmap import io, plugins
from openmmbackmap.errors import InputError
from openmmbackmap.io import atomic_output, load_topology

__all__ = ["REFERENCE_FORCEFIELD", "reference_system", "run_reference_simulation"]


class _ArrayReporter:
    """Store forces (and optionally unrounded positions) of every frame into preallocated arrays."""

    def __init__(
        self, forces: np.ndarray, positions: np.ndarray | None, report_interval: int
    ) -> None:
        self._forces = forces
        self._positions = positions
        self._interval = report_interval
        self.n_frames = 0

    def describeNextReport(self, simulation: app.Simulation) -> dict[str, Any]:
        steps = self._interval - simulation.currentStep % self._interval
        include = ["forces"] if self._positions is None else ["forces", "positions"]
        return {"steps": steps, "periodic": None, "include": include}

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        self._forces[self.n_frames] = state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer
        )
        if self._positions is not None:
            self._positions[self.n_frames] = state.getPositions(asNumpy=True).value_in_unit(
                unit.nanometer
            )
        self.n_frames += 1


#: Force field files of the standard reference setup.
REFERENCE_FORCEFIELD: tuple[str, ...] = ("amber99sbildn.xml", "amber99_obc.xml")


def reference_system(
    topology: app.Topology,
    forcefield_files: Sequence[str] = REFERENCE_FORCEFIELD,
    hydrogen_mass: float | None = None,
    source: str | os.PathLike | None = None,
) -> openmm.System:
    """The ``System`` of the standard reference setup for ``topology``.

    amber99sbildn + amber99_obc (OBC implicit solvent) by default, ``NoCutoff``, constraints on
    bonds to hydrogen: the setup of :func:`run_reference_simulation` and of the benchmark's
    MD-readiness checks.

    Parameters
    ----------
    topology
        All-atom topology with hydrogens and bonds.
    forcefield_files
        OpenMM force field XML files.
    hydrogen_mass
        Hydrogen mass repartitioning (amu), or None.
    source
        The structure file, named in error messages.

    Raises
    ------
    InputError
        If the force field files cannot be loaded, or have no template for a residue (the
        message names the residue, its number and chain).
    """
    where = f"{source}: " if source is not None else ""
    try:
        forcefield = app.ForceField(*forcefield_files)
    except Exception as exc:
        raise InputError(f"cannot load force field files {list(forcefield_files)}: {exc}") from exc
    try:
        return forcefield.createSystem(
            topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds,
            hydrogenMass=None if hydrogen_mass is None else hydrogen_mass * unit.amu,
        )
    except ValueError as exc:
        unmatched = forcefield.getUnmatchedResidues(topology)
        if unmatched:
            names = ", ".join(
                f"{res.name} {res.id} (chain {res.chain.id}, {len(list(res.atoms()))} atoms)" for res in unmatched
            )
            raise InputError(
                f"{where}force field {list(forcefield_files)} has no template for residue(s) {names}; "
                f"missing hydrogens or non-standard atom names? OpenMM says: {exc}"
            ) from exc
        raise InputError(f"{where}cannot build a system with {list(forcefield_files)}: {exc}") from exc


def _pdb_text(topology: app.Topology, positions: Any) -> str:
    """PDB text without the date OpenMM stamps in its header, so that reruns give equal files."""
    buffer = _text_io.StringIO()
    app.PDBFile.writeFile(topology, positions, buffer, keepIds=True)
    lines = buffer.getvalue().splitlines(keepends=True)
    return "".join(
        f"REMARK   1 CREATED WITH OPENMM {openmm.__version__}\n"
        if line.startswith("REMARK   1 CREATED WITH OPENMM") else line
        for line in lines
    )


def run_reference_simulation(
    pdb_path: str | os.PathLike[str],
    out_prefix: str | os.PathLike[str],
    *,
    forcefield_files: Sequence[str] = REFERENCE_FORCEFIELD,
    temperature: float = 300.0,
    friction: float = 1.0,
    timestep_fs: float = 2.0,
    n_steps: int,
    report_interval: int,
    seed: int,
    platform: str = "Reference",
    minimize: bool = True,
    equilibration_steps: int = 0,
    save_positions: bool = False,
    hydrogen_mass: float | None = None,
) -> dict[str, Any]:
    """Run a reproducible Langevin simulation and write trajectory, forces and provenance.

    The system is built with ``openmm.app.ForceField(*forcefield_files)``, no cutoff
    and constraints on bonds to hydrogen, and integrated with
    ``openmm.LangevinMiddleIntegrator``. The integrator seed and the initial velocities
    both come from ``seed``, so on the Reference platform the same call gives the same
    trajectory bit for bit.

    Steps: optional energy minimisation, ``equilibration_steps`` unrecorded steps, then
    ``n_steps`` production steps with a frame every ``report_interval`` steps (the
    starting frame itself is not in the XTC; it is the PDB). The step counter is reset
    to 0 after equilibration, so XTC frame ``i`` is at production step
    ``(i + 1) * report_interval``.

    Parameters
    ----------
    pdb_path
        All-atom structure (PDB, or PDBx/mmCIF by extension ``.cif``) with hydrogens.
    out_prefix
        Output path without extension; the folder must exist. Written:
        ``<out_prefix>.pdb``, ``.xtc``, ``.forces.npy`` and ``.json`` (and
        ``.positions.npy`` with ``save_positions``).
    forcefield_files
        OpenMM force field XML files.
    temperature
        Thermostat temperature and initial-velocity temperature, K.
    friction
        Langevin friction coefficient, 1/ps.
    timestep_fs
        Integration time step, fs.
    n_steps
        Number of production steps (positive).
    report_interval
        Steps between recorded frames (positive, at most ``n_steps``).
    seed
        Seed of the integrator's random numbers and of the initial velocities.
    platform
        OpenMM platform name ("Reference", "CPU", "CUDA", ...).
    minimize
        Minimise the energy before equilibration.
    equilibration_steps
        Unrecorded steps run before production.
    hydrogen_mass
        Hydrogen mass repartitioning: hydrogens get this mass (amu, e.g. 4.0), taken from
        the heavy atom they are bonded to, which allows a 4 fs time step. The saved forces
        are unaffected (forces do not depend on masses); dynamics are slowed slightly.
    save_positions
        Also write ``<out_prefix>.positions.npy``: float32 ``(frames, atoms, 3)`` positions
        in nm at the XTC frames, without XTC's 0.001 nm rounding. Use these, not the XTC,
        where positions must match the forces exactly (force matching): the rounding
        alone changes the forces by roughly 10-20 % RMS through the stiff bonds.

    Returns
    -------
    dict
        The provenance also written to ``<out_prefix>.json``: inputs, settings,
        ``n_frames``, ``n_atoms``, ``openmm_version``, ``wall_time_s`` (whole run),
        ``production_wall_time_s`` and ``ns_per_day`` (production only).

    Raises
    ------
    InputError
        If the structure cannot be read (the message names the file), or the force
        field has no template for a residue (the message names the residue).
    ValueError
        If a numeric setting is out of range.

    Notes
    -----
    Every output is first written under a temporary name in the output folder and
    renamed (``os.replace``) only when the whole run has succeeded, so an interrupted
    run leaves no partial file under a final name.
    """
    t_start = time.perf_counter()
    pdb_path = Path(pdb_path)
    out_prefix = Path(out_prefix)
    n_steps = int(n_steps)
    report_interval = int(report_interval)
    equilibration_steps = int(equilibration_steps)
    if n_steps <= 0:
        raise ValueError(f"n_steps must be positive, got {n_steps}")
    if report_interval <= 0 or report_interval > n_steps:
        raise ValueError(f"report_interval must be in 1..n_steps ({n_steps}), got {report_interval}")
    if equilibration_steps < 0:
        raise ValueError(f"equilibration_steps must be >= 0, got {equilibration_steps}")
    if temperature <= 0 or friction < 0 or timestep_fs <= 0:
        raise ValueError("temperature and timestep_fs must be positive and friction >= 0")
    out_dir = out_prefix.parent if str(out_prefix.parent) else Path(".")
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: output folder does not exist")

    topology, start_positions = load_topology(pdb_path)
    if start_positions is None:
        raise InputError(f"{pdb_path}: has no coordinates to start from; give a PDB or PDBx file")
    system = reference_system(topology, forcefield_files, hydrogen_mass, source=pdb_path)

    timestep = timestep_fs * unit.femtoseconds
    integrator = openmm.LangevinMiddleIntegrator(
        temperature * unit.kelvin, friction / unit.picosecond, timestep
    )
    integrator.setRandomNumberSeed(int(seed))
    omm_platform = plugins.platform(platform)
    simulation = app.Simulation(topology, system, integrator, omm_platform)
    simulation.context.setPositions(start_positions)

    if minimize:
        simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, int(seed))
    if equilibration_steps:
        simulation.step(equilibration_steps)
    simulation.currentStep = 0
    simulation.context.setTime(0.0)
    start_state = simulation.context.getState(getPositions=True, getEnergy=True)

    final = {
        "pdb": out_prefix.with_name(out_prefix.name + ".pdb"),
        "xtc": out_prefix.with_name(out_prefix.name + ".xtc"),
        "forces": out_prefix.with_name(out_prefix.name + ".forces.npy"),
        "json": out_prefix.with_name(out_prefix.name + ".json"),
    }
    if save_positions:
        final["positions"] = out_prefix.with_name(out_prefix.name + ".positions.npy")
    # Every file goes through io.atomic_output; the provenance JSON is entered first so that it
    # is moved into place last (ExitStack unwinds in reverse): its presence marks a complete set.
    with contextlib.ExitStack() as outputs:
        temps = {key: outputs.enter_context(atomic_output(final[key]))
                 for key in sorted(final, key=lambda k: k != "json")}
        simulation.reporters.clear()
        outputs.callback(simulation.reporters.clear)  # release the XTC file before it is moved
        with open(temps["pdb"], "w") as handle:
            handle.write(_pdb_text(topology, start_state.getPositions()))

        n_frames = n_steps // report_interval
        n_atoms = topology.getNumAtoms()
        forces = np.lib.format.open_memmap(
            temps["forces"], mode="w+", dtype=np.float32, shape=(n_frames, n_atoms, 3)
        )
        positions = None
        if save_positions:
            positions = np.lib.format.open_memmap(
                temps["positions"], mode="w+", dtype=np.float32, shape=(n_frames, n_atoms, 3)
            )
        force_reporter = _ArrayReporter(forces, positions, report_interval)
        simulation.reporters.append(app.XTCReporter(str(temps["xtc"]), report_interval))
        simulation.reporters.append(force_reporter)

        t_prod = time.perf_counter()
        simulation.step(n_steps)
        production_wall = time.perf_counter() - t_prod
        for array in (forces, positions):
            if array is not None:
                array.flush()
        if force_reporter.n_frames != n_frames:  # pragma: no cover - OpenMM contract
            raise RuntimeError(f"expected {n_frames} frames, recorded {force_reporter.n_frames}")

        simulated_ns = n_steps * timestep_fs * 1e-6
        provenance: dict[str, Any] = {
            "input_structure": str(pdb_path),
            "input_sha256": io.file_sha256(pdb_path),
            "forcefield_files": list(forcefield_files),
            "nonbonded_method": "NoCutoff",
            "constraints": "HBonds",
            "hydrogen_mass_amu": hydrogen_mass,
            "integrator": "LangevinMiddleIntegrator",
            "temperature_K": float(temperature),
            "friction_per_ps": float(friction),
            "timestep_fs": float(timestep_fs),
            "minimize": bool(minimize),
            "equilibration_steps": equilibration_steps,
            "n_steps": n_steps,
            "report_interval": report_interval,
            "frame_interval_ps": report_interval * timestep_fs * 1e-3,
            "simulated_ns": simulated_ns,
            "n_frames": n_frames,
            "n_atoms": n_atoms,
            "seed": int(seed),
            "platform": simulation.context.getPlatform().getName(),
            "openmm_version": openmm.__version__,
            "python_version": _platform.python_version(),
            "start_potential_energy_kj_mol": start_state.getPotentialEnergy().value_in_unit(
                unit.kilojoule_per_mole
            ),
            "wall_time_s": None,  # filled below
            "production_wall_time_s": production_wall,
            "ns_per_day": simulated_ns / (production_wall / 86400.0),
            "files": {
                "pdb": final["pdb"].name,
                "xtc": final["xtc"].name,
                **{k: final[k].name for k in ("forces", "positions") if k in final},
            },
            "units": {"positions": "nm", "forces": "kJ/mol/nm", "time": "ps"},
        }
        provenance["wall_time_s"] = time.perf_counter() - t_start
        with open(temps["json"], "w") as handle:
            json.dump(provenance, handle, indent=2)
            handle.write("\n")
    return provenance
