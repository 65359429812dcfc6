"""Other backmapping tools ("peers"), run on the same CG input and scored with our metrics.

Each peer adapts one external tool to one interface (:class:`~.base.Peer`): ``available()``
says whether the tool can run here and why not, ``run(cg_pdb, workdir, seed=...)`` returns
the atomistic PDB it wrote, ``version()`` names the tool's version. Its ``input_kind`` says
which CG input it reads: ``"ca"`` (a C-alpha trace, as the ``ca`` mapping scheme and
:func:`openmmbackmap.io.write_trajectory` write) or ``"martini"`` (Martini beads, as
martinize2 writes). Score a result by loading it with :func:`openmmbackmap.io.load_topology`
and pairing its atoms with the reference's by :func:`openmmbackmap.bench.matching.match_atoms`.

Peers:

- ``cgback``: CGBack, a diffusion model, C-alpha trace -> all atoms (pip package ``cgback``).
- ``cg2at2``: CG2AT2, fragments fitted to Martini beads and minimised with GROMACS (pip
  package ``cg2at2`` and GROMACS' ``gmx`` on PATH).

Examples
--------
>>> from openmmbackmap.bench.peers import PEERS, get_peer
>>> sorted(PEERS)
['cg2at2', 'cgback']
>>> get_peer("cgback").input_kind
'ca'
"""

from __future__ import annotations

from openmmbackmap.bench.peers.base import Availability, Peer, PeerError
from openmmbackmap.bench.peers.cg2at2 import Cg2at2Peer
from openmmbackmap.bench.peers.cgback import CgbackPeer
from openmmbackmap.errors import InputError

#: Peer classes by name.
PEERS: dict[str, type[Peer]] = {CgbackPeer.name: CgbackPeer, Cg2at2Peer.name: Cg2at2Peer}


def get_peer(name: str, **options) -> Peer:
    """A peer by name, built with ``options`` (see each peer class for its own).

    Raises
    ------
    InputError
        If no peer has that name.
    """
    try:
        cls = PEERS[name]
    except KeyError:
        raise InputError(f"unknown peer {name!r}; peers: {', '.join(sorted(PEERS))}") from None
    return cls(**options)


def available_peers() -> list[str]:
    """Names of the peers (with default options) that can run on this machine."""
    return [name for name, cls in sorted(PEERS.items()) if cls().available()]


__all__ = ["PEERS", "Availability", "Cg2at2Peer", "CgbackPeer", "Peer", "PeerError", "available_peers", "get_peer"]
