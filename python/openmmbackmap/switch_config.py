"""``backmap switch config.yaml``: a multiscale run described by one YAML file.

The file names the backmapper, the CG system and its starting structure, the atomistic force
field, the switching schedule, the relaxation and the outputs; relative paths are relative to
the file. A run writes its checkpoint every ``checkpoint_interval`` CG steps (and when stopped by
SIGINT/SIGTERM); running the same command again resumes from it and finishes the run, so a
killed run loses at most one interval. ``--restart`` ignores an existing checkpoint.

Example config (every key but ``model``, ``cg.structure``, ``cg.system`` and ``switching.steps``
has a default)::

    model: ala2_backbone_ic.pt        # a backmapper file
    seed: 1
    cg:
      structure: ala2.pdb             # atomistic (mapped with the model's mapping) or CG (one particle per bead)
      system:
        cgforce: ala2_backbone_cgff.pt       # or elastic_network: {cutoff: 1.0, k: 1000}, or xml: cg_system.xml,
                                             # or gromacs: {top: topol.top, mdp: martini.mdp} with a .gro structure
      bead_particles: [0, 32]         # first and one-past-last CG particle that are the beads (default: the first n_beads)
      minimize: false                 # minimise the CG structure first (e.g. freshly solvated Martini systems)
      temperature: 300                # K
      friction: 1.0                   # 1/ps
      timestep_fs: 2
      platform: CPU
      platform_properties: {Threads: "1"}
    atomistic:
      forcefield: [amber99sbildn.xml, amber99_obc.xml]   # or system: atomistic_system.xml
      reference: ala2.pdb             # a structure with correct chirality: enables the chirality check
      platform: CPU
      timestep_fs: 2
    switching:
      steps: 20000                    # CG steps in all
      switch_interval: 2000
      atomistic_steps: 200
      map_back: true
      samples: 4
      max_attempts: 3
      energy_threshold: 0.0           # kJ/mol after relaxation (null: none)
      on_failure: raise               # or skip
    relaxation: {restraint_k: 5000, tolerance: 10, max_iterations: 100}
    output:
      directory: multiscale-out
      trajectory: atomistic.xtc       # relaxed structure of every switch (.dcd/.xtc/.pdb)
      log: switches.csv               # one row per switch (.csv/.json)
      plot: switches.png
      summary: summary.json
      checkpoint: multiscale.chk
      checkpoint_interval: 10000
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Mapping as MappingType
from pathlib import Path
from typing import Any

import numpy as np
import openmm
import openmm.app as app
import yaml

from openmmbackmap import io, plugins
from openmmbackmap.errors import InputError
from openmmbackmap.models.base import Backmapper, load_backmapper
from openmmbackmap.relax import RelaxationSettings
from openmmbackmap.switching import (
    AtomisticTrajectoryReporter,
    MultiscaleSimulation,
    RunInterrupted,
    SwitchLogReporter,
)

__all__ = ["build_simulation", "configure_parser", "demo_config", "load_config", "plot_switches", "run", "run_config", "summarise"]

SECTIONS = {
    "model": None,
    "seed": None,
    "cg": {"structure", "system", "bead_particles", "minimize", "temperature", "friction", "timestep_fs", "platform",
           "platform_properties"},
    "atomistic": {"forcefield", "system", "reference", "platform", "platform_properties", "timestep_fs", "friction"},
    "switching": {"steps", "switch_interval", "atomistic_steps", "map_back", "samples", "max_attempts",
                  "energy_threshold", "on_failure"},
    "relaxation": None,  # checked by RelaxationSettings.from_dict
    "output": {"directory", "trajectory", "log", "plot", "summary", "checkpoint", "checkpoint_interval"},
}
CG_SYSTEMS = ("cgforce", "elastic_network", "xml", "gromacs")


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a config file; unknown or missing keys are errors naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file {str(path)!r} does not exist")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise InputError(f"{path}: the config must be a mapping of sections")
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise InputError(f"{path}: unknown section(s) {unknown}; known: {sorted(SECTIONS)}")
    for section, keys in SECTIONS.items():
        if keys is None or section not in config:
            continue
        if not isinstance(config[section], dict):
            raise InputError(f"{path}: section {section!r} must be a mapping")
        extra = sorted(set(config[section]) - keys)
        if extra:
            raise InputError(f"{path}: unknown key(s) {extra} in section {section!r}; known: {sorted(keys)}")
    for required in ("model", "cg", "switching"):
        if required not in config:
            raise InputError(f"{path}: the {required!r} section is required")
    for section, key in (("cg", "structure"), ("cg", "system"), ("switching", "steps")):
        if key not in config[section]:
            raise InputError(f"{path}: {section}.{key} is required")
    system = config["cg"]["system"]
    if not isinstance(system, dict) or len(system) != 1 or next(iter(system)) not in CG_SYSTEMS:
        raise InputError(f"{path}: cg.system must have exactly one of {list(CG_SYSTEMS)}; got {system!r}")
    config["_base"] = path.resolve().parent
    config["_source"] = str(path)
    return config


def _path(config: MappingType, value: str | os.PathLike) -> Path:
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else config["_base"] / path


def _cg_structure(config: MappingType, backmapper: Backmapper) -> tuple[np.ndarray, np.ndarray | None]:
    """CG starting positions and box: a .gro of the whole CG system for GROMACS systems; otherwise a
    CG structure (one particle per bead) as is, or an atomistic one mapped with the model's mapping."""
    path = _path(config, config["cg"]["structure"])
    if "gromacs" in config["cg"]["system"]:
        from openmmbackmap import gromacs

        if path.suffix.lower() != ".gro":
            raise InputError(f"{path}: a GROMACS CG system starts from a .gro file (positions and box)")
        return gromacs.read_gro(path)
    _, positions = io.load_topology(path)
    if positions is None:
        raise InputError(f"{path}: cg.structure needs coordinates (.pdb, .gro, .cif)")
    if len(positions) == backmapper.n_atoms:
        return backmapper.mapping.map(positions), None
    if len(positions) == backmapper.n_beads:
        return positions, None
    raise InputError(
        f"{path}: cg.structure has {len(positions)} particles; the model {backmapper.path.name} has "
        f"{backmapper.n_atoms} atoms and {backmapper.n_beads} beads"
    )


