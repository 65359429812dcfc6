"""What every peer adapter shares: availability, running the tool safely, wrapping its errors.

A peer runs in a scratch folder that :meth:`Peer.run` makes inside ``workdir``; only a
successful run copies the tool's structure to the final name (atomically, through
:func:`openmmbackmap.io.atomic_output`), so a crash, a timeout or a tool error never leaves a
file under that name. The scratch folder is deleted after a success and kept after a failure
(the error names it) so the tool's own logs can be read.
"""

from __future__ import annotations

import abc
import os
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

from openmmbackmap import io
from openmmbackmap.errors import BackmapError, InputError

#: Characters of each of a tool's streams (stderr, stdout) quoted in an error message: their last ones.
ERROR_TAIL_CHARS = 3000


@dataclass(frozen=True)
class Availability:
    """Whether a peer can run here, and why not.

    True or false as a boolean, and unpacks as ``ok, reason = peer.available()``.
    """

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok

    def __iter__(self) -> Iterator:
        return iter((self.ok, self.reason))


class PeerError(BackmapError):
    """A peer tool failed, timed out or wrote no structure; the message names the tool and the input.

    Attributes
    ----------
    tool, input
        The peer's name and the CG input file.
    output
        The tail of the tool's stderr and stdout (some tools report errors on stdout).
    """

    def __init__(self, tool: str, input: str | os.PathLike, problem: str, output: str = ""):
        self.tool, self.input, self.output = tool, str(input), output
        message = f"{tool} failed on {str(input)!r}: {problem}"
        if output.strip():
            message += f"\n--- {tool} output (the end of each stream) ---\n{output.strip()}"
        super().__init__(message)


