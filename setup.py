"""Build script for openmm-backmap.

Metadata and dependencies live in pyproject.toml. This file adds one build step, so that the
same `pip install .` or `pip install -e .` also builds the native OpenMM plugin (plugin/,
CMakeLists.txt): `build_plugin` runs CMake against the `openmm` wheel of the build environment
(pinned in [build-system] requires, as cmake and swig are), runs `cmake --install` into a staging
folder and copies that into the package as openmmbackmap/_plugin/:

    _plugin/libOpenMMBackmap.so, _plugin/mappingrestraint.py, _plugin/_mappingrestraint*.so
    _plugin/plugins/libOpenMMBackmapReference.so   (loaded by openmmbackmap.plugins)
    _plugin/plugins/libOpenMMBackmapOpenCL.so      (when the OpenCL headers are installed)
    _plugin/plugins/libOpenMMBackmapCUDA.so        (with openmm[cuda12], installed first, and cuda.h)

An editable install writes _plugin/ into the source tree (python/openmmbackmap/_plugin/,
git-ignored); a regular install into the wheel. The CMake build folder stays in build/plugin/
so that tests/test_plugin.py can run its C++ tests with ctest.

If the native build fails (no compiler, say), the install goes on with a warning and
openmmbackmap.restraints uses its pure-OpenMM fallback; BACKMAP_REQUIRE_NATIVE=1 makes the
failure fatal and BACKMAP_SKIP_NATIVE=1 skips the native build. BACKMAP_CMAKE_ARGS adds CMake
arguments (e.g. "-DBACKMAP_BUILD_CUDA_PLATFORM=ON" to fail rather than skip the CUDA kernels when
something they need is missing); CMAKE_BUILD_PARALLEL_LEVEL sets the number
of compile jobs (default 2).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Command, setup
from setuptools.command.build import build
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parent
PLUGIN_PACKAGE_DIR = Path("openmmbackmap") / "_plugin"
CMAKE_BUILD_DIR = ROOT / "build" / "plugin"


class BinaryDistribution(Distribution):
    """The wheel holds native libraries, so it is tagged for this platform and Python."""

    def has_ext_modules(self) -> bool:
        return True


def _tool(name: str) -> str | None:
    """A build tool from the build environment (pip's [build-system] requires) or PATH."""
    if name == "cmake":
        try:
            import cmake  # the PyPI cmake package

            candidate = Path(cmake.CMAKE_BIN_DIR) / "cmake"
            if candidate.exists():
                return str(candidate)
        except (ImportError, AttributeError):
            pass
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    return shutil.which(name)


class build_plugin(Command):  # noqa: N801  (setuptools command names are lower case)
    """Build the native OpenMM plugin with CMake and put it into the package."""

    description = "build the native OpenMM plugin (plugin/, CMakeLists.txt) with CMake"
    user_options: list = []

    def initialize_options(self) -> None:
        self.build_lib = None
        self.editable_mode = False
        self._outputs: list[str] = []

    def finalize_options(self) -> None:
        self.set_undefined_options("build", ("build_lib", "build_lib"))

    def run(self) -> None:
        if os.environ.get("BACKMAP_SKIP_NATIVE") == "1":
            self.announce("BACKMAP_SKIP_NATIVE=1: not building the native plugin", level=3)
            return
        if self.editable_mode:
            target = ROOT / "python" / PLUGIN_PACKAGE_DIR
        else:
            target = Path(self.build_lib) / PLUGIN_PACKAGE_DIR
        try:
            staging = self._cmake_build()
        except (OSError, subprocess.CalledProcessError, RuntimeError) as error:
            if os.environ.get("BACKMAP_REQUIRE_NATIVE") == "1":
                raise
            bar = "=" * 78
            sys.stderr.write(
                f"\n{bar}\nWARNING: openmm-backmap's native OpenMM plugin did not build:\n  {error}\n"
                "The package installs without it and openmmbackmap.restraints uses the slower\n"
                "CustomCentroidBondForce fallback (with a NativePluginWarning). Build log: build/plugin/.\n"
                f"Set BACKMAP_REQUIRE_NATIVE=1 to make this an error.\n{bar}\n\n"
            )
            if self.editable_mode and target.exists():
                shutil.rmtree(target)  # no stale library from an earlier build
            return
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(staging, target)
        (target / "__init__.py").write_text('"""Native OpenMM plugin of openmm-backmap, built by setup.py (do not edit)."""\n')
        self._outputs = [str(path) for path in target.rglob("*") if path.is_file()] if not self.editable_mode else []
        self.announce(f"native plugin installed in {target}", level=3)

    def _cmake_build(self) -> Path:
        cmake = _tool("cmake")
        swig = _tool("swig")
        if cmake is None:
            raise RuntimeError("cmake not found (pip install cmake)")
        if swig is None:
            raise RuntimeError("swig not found (pip install swig)")
        # A fresh folder each time: an isolated build environment (and with it the OpenMM headers,
        # cmake and swig paths the cache would record) lives only as long as one pip run.
        if CMAKE_BUILD_DIR.exists():
            shutil.rmtree(CMAKE_BUILD_DIR)
        CMAKE_BUILD_DIR.mkdir(parents=True)
        staging = CMAKE_BUILD_DIR / "install"
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        configure = [
            cmake,
            "-S", str(ROOT),
            "-B", str(CMAKE_BUILD_DIR),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DSWIG_EXECUTABLE={swig}",
            f"-DCMAKE_INSTALL_PREFIX={staging}",
            # The openmm of the environment installed into (same pinned version as the build
            # environment's): its plugin folder holds the CUDA platform after `pip install openmm[cuda12]`.
            f"-DBACKMAP_RUNTIME_OPENMM_PLUGIN_DIR={Path(sysconfig.get_paths()['purelib']) / 'OpenMM.libs' / 'lib' / 'plugins'}",
            *shlex.split(os.environ.get("BACKMAP_CMAKE_ARGS", "")),
        ]
        log_path = CMAKE_BUILD_DIR / "build.log"
        with open(log_path, "w") as log:
            for command in (
                configure,
                [cmake, "--build", str(CMAKE_BUILD_DIR), "-j", jobs],
                [cmake, "--install", str(CMAKE_BUILD_DIR)],
            ):
                self.announce(" ".join(command), level=3)
                log.write("$ " + " ".join(command) + "\n")
                log.flush()
                result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                log.write(result.stdout)
                sys.stdout.write(result.stdout)
                if result.returncode != 0:
                    tail = "\n    ".join(result.stdout.strip().splitlines()[-15:])
                    raise RuntimeError(f"`{' '.join(command[:2])} ...` failed (log: {log_path}):\n    {tail}")
        try:
            import openmm  # of the build environment; the runtime pin is the same version

            openmm_version = openmm.version.full_version
        except ImportError:
            openmm_version = "unknown"
        info = {
            "cmake_build_dir": str(CMAKE_BUILD_DIR),
            "openmm_version": openmm_version,
            "built_with_python": sys.executable,
        }
        (staging / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
        return staging

    def get_outputs(self) -> list[str]:
        return self._outputs

    def get_output_mapping(self) -> dict[str, str]:
        return {}

    def get_source_files(self) -> list[str]:
        return []


class build_with_plugin(build):  # noqa: N801
    sub_commands = build.sub_commands + [("build_plugin", None)]


setup(
    distclass=BinaryDistribution,
    cmdclass={"build": build_with_plugin, "build_plugin": build_plugin},
)
