"""Make the benchmark report of the peer tools on a real protein: trp-cage (TC5b).

The reference is the trp-cage structure that vermouth ships as martinize2's test input (heavy
atoms, so the scoring is heavy-atom only). cgback backmaps its C-alpha trace and cg2at2 its
Martini 3 beads, both made with our mappings; both outputs are scored by the same metrics:

    .venv/bin/python examples/peer_report_trp_cage.py --out trp-cage-report

is the same as::

    backmap bench --topology <vermouth>/tests/data/integration_tests/tier-0/mini-protein3_trp-cage/aa.pdb \\
        --reference <same file> --peers cgback,cg2at2 --peer-frames 1 --heavy-only --out trp-cage-report

(cg2at2 needs GROMACS: ``apt-get install gromacs``). When our ``ic`` models exist, add their
backmapped trajectory with ``--candidates``.
"""

import argparse
from pathlib import Path

import vermouth

from openmmbackmap.cli import main

TRP_CAGE = Path(vermouth.__file__).parent / "tests/data/integration_tests/tier-0/mini-protein3_trp-cage/aa.pdb"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("trp-cage-report"))
    args = parser.parse_args()
    raise SystemExit(main(["bench", "--topology", str(TRP_CAGE), "--reference", str(TRP_CAGE),
                           "--peers", "cgback,cg2at2", "--peer-frames", "1", "--heavy-only",
                           "--out", str(args.out)]))
