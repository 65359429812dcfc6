"""Reading mapping files: canonical JSON/YAML, residue templates, GROMACS index groups, Martini .map.

:meth:`openmmbackmap.mapping.Mapping.load` is the entry point; this module holds the
parsers so that mapping.py stays about the mapping itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import openmm.app as app

from openmmbackmap.errors import MappingError
from openmmbackmap.io import describe_residue
from openmmbackmap.mapping import Bead, Mapping, atom_weights


def load_mapping(path: str | os.PathLike, topology: app.Topology | None = None) -> Mapping:
    """Read any supported mapping file; see :meth:`Mapping.load`."""
    path = Path(path)
    if not path.is_file():
        raise MappingError(f"mapping file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".ndx":
        return _from_ndx(path, _need_topology(topology, path))
    if suffix == ".map":
        return _from_map_file(path, _need_topology(topology, path))
    if suffix not in (".json", ".yaml", ".yml"):
        raise MappingError(f"mapping file {str(path)!r}: use .json, .yaml/.yml, .ndx or .map")
    data = _read_structured(path)
    if not isinstance(data, dict):
        raise MappingError(f"mapping file {str(path)!r}: expected a mapping (key: value) at the top level")
    if "format" in data:
        return Mapping.from_dict(data, topology, source=str(path))
    if "residues" in data:
        return _from_template(data, _need_topology(topology, path), path)
    raise MappingError(
        f"mapping file {str(path)!r}: neither a saved mapping (no 'format' key) nor a template (no 'residues' key)"
    )


def _need_topology(topology: app.Topology | None, path: Path) -> app.Topology:
    if topology is None:
        raise MappingError(f"mapping file {str(path)!r} names atoms, not a topology: give the atomistic topology too")
    return topology


def _read_structured(path: Path):
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except (json.JSONDecodeError, Exception) as exc:  # yaml.YAMLError carries line and column
        raise MappingError(f"mapping file {str(path)!r} cannot be parsed: {exc}") from exc


def _from_template(data: dict, topology: app.Topology, path: Path) -> Mapping:
    """Beads defined per residue name (see :meth:`Mapping.load` for the format)."""
    weighting = data.get("weighting", "mass")
    templates = data["residues"]
    if not isinstance(templates, dict):
        raise MappingError(f"{path}: 'residues' must map residue names to beads")
    skip = set(data.get("skip", []))
    beads = []
    for residue in topology.residues():
        if residue.name in skip:
            continue
        if residue.name not in templates:
            raise MappingError(
                f"{path}: no entry for {describe_residue(residue)}; "
                f"add it under 'residues' or list {residue.name} under 'skip'"
            )
        atoms = {atom.name: atom.index for atom in residue.atoms()}
        for bead_name, specs in templates[residue.name].items():
            indices, weights = [], []
            for spec in specs:
                name, weight = _atom_spec(spec, path, residue.name, bead_name)
                if name not in atoms:
                    raise MappingError(
                        f"{path}: bead {bead_name} of {residue.name} names atom {name}, which "
                        f"{describe_residue(residue)} does not have; "
                        f"it has {', '.join(atoms)}"
                    )
                indices.append(atoms[name])
                weights.append(weight)
            named = atom_weights(topology, indices, weighting)
            final = [
                named[k] if w is None else w * (named[k] if weighting == "mass" else 1.0)
                for k, w in enumerate(weights)
            ]
            beads.append(Bead(str(bead_name), residue.index, tuple(indices), tuple(final)))
    return Mapping(topology, beads, scheme=path.name)


def _atom_spec(spec, path: Path, residue: str, bead: str) -> tuple[str, float | None]:
    """``"CA"`` -> (CA, None: the weighting decides); ``"!HA"`` -> (HA, 0); ``{name, weight}`` -> explicit."""
    if isinstance(spec, str):
        return (spec[1:], 0.0) if spec.startswith("!") else (spec, None)
    if isinstance(spec, dict) and "name" in spec:
        weight = float(spec.get("weight", 1.0))
        return str(spec["name"]), weight
    raise MappingError(f"{path}: bead {bead} of {residue}: cannot read atom entry {spec!r}")


def _from_ndx(path: Path, topology: app.Topology) -> Mapping:
    """One bead per GROMACS index group (1-based atom numbers), mass weighted."""
    groups: list[tuple[str, list[int], int]] = []
    n_atoms = topology.getNumAtoms()
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            groups.append((line.strip("[] "), [], line_number))
            continue
        if not groups:
            raise MappingError(f"{path}, line {line_number}: atom numbers before the first [ group ]")
        for field in line.split():
            try:
                number = int(field)
            except ValueError:
                raise MappingError(f"{path}, line {line_number}: {field!r} is not an atom number") from None
            if not 1 <= number <= n_atoms:
                raise MappingError(
                    f"{path}, line {line_number}: atom {number} is outside the topology (1..{n_atoms})"
                )
            groups[-1][1].append(number - 1)
    if not groups:
        raise MappingError(f"{path}: no index groups")
    atoms = list(topology.atoms())
    beads = []
    for name, indices, line_number in groups:
        if not indices:
            raise MappingError(f"{path}, line {line_number}: group {name!r} is empty")
        residue = atoms[indices[0]].residue
        beads.append(Bead(name, residue.index, tuple(indices), atom_weights(topology, indices, "mass")))
    return Mapping(topology, beads, scheme=path.name)


def _from_map_file(path: Path, topology: app.Topology) -> Mapping:
    """A user's Martini/backward .map file applied, by atom name, to every residue of its molecule name."""
    from openmmbackmap.martini_mapping import beads_from_map_file, read_map_file

    molecule = read_map_file(path)[0]
    residues = [r for r in topology.residues() if r.name == molecule]
    if not residues:
        raise MappingError(f"{path}: the topology has no residue named {molecule}")
    beads = [bead for residue in residues for bead in beads_from_map_file(path, residue, topology)]
    return Mapping(topology, beads, scheme=path.name)