def _gromacs_system(config: MappingType, options, box: np.ndarray) -> tuple[openmm.System, app.Topology]:
    from openmmbackmap import gromacs

    if not isinstance(options, dict) or "top" not in options or set(options) - {"top", "mdp"}:
        raise InputError(f"{config['_source']}: cg.system.gromacs needs 'top' and may have 'mdp'; got {options!r}")
    mdp = gromacs.read_mdp(_path(config, options["mdp"])) if "mdp" in options else None
    top = gromacs.read_top(_path(config, options["top"]), defines=None if mdp is None else mdp.defines)
    return top.create_system(box, mdp=mdp), top.topology(box)


def _read_xml_system(path: Path) -> openmm.System:
    try:
        system = openmm.XmlSerializer.deserialize(path.read_text())
    except Exception as exc:  # OSError, or the bare Exception OpenMM raises for bad XML
        raise InputError(f"{path}: not a serialised OpenMM System: {exc}") from exc
    if not isinstance(system, openmm.System):
        raise InputError(f"{path}: holds a {type(system).__name__}, not a System")
    return system


def _cg_system(config: MappingType, backmapper: Backmapper, start: np.ndarray, box) -> tuple[openmm.System, app.Topology]:
    kind, options = next(iter(config["cg"]["system"].items()))
    if kind == "gromacs":
        return _gromacs_system(config, options, box)
    if kind == "cgforce":
        from openmmbackmap.cgforce import create_cg_system

        system = create_cg_system(backmapper.mapping, _path(config, options))
    elif kind == "elastic_network":
        from openmmbackmap.cgsystems import elastic_network_system

        try:
            system = elastic_network_system(backmapper.mapping, start, **dict(options or {}))
        except TypeError as exc:
            raise InputError(f"{config['_source']}: cg.system.elastic_network: {exc}") from exc
    else:
        system = _read_xml_system(_path(config, options))
    return system, backmapper.mapping.cg_topology