class Peer(abc.ABC):
    """Adapter for one external backmapping tool.

    Parameters
    ----------
    timeout
        Seconds one run may take before the tool (and every process it started) is killed.
    threads
        CPU threads the tool may use (``OMP_NUM_THREADS`` and friends); None leaves the
        tool's default.
    keep_scratch
        Keep the scratch folder after a successful run too.
    """

    #: Registry name of the tool.
    name: ClassVar[str]
    #: What the tool reads: ``"ca"`` (a C-alpha trace) or ``"martini"`` (Martini CG beads).
    input_kind: ClassVar[str]
    #: Whether the tool's structures have hydrogens (else match with ``heavy_only=True``).
    writes_hydrogens: ClassVar[bool]

    def __init__(self, *, timeout: float = 1800.0, threads: int | None = None, keep_scratch: bool = False):
        self.timeout = float(timeout)
        self.threads = threads
        self.keep_scratch = keep_scratch

    # ------------------------------------------------------------------ to implement

    @abc.abstractmethod
    def available(self) -> Availability:
        """Whether the tool can run here (importable, its programs on PATH); never raises."""

    @abc.abstractmethod
    def version(self) -> str:
        """The tool's version (and that of the programs it drives)."""

    @abc.abstractmethod
    def _check_input(self, cg_pdb: Path) -> None:
        """Raise :class:`InputError` if ``cg_pdb`` is not the kind of input this tool reads."""

    @abc.abstractmethod
    def _run(self, cg_pdb: Path, scratch: Path, seed: int | None) -> Path:
        """Run the tool on ``cg_pdb`` inside ``scratch``; return the structure it wrote there."""

    # ------------------------------------------------------------------ shared

    def output_path(self, cg_pdb: str | os.PathLike, workdir: str | os.PathLike) -> Path:
        """Where :meth:`run` puts the structure: ``workdir/<input stem>.<peer name>.pdb``."""
        return Path(workdir) / f"{Path(cg_pdb).stem}.{self.name}.pdb"

    def run(self, cg_pdb: str | os.PathLike, workdir: str | os.PathLike, *, seed: int | None = None) -> Path:
        """Backmap ``cg_pdb`` with the tool; return the atomistic PDB it wrote.

        Parameters
        ----------
        cg_pdb
            The CG structure (PDB) of the kind :attr:`input_kind` names.
        workdir
            Folder for the tool's scratch folder and the result.
        seed
            Random seed handed to the tool; None: the tool's own default.

        Raises
        ------
        PeerError
            If the tool is not available, fails, times out or writes no structure.
        InputError
            If ``cg_pdb`` is missing or not of the kind the tool reads.
        """
        cg_pdb = Path(cg_pdb).resolve()
        if not cg_pdb.is_file():
            raise InputError(f"{self.name}: CG input {str(cg_pdb)!r} does not exist")
        self._check_input(cg_pdb)
        ok, reason = self.available()
        if not ok:
            raise PeerError(self.name, cg_pdb, f"not available here: {reason}")
        workdir = Path(workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        output = self.output_path(cg_pdb, workdir)
        scratch = Path(tempfile.mkdtemp(prefix=f".{self.name}.{cg_pdb.stem}.", dir=workdir))
        try:
            produced = self._run(cg_pdb, scratch, seed)
            _check_structure(produced, self.name, cg_pdb)
            with io.atomic_output(output) as temporary:
                shutil.copyfile(produced, temporary)
        except PeerError as exc:
            exc.args = (f"{exc.args[0]}\n(the tool's files are kept in {str(scratch)!r})",)
            raise
        if not self.keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        return output

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        if self.threads is not None:
            for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                environment[variable] = str(self.threads)
        return environment

    def _execute(self, command: Sequence[str], cwd: Path, cg_pdb: Path) -> subprocess.CompletedProcess:
        """Run ``command`` in ``cwd`` in its own process group, no stdin, with the timeout.

        A timeout kills the whole group (tools start helpers: GROMACS, worker pools). A non-zero
        exit status is a :class:`PeerError` quoting the tool's output.
        """
        log = cwd / f"{self.name}.log"
        with open(log, "w") as handle:
            handle.write("$ " + " ".join(map(str, command)) + "\n")
        process = subprocess.Popen(
            [str(part) for part in command], cwd=cwd, env=self._environment(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            stdout, stderr = process.communicate()
            _append(log, stdout, stderr)
            raise PeerError(self.name, cg_pdb, f"timed out after {self.timeout:g} s", _tail(stderr, stdout)) from None
        except BaseException:  # KeyboardInterrupt: leave no tool running
            _kill_group(process)
            raise
        _append(log, stdout, stderr)
        if process.returncode != 0:
            raise PeerError(self.name, cg_pdb, f"exit status {process.returncode}", _tail(stderr, stdout))
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _append(log: Path, stdout: str, stderr: str) -> None:
    with open(log, "a") as handle:
        handle.write(stdout or "")
        if stderr:
            handle.write("\n--- stderr ---\n" + stderr)


def _tail(stderr: str, stdout: str) -> str:
    """stderr, then the end of stdout (tools such as cgback and cg2at2 report errors there)."""
    # progress bars redraw a line with carriage returns: keep what the last redraw shows
    stderr, stdout = (re.sub(r"[^\n]*\r(?!\n)", "", text or "") for text in (stderr, stdout))
    parts = []
    if (stderr or "").strip():
        parts.append(stderr.strip()[-ERROR_TAIL_CHARS:])
    if (stdout or "").strip():
        parts.append("[stdout] " + stdout.strip()[-ERROR_TAIL_CHARS:])
    return "\n".join(parts)


def _check_structure(path: Path, tool: str, cg_pdb: Path) -> None:
    if not path.is_file():
        raise PeerError(tool, cg_pdb, f"the tool ended without writing {str(path)!r}")
    with open(path, errors="replace") as handle:
        if not any(line.startswith(("ATOM", "HETATM")) for line in handle):
            raise PeerError(tool, cg_pdb, f"{str(path)!r} has no ATOM records")


def pdb_atom_records(path: Path) -> list[str]:
    """The ATOM and HETATM lines of a PDB file."""
    with open(path, errors="replace") as handle:
        return [line for line in handle if line.startswith(("ATOM  ", "HETATM"))]
