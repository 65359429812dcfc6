"""The benchmark report: scorecards as JSON, a Markdown summary, and plots.

:func:`write_report` writes into one folder:

``results.json``
    Every scorecard (see :mod:`openmmbackmap.bench.scorecard`) with the inputs' provenance.
``report.md``
    A table of the headline numbers, reference beside each candidate, and the plots.
``*.png``
    Bond-length and dihedral distributions of the worst-matching types, phi/psi maps, and
    per-frame heavy-atom RMSD, reference and candidates side by side (matplotlib).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from openmmbackmap import io  # noqa: E402
from openmmbackmap.bench import accuracy, distributions  # noqa: E402
from openmmbackmap.bench.structure import TopologyFeatures  # noqa: E402
from openmmbackmap.geometry import dihedrals, distances  # noqa: E402

#: Headline rows of the Markdown table: (label, section, key, reference key or None, ideal).
HEADLINES = [
    ("bond score (within 10%)", "bonds", "bond_score", None, "1"),
    ("bond score AUC 0-20%", "bonds", "bond_score_auc", None, "1"),
    ("graph edit ratio", "bonds", "graph_edit_ratio", "graph_edit_ratio_reference", "0"),
    ("residues with severe clash (%)", "clashes", "severe_percent", "severe_percent_reference", "reference"),
    ("clashscore (per 1,000 atoms)", "clashes", "clashscore", "clashscore_reference", "reference"),
    ("chirality errors per frame", "stereochemistry", "chirality.per_frame_mean", None, "0"),
    ("non-proline cis peptides per frame", "stereochemistry", "cis_peptides.per_frame_mean", "cis_peptides_reference.per_frame_mean", "0"),
    ("ring piercings per frame", "stereochemistry", "ring_piercing.per_frame_mean", "ring_piercing_reference.per_frame_mean", "0"),
    ("JSD bonds (mean over types)", "distributions", "jsd_bonds", None, "0"),
    ("JSD angles", "distributions", "jsd_angles", None, "0"),
    ("JSD dihedrals", "distributions", "jsd_dihedrals", None, "0"),
    ("JSD phi/psi maps", "distributions", "ramachandran_jsd", None, "0"),
    ("basin population difference (points)", "distributions", "basin_difference_points", None, "0"),
    ("JSD chi angles", "distributions", "chi_jsd", None, "0"),
    ("heavy-atom RMSD, backbone (nm)", "accuracy", "rmsd_backbone_nm", None, "0"),
    ("heavy-atom RMSD, side chains (nm)", "accuracy", "rmsd_side_chain_nm", None, "0"),
    ("chi1 within 40 degrees", "accuracy", "chi1_within_40_degrees", None, "1"),
    ("diversity DIV", "diversity", "div", None, "see docs"),
    ("MD readiness: fraction stable", "readiness", "fraction_stable", None, "1"),
    ("MD readiness: heavy-atom RMSD of minimisation (nm)", "readiness", "median_heavy_rmsd_nm", None, "0"),
    ("temporal coherence (step RMSD ratio)", "time", "temporal_coherence", None, "1"),
    ("slowest implied timescale ratio", "time", "kinetics.ratio", None, "1"),
    ("throughput (frames/s)", "throughput", "frames_per_second", None, "high"),
]


def _lookup(card: dict, section: str, dotted: str | None) -> Any:
    if dotted is None:
        return None
    value: Any = card.get(section)
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return f"{value:.4g}"
    return str(value)


def write_report(
    out_dir: str | os.PathLike,
    cards: dict[str, dict],
    *,
    features: TopologyFeatures,
    reference: np.ndarray,
    candidates: dict[str, np.ndarray],
    provenance: dict[str, Any],
) -> dict[str, Path]:
    """Write ``results.json``, ``report.md`` and the plots for scored candidates.

    Parameters
    ----------
    out_dir
        Folder for the report (created).
    cards
        Scorecard per candidate name.
    features
        Features of the reference topology the candidates were matched to.
    reference, candidates
        Coordinates (frames, atoms, 3), nm, for the plots.
    provenance
        What was scored: files, strides, versions; stored in results.json and the report.

    Returns
    -------
    dict
        Paths written, by kind.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"plots": []}
    written["plots"] += _plot_distributions(out_dir, features, reference, candidates, cards)
    rama = _plot_ramachandran(out_dir, features, reference, candidates)
    if rama:
        written["plots"].append(rama)
    rmsd = _plot_rmsd(out_dir, features, reference, candidates)
    if rmsd:
        written["plots"].append(rmsd)

    results = out_dir / "results.json"
    written["json"] = io.write_json(results, {"provenance": provenance, "candidates": cards}, allow_nan=False)

    lines = ["# Backmapping benchmark", ""]
    lines += [f"- {key}: {value}" for key, value in provenance.items()]
    names = list(cards)
    lines += ["", "| metric | ideal | reference | " + " | ".join(names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    for label, section, key, reference_key, ideal in HEADLINES:
        values = [_lookup(card, section, key) for card in cards.values()]
        if all(v is None for v in values):
            continue
        reference_value = next((_lookup(card, section, reference_key) for card in cards.values()
                                if _lookup(card, section, reference_key) is not None), None)
        lines.append(f"| {label} | {ideal} | {_format(reference_value)} | " + " | ".join(_format(v) for v in values) + " |")
    for name, card in cards.items():
        chirality = _lookup(card, "stereochemistry", "chirality.by_centre")
        if chirality:
            lines.append(f"\n{name}: chiral centres that flipped: {', '.join(chirality[:20])}")
    lines += ["", "Metric definitions, bins and basins: the docstrings of openmmbackmap.bench "
              "(structural, distributions, accuracy, readiness, kinetics).", ""]
    lines += [f"![{path.stem}]({path.name})" for path in written["plots"]]
    report = out_dir / "report.md"
    with io.atomic_output(report) as temporary:
        temporary.write_text("\n".join(lines) + "\n")
    written["markdown"] = report
    return written


def _save(figure, path: Path) -> Path:
    with io.atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def _plot_distributions(out_dir, features, reference, candidates, cards) -> list[Path]:
    """Histograms of the bond type and the dihedral type that match worst in any candidate."""
    paths = []
    for kind, rows, compute, unit_label, bins in (
        ("bonds", features.bonds, distances, "nm", distributions.BOND_BINS),
        ("dihedrals", features.dihedrals, dihedrals, "degrees", distributions.DIHEDRAL_BINS),
    ):
        worst = [(_lookup(card, "distributions", f"jsd_worst.{kind}") or {}) for card in cards.values()]
        worst = [w for w in worst if w.get("type")]
        if not worst:
            continue
        label = max(worst, key=lambda w: w["jsd"])["type"]
        selected = rows[[i for i, l in enumerate(features.labels(rows)) if l == label]]
        figure, axis = plt.subplots(figsize=(6, 3.5))
        for name, xyz in [("reference", reference), *candidates.items()]:
            values = compute(np.asarray(xyz, dtype=np.float64), selected).ravel()
            if kind == "dihedrals":
                values = np.degrees(values)
            axis.hist(values, bins=bins, histtype="step", density=True, label=name)
        axis.set_xlabel(f"{label} ({unit_label})")
        axis.set_ylabel("density")
        axis.set_title(f"worst-matching {kind[:-1]} type")
        if kind == "bonds":
            centre = np.median(compute(np.asarray(reference, dtype=np.float64), selected))
            axis.set_xlim(centre - 0.02, centre + 0.02)
        axis.legend()
        paths.append(_save(figure, out_dir / f"worst_{kind}.png"))
    return paths


def _plot_ramachandran(out_dir, features, reference, candidates) -> Path | None:
    angles = {name: distributions.ramachandran(xyz, features.topology) for name, xyz in [("reference", reference), *candidates.items()]}
    first = angles["reference"]
    if not len(first.residue_indices):
        return None
    figure, axes = plt.subplots(1, len(angles), figsize=(3.2 * len(angles), 3.2), squeeze=False)
    for axis, (name, rama) in zip(axes[0], angles.items()):
        axis.hist2d(rama.phi.ravel(), rama.psi.ravel(), bins=distributions.RAMACHANDRAN_BINS, cmap="viridis", cmin=1)
        axis.set_title(name)
        axis.set_xlabel("phi (degrees)")
        axis.set_ylabel("psi (degrees)")
    figure.suptitle("phi/psi, all residues", y=1.04)
    return _save(figure, out_dir / "ramachandran.png")


def _plot_rmsd(out_dir, features, reference, candidates) -> Path | None:
    paired = {name: xyz for name, xyz in candidates.items() if len(xyz) == len(reference)}
    if not paired:
        return None
    figure, axis = plt.subplots(figsize=(7, 3.5))
    for name, xyz in paired.items():
        rmsd = accuracy.heavy_atom_rmsd(xyz, reference, features)["heavy"]
        axis.plot(np.arange(len(rmsd)), rmsd, lw=0.8, label=name)
    axis.set_xlabel("frame")
    axis.set_ylabel("heavy-atom RMSD to reference (nm)")
    axis.legend()
    return _save(figure, out_dir / "rmsd.png")
