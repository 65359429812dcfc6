"""In-simulation resolution switching: the multiscale driver and its reporters.

:class:`MultiscaleSimulation` wraps a CG ``openmm.app.Simulation`` (Martini from GROMACS files,
a learned CG force field run through openmmtorch, or any System a user built), a backmapper
file and an atomistic System. It advances CG dynamics and, on a schedule, on demand or when a
callback asks, switches to atomistic resolution:

1. the bead positions are read from the CG Context (numpy, nm);
2. the backmapper draws ``samples`` reconstructions in one batch; the one with the lowest
   potential energy is kept;
3. it is injected into the atomistic Context (created once, reused at every switch) and
   minimised with each mapped group's centroid restrained to its bead (:mod:`openmmbackmap.relax`);
4. it is checked (finite, energy under a threshold, no chirality error, no non-proline cis
   peptide); a failure draws new samples (another seed) up to ``max_attempts`` times, then the
   best candidate is relaxed more strongly; what still fails follows ``on_failure``;
5. optionally ``atomistic_steps`` of atomistic MD follow (velocities drawn at the temperature),
   and optionally the result is mapped back to CG (positions and velocities) and CG dynamics go
   on from there.

Every switch produces a :class:`SwitchRecord` (timings of inference, injection, relaxation,
MD and map-back; energies before and after relaxation; quality checks) that reaches the
reporters in :attr:`MultiscaleSimulation.reporters`. They follow OpenMM's reporter protocol
with the switch as the unit of time: ``describeNextReport(simulation)`` returns how many
switches until the next report (1: this one) and what the ``openmm.State`` handed to
``report(simulation, state)`` must include; ``simulation`` is the MultiscaleSimulation (its
``lastSwitch`` is the record, its ``topology`` the atomistic topology) and ``state`` the atomistic
Context's after relaxation. Atomistic MD is a plain ``app.Simulation`` (:attr:`atomistic`), so
OpenMM's own reporters attached to ``atomistic.reporters`` record it.

The whole run checkpoints (:meth:`MultiscaleSimulation.saveCheckpoint`): both Contexts (their
OpenMM checkpoints hold positions, velocities and the integrators' random state), the step
counts, the switch history and each reporter's position in its file. Sampling seeds derive from
``(seed, switch number, attempt)`` with no hidden random state, so a resumed run repeats an
uninterrupted one exactly where the dynamics are deterministic: the CPU platform with a fixed
number of threads is; the Reference platform is not across Contexts, because all its Contexts in a
process draw Langevin noise from one shared generator.

Example
-------
>>> import openmm, openmm.app as app
>>> from openmmbackmap import io
>>> from openmmbackmap.cgforce import bundled_model, create_cg_system
>>> from openmmbackmap.models import load_backmapper
>>> backmapper = load_backmapper(io.bundled("models/ala2_backbone_ic.pt"))
>>> _, positions = io.load_topology(io.bundled("alanine_dipeptide/ala2.pdb"))
>>> mapping = backmapper.mapping
>>> cg = app.Simulation(mapping.cg_topology, create_cg_system(mapping, bundled_model()),
...                     openmm.LangevinMiddleIntegrator(300, 1, 0.002), openmm.Platform.getPlatformByName("CPU"))
>>> cg.context.setPositions(mapping.map(positions))
>>> multiscale = MultiscaleSimulation(cg, backmapper, switch_interval=50, platform="CPU",
...                                   reference_positions=positions, seed=1)
>>> multiscale.run(100)
>>> [(record.step, record.accepted, record.chirality_errors) for record in multiscale.switches]
[(50, True, 0), (100, True, 0)]
"""

from __future__ import annotations

import csv
import io as text_io
import json
import os
import sys
import time
import zipfile
from collections.abc import Callable, Mapping as MappingType, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
from openmm import unit

from openmmbackmap import io
from openmmbackmap.bench.structural import chirality_errors, cis_peptides, clashscore
from openmmbackmap.bench.structure import TopologyFeatures
from openmmbackmap.data import REFERENCE_FORCEFIELD, reference_system
from openmmbackmap.errors import BackmapError, InputError
from openmmbackmap.models.base import Backmapper, load_backmapper
from openmmbackmap.relax import RelaxationSettings, RestrainedRelaxation