def _bead_particles(config: MappingType, backmapper: Backmapper, n_particles: int) -> range:
    value = config["cg"].get("bead_particles")
    first, stop = (0, backmapper.n_beads) if value is None else (int(value[0]), int(value[1]))
    if stop - first != backmapper.n_beads or first < 0 or stop > n_particles:
        raise InputError(
            f"{config['_source']}: cg.bead_particles {[first, stop]} must span the model's {backmapper.n_beads} beads "
            f"within the CG system's {n_particles} particles"
        )
    return range(first, stop)


def build_simulation(config: MappingType, prepare_cg: bool = True) -> MultiscaleSimulation:
    """The :class:`MultiscaleSimulation` a checked config describes, reporters attached, checkpoint not loaded.

    ``prepare_cg=False`` skips the CG minimisation (``cg.minimize``) and initial velocities, for a
    simulation whose state a checkpoint is about to replace.
    """
    seed = int(config.get("seed", 0))
    backmapper = load_backmapper(_path(config, config["model"]))
    cg_options, atomistic_options = config["cg"], config.get("atomistic", {})
    start, box = _cg_structure(config, backmapper)
    cg_system, cg_topology = _cg_system(config, backmapper, start, box)
    beads = _bead_particles(config, backmapper, cg_system.getNumParticles())
    temperature = float(cg_options.get("temperature", 300.0))
    integrator = openmm.LangevinMiddleIntegrator(
        temperature, float(cg_options.get("friction", 1.0)), float(cg_options.get("timestep_fs", 2.0)) * 1e-3
    )
    integrator.setRandomNumberSeed(seed)
    if len(start) != cg_system.getNumParticles():
        raise InputError(f"{config['_source']}: cg.structure has {len(start)} particles; the CG system "
                         f"{cg_system.getNumParticles()}")
    cg = app.Simulation(
        cg_topology, cg_system, integrator, plugins.platform(cg_options.get("platform", "CPU")),
        {str(k): str(v) for k, v in (cg_options.get("platform_properties") or {}).items()},
    )
    cg.context.setPositions(start)
    if prepare_cg and cg_options.get("minimize", False):
        cg.minimizeEnergy()
    if prepare_cg:
        cg.context.setVelocitiesToTemperature(temperature, seed)

    atomistic_system = None
    if "system" in atomistic_options:
        atomistic_system = _read_xml_system(_path(config, atomistic_options["system"]))
    elif "forcefield" in atomistic_options:
        from openmmbackmap.data import reference_system

        atomistic_system = reference_system(backmapper.topology, list(atomistic_options["forcefield"]))
    reference = None
    if "reference" in atomistic_options:
        reference_path = _path(config, atomistic_options["reference"])
        _, reference = io.load_topology(reference_path)
        if reference is None or len(reference) != backmapper.n_atoms:
            raise InputError(f"{reference_path}: atomistic.reference must hold the model's {backmapper.n_atoms} atoms")
    switching = config["switching"]
    simulation = MultiscaleSimulation(
        cg, backmapper, atomistic_system,
        bead_particles=beads,
        switch_interval=switching.get("switch_interval"),
        atomistic_steps=int(switching.get("atomistic_steps", 0)),
        map_back=bool(switching.get("map_back", False)),
        samples=int(switching.get("samples", 1)),
        max_attempts=int(switching.get("max_attempts", 3)),
        energy_threshold=switching.get("energy_threshold"),
        on_failure=switching.get("on_failure", "raise"),
        relaxation=RelaxationSettings.from_dict(config.get("relaxation"), f"{config['_source']}: relaxation"),
        temperature=temperature,
        timestep_fs=float(atomistic_options.get("timestep_fs", 2.0)),
        friction=float(atomistic_options.get("friction", 1.0)),
        platform=atomistic_options.get("platform", "CPU"),
        platform_properties={str(k): str(v) for k, v in (atomistic_options.get("platform_properties") or {}).items()},
        reference_positions=reference,
        seed=seed,
    )
    output = config.get("output", {})
    directory = _path(config, output.get("directory", "multiscale-out"))
    if output.get("trajectory", "atomistic.xtc"):
        simulation.reporters.append(AtomisticTrajectoryReporter(directory / output.get("trajectory", "atomistic.xtc")))
    if output.get("log", "switches.csv"):
        simulation.reporters.append(SwitchLogReporter(directory / output.get("log", "switches.csv")))
    checkpoint = output.get("checkpoint", "multiscale.chk")
    if checkpoint:
        simulation.setCheckpoint(directory / checkpoint, output.get("checkpoint_interval", 10000))
    return simulation


