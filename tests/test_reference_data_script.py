"""examples/make_reference_data.py: segments, the compact bundle that ships, and extending a set later."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from openmmbackmap import cgforce, io
from openmmbackmap.mapping import Mapping

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "make_reference_data.py"


def _run(*args: str) -> str:
    result = subprocess.run([sys.executable, str(SCRIPT), "ala2", "--ns-per-segment", "0.1", "--frame-ps", "0.1",
                             "--bundle-scheme", "backbone", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_bundle_holds_the_segments_and_a_later_run_extends_it(tmp_path):
    bundle = tmp_path / "bundle"
    _run("--segments", "1", "--out-dir", str(tmp_path / "first"), "--bundle", str(bundle))
    full = tmp_path / "first" / "ala2_000"
    assert {p.name for p in bundle.iterdir()} == {
        "ala2_000.pdb", "ala2_000.xtc", "ala2_000.json", "ala2_000.backbone.cg.npz", "dataset.json"}
    # the bundled mapped forces are the full-atom segment's, mapped (float32)
    topology, _ = io.load_topology(full.with_suffix(".pdb"))
    mapping = Mapping.from_scheme(topology, "backbone")
    expected = cgforce.load_force_data([full], mapping)
    compact = cgforce.load_force_data([bundle / "ala2_000"], mapping)
    np.testing.assert_allclose(compact.forces, expected.forces, rtol=1e-6, atol=1e-3)
    assert io.load_trajectory(bundle / "ala2_000.xtc", topology).n_frames == 1000

    # a later session has lost the full-atom folder: the bundled segment counts as done
    out = _run("--segments", "2", "--out-dir", str(tmp_path / "second"), "--bundle", str(bundle))
    assert "segment 0: done before, skipped" in out and "segment 1: 300 K" in out
    assert not (tmp_path / "second" / "ala2_000.xtc").exists()
    assert (bundle / "ala2_001.backbone.cg.npz").exists()
    assert json.loads((bundle / "dataset.json").read_text())["segments"] == 2