__all__ = [
    "AtomisticTrajectoryReporter",
    "MultiscaleSimulation",
    "RunInterrupted",
    "SwitchError",
    "SwitchLogReporter",
    "SwitchRecord",
]

CHECKPOINT_FORMAT = "openmm-backmap/multiscale-checkpoint"
CHECKPOINT_VERSION = 1


class SwitchError(BackmapError, RuntimeError):
    """A switch produced no structure that passes its checks (``on_failure="raise"``)."""


class RunInterrupted(BackmapError, RuntimeError):
    """The run stopped at a safe point because :meth:`MultiscaleSimulation.requestStop` was called."""


@dataclass
class SwitchRecord:
    """What happened at one switch from CG to atomistic resolution.

    Times are wall-clock seconds; energies kJ/mol without the restraint; ``step`` is the CG
    step at which the switch happened.
    """

    index: int
    step: int
    time_ps: float
    samples: int
    attempts: int = 0
    strong_relaxation: bool = False
    inference_s: float = 0.0
    injection_s: float = 0.0
    relaxation_s: float = 0.0
    md_s: float = 0.0
    map_back_s: float = 0.0
    total_s: float = 0.0
    energy_backmapped: float = float("nan")
    energy_relaxed: float = float("nan")
    energy_after_md: float = float("nan")
    restraint_energy: float = float("nan")
    bead_rmsd_nm: float = float("nan")
    clashscore: float = float("nan")
    chirality_errors: int | None = None
    cis_peptides: int = 0
    accepted: bool = False
    mapped_back: bool = False
    problems: str = ""

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict:
        return asdict(self)