def summarise(simulation: MultiscaleSimulation) -> dict[str, Any]:
    """Median timings and energies over the run's switches."""
    records = simulation.switches

    def median(name: str) -> float | None:
        values = [getattr(r, name) for r in records if np.isfinite(getattr(r, name))]
        return float(np.median(values)) if values else None

    return {
        "cg_steps": simulation.currentStep,
        "switches": len(records),
        "accepted": sum(r.accepted for r in records),
        "strong_relaxations": sum(r.strong_relaxation for r in records),
        "chirality_errors": None if not records or records[0].chirality_errors is None
        else int(sum(r.chirality_errors or 0 for r in records)),
        "median_seconds": {name: median(name) for name in
                           ("inference_s", "injection_s", "relaxation_s", "md_s", "map_back_s", "total_s")},
        "median_energy_kj_mol": {name: median(name) for name in ("energy_backmapped", "energy_relaxed", "energy_after_md")},
        "median_bead_rmsd_nm": median("bead_rmsd_nm"),
    }


def plot_switches(simulation: MultiscaleSimulation, path: str | os.PathLike) -> Path:
    """A two-panel PNG: energies per switch (backmapped, relaxed, after MD) and each switch's time by stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = simulation.switches
    index = np.array([r.index for r in records])
    fig, (energies, timings) = plt.subplots(1, 2, figsize=(10, 3.8))
    largest = 0.0
    for name, label in (("energy_backmapped", "backmapped (best sample)"), ("energy_relaxed", "relaxed"),
                        ("energy_after_md", "after atomistic MD")):
        values = np.array([getattr(r, name) for r in records], dtype=float)
        if np.isfinite(values).any():
            energies.plot(index, values, "o-", label=label, markersize=3)
            largest = max(largest, float(np.nanmax(np.abs(values[np.isfinite(values)]))))
    if largest > 1e4:  # raw backmapped energies of clashing structures span orders of magnitude
        energies.set_yscale("symlog", linthresh=1000.0)
    energies.set(xlabel="switch", ylabel="potential energy (kJ/mol)", title="energy at each switch")
    energies.legend(fontsize=8)
    bottom = np.zeros(len(records))
    for name in ("inference_s", "injection_s", "relaxation_s", "md_s", "map_back_s"):
        values = np.array([getattr(r, name) for r in records]) * 1e3
        timings.bar(index, values, bottom=bottom, label=name[:-2])
        bottom += values
    timings.set(xlabel="switch", ylabel="wall time (ms)", title="time per switch")
    timings.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with io.atomic_output(path) as temporary:
        fig.savefig(temporary, dpi=110)
    plt.close(fig)
    return path


def run_config(config: MappingType, restart: bool = False, progress: bool = True) -> tuple[MultiscaleSimulation, dict]:
    """Build, resume if a checkpoint exists (unless ``restart``), run to ``switching.steps`` and write the outputs."""
    output = config.get("output", {})
    directory = _path(config, output.get("directory", "multiscale-out"))
    checkpoint = output.get("checkpoint", "multiscale.chk")
    checkpoint_path = directory / checkpoint if checkpoint else None
    resumed = checkpoint_path is not None and checkpoint_path.exists() and not restart
    simulation = build_simulation(config, prepare_cg=not resumed)
    if resumed:
        simulation.loadCheckpoint(checkpoint_path)
        print(f"resumed from {checkpoint_path} at CG step {simulation.currentStep} "
              f"({simulation.switchCount} switches done)", file=sys.stderr)
    total = int(config["switching"]["steps"])
    start = time.perf_counter()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: simulation.requestStop())
    try:
        simulation.run(max(0, total - simulation.currentStep), progress=progress)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for reporter in simulation.reporters:
            if hasattr(reporter, "close"):
                reporter.close()
    summary = summarise(simulation)
    summary["wall_seconds_this_invocation"] = time.perf_counter() - start
    summary["resumed"] = resumed
    if output.get("summary", "summary.json"):
        io.write_json(directory / output.get("summary", "summary.json"), summary)
    if output.get("plot", "switches.png") and simulation.switches:
        plot_switches(simulation, directory / output.get("plot", "switches.png"))
    return simulation, summary


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("config", type=Path, help="YAML file describing the run (see the module docs)")
    parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start again")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    """``backmap switch``: run a config; 0 on success, 3 if stopped by a signal (resume by running again)."""
    config = load_config(args.config)
    try:
        simulation, summary = run_config(config, restart=args.restart, progress=not args.no_progress)
    except RunInterrupted as exc:
        print(f"backmap switch: {exc}; run the same command again to resume", file=sys.stderr)
        return 3
    seconds = summary["median_seconds"]
    print(f"{simulation.currentStep} CG steps, {summary['switches']} switches ({summary['accepted']} accepted); "
          f"median switch {1e3 * (seconds['total_s'] or 0):.1f} ms (inference {1e3 * (seconds['inference_s'] or 0):.1f}, "
          f"injection {1e3 * (seconds['injection_s'] or 0):.1f}, relaxation {1e3 * (seconds['relaxation_s'] or 0):.1f} ms)")
    directory = _path(config, config.get("output", {}).get("directory", "multiscale-out"))
    print(f"wrote {directory}")
    return 0


def demo_config(directory: str | os.PathLike, steps: int = 20000) -> Path:
    """Write the config of ``backmap demo`` (alanine dipeptide, shipped models) into ``directory``; return its path.

    CG: backbone beads with the shipped learned CG force field, 2 fs steps at 300 K. Every 2,000 CG
    steps (4 ps) a switch: 4 samples of the shipped ``ic`` backmapper, relaxation under mapping
    restraints in amber99sbildn + OBC, 200 steps (0.4 ps) of atomistic MD, map back.
    """
    from openmmbackmap.cgforce import bundled_model

    directory = Path(directory).resolve()
    config = {
        "model": str(io.bundled("models/ala2_backbone_ic.pt")),
        "seed": 1,
        "cg": {
            "structure": str(io.bundled("alanine_dipeptide/ala2.pdb")),
            "system": {"cgforce": str(bundled_model("ala2_backbone_cgff.pt"))},
            "temperature": 300.0, "friction": 1.0, "timestep_fs": 2.0,
            "platform": "CPU", "platform_properties": {"Threads": "1"},
        },
        "atomistic": {
            "forcefield": ["amber99sbildn.xml", "amber99_obc.xml"],
            "reference": str(io.bundled("alanine_dipeptide/ala2.pdb")),
            "platform": "CPU", "platform_properties": {"Threads": "1"},
        },
        "switching": {
            "steps": int(steps), "switch_interval": 2000, "atomistic_steps": 200, "map_back": True,
            "samples": 4, "max_attempts": 3, "energy_threshold": 0.0, "on_failure": "raise",
        },
        "relaxation": {"restraint_k": 5000.0, "tolerance": 10.0, "max_iterations": 100},
        "output": {
            "directory": ".", "trajectory": "atomistic.xtc", "log": "switches.csv", "plot": "switches.png",
            "summary": "summary.json", "checkpoint": "multiscale.chk", "checkpoint_interval": 10000,
        },
    }
    path = directory / "config.yaml"
    text = "# backmap demo: alanine dipeptide multiscale run (run it again with `backmap switch config.yaml`)\n"
    text += yaml.safe_dump(config, sort_keys=False)
    with io.atomic_output(path) as temporary:
        temporary.write_text(text)
    return path