def _seed(*parts: int) -> int:
    """A seed for a torch/OpenMM call from a tuple of integers (no hidden random state)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


class MultiscaleSimulation:
    """Run CG dynamics and switch to atomistic resolution (and back) with a learned backmapper.

    Parameters
    ----------
    cg_simulation
        The CG ``app.Simulation``, positions set. Its particles ``bead_particles`` are the
        backmapper's beads, in the mapping's order; any others (solvent) are left alone.
    backmapper
        A loaded :class:`~openmmbackmap.models.base.Backmapper` or the path of a model file.
    atomistic_system
        The atomistic System for the backmapper's topology; None builds the reference setup
        (amber99sbildn + OBC implicit solvent, :func:`openmmbackmap.data.reference_system`).
    bead_particles
        Indices of the CG particles that are the beads (default: the first ``n_beads``).
    switch_interval
        CG steps between scheduled switches (None: only on demand or by ``switch_when``).
    atomistic_steps
        Atomistic MD steps after each scheduled switch.
    map_back
        After a scheduled switch (and its MD), continue CG dynamics from the atomistic
        structure mapped back to beads, velocities included; otherwise the CG trajectory goes on
        untouched and the atomistic structures are snapshots of it.
    samples
        Reconstructions drawn per attempt; the lowest-energy one is relaxed.
    max_attempts
        Attempts (each with new samples) before the stronger relaxation.
    energy_threshold
        Highest acceptable potential energy after relaxation, kJ/mol (None: no limit).
    on_failure
        ``"raise"``: :class:`SwitchError` (the checkpoint, if configured, is written first);
        ``"skip"``: record the failure and go on in CG without using the structure.
    relaxation
        Restraint and minimisation settings.
    temperature
        Temperature of atomistic MD and of its initial velocities, K.
    timestep_fs, friction
        Atomistic ``LangevinMiddleIntegrator`` settings.
    platform, platform_properties
        Atomistic platform by name ("Reference", "CPU", "CUDA", "OpenCL") and its properties.
    reference_positions
        An atomistic structure of the model's topology (nm) whose chiral centres are right;
        enables the chirality check. None: chirality is not checked.
    switch_when
        ``switch_when(simulation) -> bool``, asked every ``check_interval`` CG steps; True
        triggers a switch as the schedule would.
    check_interval
        CG steps between calls of ``switch_when``.
    seed
        Seed of every stochastic choice the driver makes (samples, velocities, atomistic noise).
    native_restraint
        None: native restraint force when built, else the fallback; True/False force one.

    Attributes
    ----------
    cg
        The CG ``app.Simulation``.
    atomistic
        The atomistic ``app.Simulation`` (one Context, reused).
    relaxation
        The :class:`~openmmbackmap.relax.RestrainedRelaxation` (minimisation and MD Contexts).
    reporters
        Switch reporters (see the module docstring).
    switches
        Every :class:`SwitchRecord` so far.
    resolution
        ``"cg"`` or ``"atomistic"``.
    """

    def __init__(
        self,
        cg_simulation: app.Simulation,
        backmapper: Backmapper | str | os.PathLike,
        atomistic_system: openmm.System | None = None,
        *,
        bead_particles: Sequence[int] | None = None,
        switch_interval: int | None = None,
        atomistic_steps: int = 0,
        map_back: bool = False,
        samples: int = 1,
        max_attempts: int = 3,
        energy_threshold: float | None = None,
        on_failure: str = "raise",
        relaxation: RelaxationSettings = RelaxationSettings(),
        temperature: float = 300.0,
        timestep_fs: float = 2.0,
        friction: float = 1.0,
        platform: str = "CPU",
        platform_properties: MappingType[str, str] | None = None,
        reference_positions: np.ndarray | None = None,
        switch_when: Callable[["MultiscaleSimulation"], bool] | None = None,
        check_interval: int = 1000,
        seed: int = 0,
        native_restraint: bool | None = None,
    ):
        if not isinstance(backmapper, Backmapper):
            backmapper = load_backmapper(backmapper)
        self.backmapper = backmapper
        self.mapping = backmapper.mapping
        n_beads = self.mapping.n_beads
        n_cg = cg_simulation.system.getNumParticles()
        beads = np.arange(n_beads) if bead_particles is None else np.asarray(bead_particles, dtype=int)
        if beads.shape != (n_beads,) or beads.min(initial=0) < 0 or beads.max(initial=0) >= n_cg:
            raise InputError(
                f"the CG System has {n_cg} particles and the model {backmapper.path.name} takes {n_beads} beads; "
                f"bead_particles must be {n_beads} indices below {n_cg}"
            )
        for name, value in (("samples", samples), ("max_attempts", max_attempts), ("check_interval", check_interval)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1; got {value}")
        if switch_interval is not None and switch_interval < 1:
            raise ValueError(f"switch_interval must be >= 1 or None; got {switch_interval}")
        if atomistic_steps < 0:
            raise ValueError(f"atomistic_steps must be >= 0; got {atomistic_steps}")
        if on_failure not in ("raise", "skip"):
            raise ValueError(f"on_failure must be 'raise' or 'skip'; got {on_failure!r}")
        self.cg = cg_simulation
        self.bead_particles = beads
        self.switch_interval = switch_interval
        self.atomistic_steps = int(atomistic_steps)
        self.map_back = bool(map_back)
        self.samples = int(samples)
        self.max_attempts = int(max_attempts)
        self.energy_threshold = energy_threshold
        self.on_failure = on_failure
        self.temperature = float(temperature)
        self.switch_when = switch_when
        self.check_interval = int(check_interval)
        self.seed = int(seed)
        if atomistic_system is None:
            atomistic_system = reference_system(self.mapping.topology, REFERENCE_FORCEFIELD)
        self.features = TopologyFeatures.from_topology(self.mapping.topology)
        self.relaxation = RestrainedRelaxation(
            atomistic_system, self.mapping.topology, self.mapping, relaxation,
            platform=platform, platform_properties=platform_properties, temperature=temperature,
            friction=friction, timestep_fs=timestep_fs, integrator_seed=_seed(self.seed, 0x5EED),
            native=native_restraint, chiral_centres=self.features.chiral_centres,
            omegas=self.features.omegas,
        )
        self.reference_positions = None
        if reference_positions is not None:
            reference = np.asarray(
                reference_positions.value_in_unit(unit.nanometer)
                if unit.is_quantity(reference_positions) else reference_positions, dtype=float,
            )
            if reference.shape != (self.mapping.n_atoms, 3):
                raise InputError(
                    f"reference_positions must have shape {(self.mapping.n_atoms, 3)} (the model's atoms); "
                    f"got {reference.shape}"
                )
            self.reference_positions = reference
        # TorchScript's profiling executor optimises a module over its first calls, which made the
        # first switch of a run several times slower than the rest: pay that here, once.
        warm_up = np.repeat(self.cg_bead_positions()[None], self.samples, axis=0)
        for _ in range(2):
            self.backmapper(warm_up, seed=0)
        self.reporters: list = []
        self.switches: list[SwitchRecord] = []
        self.resolution = "cg"
        self._atomistic_initialised = False
        self._stop_requested = False
        self._checkpoint_path: Path | None = None
        self._checkpoint_interval: int | None = None

    # ------------------------------------------------------------------ properties

    @property
    def atomistic(self) -> app.Simulation:
        """The atomistic ``app.Simulation``."""
        return self.relaxation.simulation

    @property
    def topology(self) -> app.Topology:
        """The atomistic topology (the backmapper's)."""
        return self.mapping.topology

    @property
    def currentStep(self) -> int:  # noqa: N802  (OpenMM's spelling)
        """CG steps done."""
        return int(self.cg.currentStep)

    @property
    def switchCount(self) -> int:  # noqa: N802
        return len(self.switches)

    @property
    def lastSwitch(self) -> SwitchRecord | None:  # noqa: N802
        return self.switches[-1] if self.switches else None

    # ------------------------------------------------------------------ state access

    def _cg_state(self, velocities: bool = False) -> openmm.State:
        return self.cg.context.getState(getPositions=True, getVelocities=velocities)

    def cg_bead_positions(self) -> np.ndarray:
        """Bead coordinates from the CG Context, nm, (beads, 3)."""
        positions = self._cg_state().getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        return np.asarray(positions)[self.bead_particles]

    def atomistic_positions(self) -> np.ndarray:
        """Coordinates in the atomistic Context, nm, (atoms, 3)."""
        return self.relaxation.positions()

    # ------------------------------------------------------------------ switching

    def _checks(self, positions: np.ndarray, energy: float) -> tuple[dict, list[str]]:
        """Quality numbers of a relaxed structure and the reasons it fails, if any."""
        problems: list[str] = []
        if not np.isfinite(positions).all():
            return {"clashscore": float("nan"), "chirality_errors": None, "cis_peptides": 0}, ["non-finite coordinates"]
        if not np.isfinite(energy):
            problems.append("non-finite energy")
        elif self.energy_threshold is not None and energy > self.energy_threshold:
            problems.append(f"energy {energy:.1f} kJ/mol above the threshold {self.energy_threshold:.1f}")
        numbers = {"clashscore": clashscore(positions, self.features), "chirality_errors": None}
        if self.reference_positions is not None:
            chirality = chirality_errors(positions, self.reference_positions, self.features)
            numbers["chirality_errors"] = chirality["total"]
            if chirality["total"]:
                problems.append(f"wrong chirality at {', '.join(chirality['by_centre'])}")
        cis = cis_peptides(positions, self.features)
        numbers["cis_peptides"] = cis["total"]
        if cis["total"]:
            problems.append(f"{cis['total']} non-proline cis peptide bond(s)")
        return numbers, problems

    def _best_sample(self, cg: np.ndarray, seed: int, record: SwitchRecord) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        candidates = self.backmapper(np.repeat(cg[None], self.samples, axis=0), seed=seed).astype(np.float64)
        record.inference_s += time.perf_counter() - start
        start = time.perf_counter()
        energies = np.array([self.relaxation.energy(x) if np.isfinite(x).all() else np.inf for x in candidates])
        energies[~np.isfinite(energies)] = np.inf
        best = int(np.argmin(energies))
        record.injection_s += time.perf_counter() - start
        return candidates[best], float(energies[best])

    def _relax(self, positions: np.ndarray, energy: float, cg: np.ndarray, record: SwitchRecord, strong: bool):
        result = self.relaxation.relax(positions, cg, strong=strong, energy_before=energy)
        record.relaxation_s += result.seconds
        numbers, problems = self._checks(result.positions, result.energy_after)
        return result, numbers, problems

    def _switch(self) -> SwitchRecord:
        """Backmap the current CG frame into the atomistic Context (steps 1-4 of the module docstring)."""
        start = time.perf_counter()
        index = len(self.switches) + 1
        record = SwitchRecord(
            index=index, step=self.currentStep, time_ps=self._cg_time_ps(), samples=self.samples,
        )
        cg = self.cg_bead_positions()
        io.check_finite(cg[None], self.mapping.cg_topology, f"CG frame at step {record.step}")
        best = None  # (problems, energy, raw, raw energy) of the best failed attempt
        for attempt in range(1, self.max_attempts + 1):
            record.attempts = attempt
            raw, raw_energy = self._best_sample(cg, _seed(self.seed, index, attempt), record)
            result, numbers, problems = self._relax(raw, raw_energy, cg, record, strong=False)
            if not problems:
                break
            if best is None or (len(problems), result.energy_after) < (len(best[0]), best[1]):
                best = (problems, result.energy_after, raw, raw_energy)
        else:
            record.strong_relaxation = True
            problems, _, raw, raw_energy = best
            result, numbers, problems = self._relax(raw, raw_energy, cg, record, strong=True)
        record.energy_backmapped = raw_energy
        record.energy_relaxed = result.energy_after
        record.restraint_energy = result.restraint_energy
        record.bead_rmsd_nm = result.bead_rmsd
        record.clashscore = numbers["clashscore"]
        record.chirality_errors = numbers["chirality_errors"]
        record.cis_peptides = numbers["cis_peptides"]
        record.accepted = not problems
        record.problems = "; ".join(problems)
        self._atomistic_initialised = True
        record.total_s = time.perf_counter() - start
        return record

    def _cg_time_ps(self) -> float:
        return float(self.cg.context.getTime().value_in_unit(unit.picosecond))

    def switch_to_atomistic(self) -> SwitchRecord:
        """Switch now: backmap, relax and check the current CG frame; the atomistic Context then holds it.

        Returns the switch's record (also reported and appended to :attr:`switches`).

        Raises
        ------
        SwitchError
            If no acceptable structure was found and ``on_failure`` is ``"raise"``.
        """
        if self.resolution != "cg":
            raise BackmapError("switch_to_atomistic: the simulation is already at atomistic resolution")
        wanted = self._wanted_reports()
        record = self._switch()
        self._commit(record, wanted, self._relaxed_state(wanted))
        if record.accepted:
            self.resolution = "atomistic"
        return record

    def switch_to_cg(self, map_back: bool = True) -> None:
        """Return to CG resolution; with ``map_back`` the beads take the atomistic structure's mapped
        positions and velocities (centre-of-mass velocities for mass-weighted beads)."""
        if self.resolution != "atomistic":
            raise BackmapError("switch_to_cg: the simulation is already at CG resolution")
        if map_back:
            start = time.perf_counter()
            self._map_back()
            if self.switches:
                self.switches[-1].map_back_s = time.perf_counter() - start
                self.switches[-1].mapped_back = True
        self.resolution = "cg"

    def _map_back(self) -> None:
        state = self.atomistic.context.getState(getPositions=True, getVelocities=True)
        positions = self.mapping.map(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        velocities = self.mapping.map(state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
        cg_state = self._cg_state(velocities=True)
        all_positions = np.array(cg_state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        all_velocities = np.array(cg_state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
        all_positions[self.bead_particles] = positions
        all_velocities[self.bead_particles] = velocities
        self.cg.context.setPositions(all_positions)
        self.cg.context.setVelocities(all_velocities)

    def _scheduled_switch(self) -> None:
        """A whole switching event: to atomistic, optional MD, optional map back, CG again; reported once."""
        wanted = self._wanted_reports()
        record = self._switch()
        state = self._relaxed_state(wanted)
        if record.accepted:  # else (on_failure == "skip") the CG run goes on untouched
            if self.atomistic_steps:
                start = time.perf_counter()
                self.relaxation.run_md(self.atomistic_steps, _seed(self.seed, record.index, 0xA7), self.temperature)
                record.md_s = time.perf_counter() - start
                record.energy_after_md = self.relaxation.energy()
            if self.map_back:
                start = time.perf_counter()
                self._map_back()
                record.map_back_s = time.perf_counter() - start
                record.mapped_back = True
            record.total_s += record.md_s + record.map_back_s
        self._commit(record, wanted, state)

    def _commit(self, record: SwitchRecord, wanted: list, state: openmm.State | None) -> None:
        """Append the record, report it, then act on a failure."""
        self.switches.append(record)
        for reporter, _ in wanted:
            reporter.report(self, state)
        if not record.accepted:
            message = (
                f"switch {record.index} at CG step {record.step}: no acceptable atomistic structure after "
                f"{record.attempts} attempt(s) of {record.samples} sample(s) and a strong relaxation: {record.problems}"
            )
            if self.on_failure == "raise":
                raise SwitchError(message)
            print(f"warning: {message}; continuing in CG", file=sys.stderr)

    # ------------------------------------------------------------------ reporters

    def _wanted_reports(self) -> list[tuple[object, set[str]]]:
        """Reporters whose next report is the coming switch (``steps == 1``), with what they need, OpenMM style."""
        wanted = []
        for reporter in self.reporters:
            description = reporter.describeNextReport(self)
            if isinstance(description, dict):
                steps, include = description["steps"], set(description.get("include", []))
            else:  # OpenMM's older tuple form: (steps, positions, velocities, forces, energy, ...)
                steps = description[0]
                include = {name for name, flag in zip(("positions", "velocities", "forces", "energy"), description[1:5]) if flag}
            if steps == 1:
                wanted.append((reporter, include))
        return wanted

    def _relaxed_state(self, wanted: list) -> openmm.State | None:
        """The atomistic Context's state right after relaxation, with what the reporters asked for."""
        if not wanted:
            return None
        include = set().union(*(names for _, names in wanted))
        return self.atomistic.context.getState(
            getPositions="positions" in include, getVelocities="velocities" in include,
            getForces="forces" in include, getEnergy="energy" in include,
        )

    # ------------------------------------------------------------------ running

    def requestStop(self) -> None:  # noqa: N802
        """Ask :meth:`run` to stop at the next safe point (between chunks of steps), checkpoint and raise
        :class:`RunInterrupted`. Safe to call from a signal handler."""
        self._stop_requested = True

    def setCheckpoint(self, path: str | os.PathLike | None, interval: int | None = None) -> None:  # noqa: N802
        """Write a checkpoint to ``path`` every ``interval`` CG steps, at the end of each :meth:`run`, before a
        :class:`SwitchError` propagates and when a stop is requested."""
        if interval is not None and interval < 1:
            raise ValueError(f"checkpoint interval must be >= 1; got {interval}")
        self._checkpoint_path = None if path is None else Path(path)
        self._checkpoint_interval = interval

    def _next_event(self, step: int, end: int) -> int:
        events = [end]
        for interval in (self.switch_interval, self._checkpoint_interval,
                         self.check_interval if self.switch_when is not None else None):
            if interval:
                events.append((step // interval + 1) * interval)
        return min(events)

    def run(self, steps: int, progress: bool = False) -> None:
        """Advance ``steps`` steps at the current resolution.

        At CG resolution, scheduled switches happen every ``switch_interval`` CG steps (counted
        from step 0, so a resumed run keeps the schedule) and ``switch_when`` is asked every
        ``check_interval`` steps. At atomistic resolution (after :meth:`switch_to_atomistic`),
        atomistic MD runs.

        Parameters
        ----------
        steps
            Number of steps.
        progress
            Show a progress bar (tqdm) on stderr.
        """
        if steps < 0:
            raise ValueError(f"steps must be >= 0; got {steps}")
        if self.resolution == "atomistic":
            self.atomistic.step(int(steps))
            return
        end = self.currentStep + int(steps)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=int(steps), unit="step", desc="multiscale", file=sys.stderr, dynamic_ncols=True)
        try:
            while self.currentStep < end:
                if self._stop_requested:
                    self._stop_requested = False
                    self._save_if_configured()
                    raise RunInterrupted(f"stopped at CG step {self.currentStep} on request; checkpoint written")
                step = self.currentStep
                chunk = self._next_event(step, end) - step
                self.cg.step(chunk)
                if bar is not None:
                    bar.update(chunk)
                step = self.currentStep
                due = self.switch_interval is not None and step % self.switch_interval == 0
                if not due and self.switch_when is not None and step % self.check_interval == 0:
                    due = bool(self.switch_when(self))
                if due:
                    try:
                        self._scheduled_switch()
                    except SwitchError:
                        self._save_if_configured()
                        raise
                    if bar is not None:
                        bar.set_postfix(switches=len(self.switches), refresh=False)
                if self._checkpoint_interval and step % self._checkpoint_interval == 0:
                    self._save_if_configured()
            self._save_if_configured()
        finally:
            if bar is not None:
                bar.close()

    def _save_if_configured(self) -> None:
        if self._checkpoint_path is not None:
            self.saveCheckpoint(self._checkpoint_path)

    # ------------------------------------------------------------------ checkpoints

    def saveCheckpoint(self, path: str | os.PathLike) -> Path:  # noqa: N802
        """Write the whole run's state to one file, atomically (a zip of both Contexts' OpenMM
        checkpoints and a JSON description)."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "cg_step": self.currentStep,
            "atomistic_step": int(self.atomistic.currentStep),
            "resolution": self.resolution,
            "seed": self.seed,
            "model_fingerprint": self.mapping.fingerprint,
            "switches": [record.to_dict() for record in self.switches],
            "reporters": [
                reporter.checkpointState() if hasattr(reporter, "checkpointState") else None
                for reporter in self.reporters
            ],
        }
        path = Path(path)
        with io.atomic_output(path) as temporary:
            with zipfile.ZipFile(temporary, "w") as archive:
                archive.writestr("state.json", json.dumps(state, indent=1))
                archive.writestr("cg.chk", self.cg.context.createCheckpoint())
                if self._atomistic_initialised:
                    archive.writestr("atomistic.chk", self.atomistic.context.createCheckpoint())
        return path

    def loadCheckpoint(self, path: str | os.PathLike) -> None:  # noqa: N802
        """Restore a state written by :meth:`saveCheckpoint` into this (identically built) simulation.

        Reporters are rewound to the frames they had written at the checkpoint.

        Raises
        ------
        InputError
            If the file is not a checkpoint of this kind, or was written for another model.
        """
        path = Path(path)
        try:
            with zipfile.ZipFile(path) as archive:
                state = json.loads(archive.read("state.json"))
                cg_checkpoint = archive.read("cg.chk")
                atomistic_checkpoint = archive.read("atomistic.chk") if "atomistic.chk" in archive.namelist() else None
        except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: not a readable multiscale checkpoint: {exc}") from exc
        if state.get("format") != CHECKPOINT_FORMAT or state.get("version") != CHECKPOINT_VERSION:
            raise InputError(f"{path}: format {state.get('format')!r} version {state.get('version')} is not "
                             f"{CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}")
        if state["model_fingerprint"] != self.mapping.fingerprint:
            raise InputError(f"{path}: written for a model with mapping {state['model_fingerprint'][:12]}; "
                             f"this simulation's is {self.mapping.fingerprint[:12]}")
        if len(state["reporters"]) != len(self.reporters):
            raise InputError(f"{path}: written with {len(state['reporters'])} reporter(s); this simulation has "
                             f"{len(self.reporters)}")
        try:
            self.cg.context.loadCheckpoint(cg_checkpoint)
            if atomistic_checkpoint is not None:
                self.atomistic.context.loadCheckpoint(atomistic_checkpoint)
        except openmm.OpenMMException as exc:
            raise InputError(f"{path}: OpenMM cannot load it into these Contexts (another system or platform?): {exc}") from exc
        self._atomistic_initialised = atomistic_checkpoint is not None
        self.resolution = state["resolution"]
        self.switches = [SwitchRecord(**record) for record in state["switches"]]
        for reporter, reporter_state in zip(self.reporters, state["reporters"]):
            if reporter_state is not None and hasattr(reporter, "restoreCheckpointState"):
                reporter.restoreCheckpointState(self, reporter_state)


# ---------------------------------------------------------------------- reporters


class _SwitchReporter:
    """Shared part of the switch reporters: report every ``reportInterval`` switches."""

    def __init__(self, file: str | os.PathLike, reportInterval: int = 1):  # noqa: N803
        if reportInterval < 1:
            raise ValueError(f"reportInterval must be >= 1; got {reportInterval}")
        self.path = Path(file)
        self._interval = int(reportInterval)
        self._written = 0

    def _steps(self, simulation: MultiscaleSimulation) -> int:
        """Switches until the next report, asked before a switch (1: the coming one)."""
        return self._interval - simulation.switchCount % self._interval

    def checkpointState(self) -> dict:  # noqa: N802
        return {"path": str(self.path), "written": self._written}

    def close(self) -> None:
        """Close the file if the reporter keeps one open."""


class AtomisticTrajectoryReporter(_SwitchReporter):
    """Write the relaxed atomistic structure of every ``reportInterval``-th switch to a DCD, XTC or PDB file.

    The time of each frame is the CG time of its switch. A resumed run rewinds the file to the
    frames written before its checkpoint, so frames are never duplicated.
    """

    FORMATS = (".dcd", ".xtc", ".pdb")

    def __init__(self, file: str | os.PathLike, reportInterval: int = 1, append: bool = False):  # noqa: N803
        super().__init__(file, reportInterval)
        if self.path.suffix.lower() not in self.FORMATS:
            raise InputError(f"{self.path}: atomistic trajectories are written as {', '.join(self.FORMATS)}")
        self._append = append
        self._writer = None
        self._handle = None

    def describeNextReport(self, simulation: MultiscaleSimulation) -> dict:  # noqa: N802
        return {"steps": self._steps(simulation), "periodic": False, "include": ["positions"]}

    def _open(self, simulation: MultiscaleSimulation) -> None:
        append = self._append and self.path.exists() and self.path.stat().st_size > 0
        suffix = self.path.suffix.lower()
        if not append:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".xtc":
            if not append and self.path.exists():
                self.path.unlink()  # XTCFile refuses to overwrite
            self._writer = app.XTCFile(str(self.path), simulation.topology, 1.0, append=append)
        elif suffix == ".dcd":
            self._handle = open(self.path, "r+b" if append else "wb")
            self._writer = app.DCDFile(self._handle, simulation.topology, 1.0, append=append)
        else:
            self._handle = open(self.path, "a" if append else "w")
            self._writer = self._handle

    def report(self, simulation: MultiscaleSimulation, state: openmm.State) -> None:
        if self._writer is None:
            self._open(simulation)
        positions = state.getPositions(asNumpy=True)
        if self.path.suffix.lower() == ".pdb":
            app.PDBFile.writeModel(simulation.topology, positions, self._handle, modelIndex=self._written + 1)
            self._handle.flush()
        else:
            self._writer.writeModel(positions)
            if self._handle is not None:
                self._handle.flush()
        self._written += 1

    def restoreCheckpointState(self, simulation: MultiscaleSimulation, state: dict) -> None:  # noqa: N802
        """Keep the first ``state["written"]`` frames of the file and append from there."""
        self.close()
        self._written = int(state["written"])
        if self._written == 0:
            if self.path.exists():
                self.path.unlink()
            self._append = False
            return
        if not self.path.exists():
            raise InputError(f"{self.path}: the checkpoint says it holds {self._written} frame(s), but it is missing")
        kept = io.load_trajectory(self.path, simulation.topology)
        if kept.n_frames < self._written:
            raise InputError(f"{self.path}: holds {kept.n_frames} frame(s); the checkpoint needs {self._written}")
        io.write_trajectory(self.path, kept.xyz[: self._written], simulation.topology)
        self._append = True

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle = None
        self._writer = None


class SwitchLogReporter(_SwitchReporter):
    """One row per switch (every :class:`SwitchRecord` field): CSV (``.csv``, appended and flushed
    at each switch) or JSON (``.json``, the whole list rewritten atomically at each switch)."""

    def __init__(self, file: str | os.PathLike, reportInterval: int = 1):  # noqa: N803
        super().__init__(file, reportInterval)
        if self.path.suffix.lower() not in (".csv", ".json"):
            raise InputError(f"{self.path}: the switch log is written as .csv or .json")
        self._rows: list[dict] = []

    def describeNextReport(self, simulation: MultiscaleSimulation) -> dict:  # noqa: N802
        return {"steps": self._steps(simulation), "periodic": False, "include": []}

    def report(self, simulation: MultiscaleSimulation, state: openmm.State) -> None:
        row = simulation.lastSwitch.to_dict()
        self._rows.append(row)
        if self.path.suffix.lower() == ".json":
            io.write_json(self.path, self._rows)
        else:
            new = self._written == 0
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w" if new else "a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=SwitchRecord.columns())
                if new:
                    writer.writeheader()
                writer.writerow(row)
        self._written += 1

    def restoreCheckpointState(self, simulation: MultiscaleSimulation, state: dict) -> None:  # noqa: N802
        """Rewrite the log with the rows of the switches reported before the checkpoint."""
        self._written = int(state["written"])
        reported = [record.to_dict() for record in simulation.switches if record.index % self._interval == 0]
        self._rows = reported[: self._written]
        if self.path.suffix.lower() == ".json":
            io.write_json(self.path, self._rows)
            return
        buffer = text_io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SwitchRecord.columns())
        writer.writeheader()
        writer.writerows(self._rows)
        with io.atomic_output(self.path) as temporary:
            temporary.write_text(buffer.getvalue())
