"""The native MappingRestraintForce plugin and its CustomCentroidBondForce fallback, in real Contexts.

Both implementations are checked against a numpy reference and finite differences, against each
other, and on the Reference and CPU platforms, and on OpenCL where the native OpenCL kernels are
built and a driver is installed (CI installs pocl, an OpenCL driver for the CPU); the C++ tests
run under ctest from here.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import warnings

import numpy as np
import openmm
import pytest
from openmm import unit

from openmmbackmap import plugins, restraints
from openmmbackmap.errors import BackmapError
from openmmbackmap.restraints import CentroidRestraintFallback, NativePluginWarning, mapping_restraint_force

# OpenCL in double precision, so that the same tolerances hold as on Reference and CPU.
PLATFORM_PROPERTIES = {"OpenCL": {"Precision": "double"}}


def _has_device(name: str) -> bool:
    """Whether the platform can make a Context (a driver can be installed without a device)."""
    system = openmm.System()
    system.addParticle(1.0)
    system.addParticle(1.0)
    try:
        openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(name))
    except Exception:  # OpenMMException: no device
        return False
    return True


PLATFORMS = ["Reference", "CPU"] + [
    name for name in ("OpenCL",) if name in plugins.native_kernel_platforms() and _has_device(name)
]
native = pytest.mark.skipif(not restraints.native_available(), reason="native plugin not built")


def _make(kind: str):
    if kind == "native":
        if not restraints.native_available():
            pytest.skip(f"native plugin not available: {plugins.native_plugin_error()}")
        return plugins.native_restraint_force_class()()
    return CentroidRestraintFallback()


@pytest.fixture(params=["native", "fallback"])
def kind(request) -> str:
    return request.param


@pytest.fixture(params=PLATFORMS)
def platform(request) -> openmm.Platform:
    return openmm.Platform.getPlatformByName(request.param)


def _problem(seed=0, n_atoms=60, n_groups=20, flat_bottom=False, box=None):
    """Random groups of 1-4 atoms with random weights, k, r0 and targets (nm)."""
    rng = np.random.default_rng(seed)
    span = box if box is not None else 2.0
    positions = rng.uniform(0, span, (n_atoms, 3))
    groups, weights = [], []
    for g in range(n_groups):
        size = 1 + g % 4
        groups.append(rng.choice(n_atoms, size, replace=False).tolist())
        weights.append(rng.uniform(0.5, 16.0, size).tolist())
    k = rng.uniform(100, 2000, n_groups)
    # Flat-bottomed: every third group plain harmonic, the others with r0 up to 0.3 nm.
    r0 = np.where(np.arange(n_groups) % 3 == 0, 0.0, rng.uniform(0.05, 0.3, n_groups)) if flat_bottom else np.zeros(n_groups)
    targets = rng.uniform(0, span, (n_groups, 3))
    return positions, groups, weights, k, r0, targets


def _expected(positions, groups, weights, k, r0, targets, box=None):
    """Energy and forces in numpy: groups made whole relative to their first atom, minimum images."""

    def wrap(d):
        return d - box * np.round(d / box) if box is not None else d

    energy, forces = 0.0, np.zeros_like(positions)
    for g, (atoms, w) in enumerate(zip(groups, weights)):
        w = np.asarray(w) / np.sum(w)
        ref = positions[atoms[0]]
        centroid = ref + (w[:, None] * wrap(positions[atoms] - ref)).sum(axis=0)
        delta = wrap(centroid - targets[g])
        r = np.linalg.norm(delta)
        if r <= r0[g]:
            continue
        energy += 0.5 * k[g] * (r - r0[g]) ** 2
        forces[atoms] -= w[:, None] * (k[g] * (r - r0[g]) / r) * delta
    return energy, forces


def _system(force, n_atoms, box=None):
    system = openmm.System()
    for _ in range(n_atoms):
        system.addParticle(12.0)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(openmm.Vec3(box, 0, 0), openmm.Vec3(0, box, 0), openmm.Vec3(0, 0, box))
    system.addForce(force)
    return system


def _context(system, platform):
    properties = PLATFORM_PROPERTIES.get(platform.getName(), {})
    return openmm.Context(system, openmm.VerletIntegrator(0.001), platform, properties)


def _evaluate(context, positions):
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return energy, state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)


def _filled(kind, groups, weights, k, r0, targets, periodic=False):
    force = _make(kind)
    for atoms, w, kg, rg in zip(groups, weights, k, r0):
        force.addGroup(atoms, w, float(kg), float(rg))
    force.setTargets(targets)
    force.setUsesPeriodicBoundaryConditions(periodic)
    return force


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12)


# ---------------------------------------------------------------- the build


def test_native_plugin_is_built():
    """`pip install .` must build the plugin; the fallback is for machines without a compiler.

    BACKMAP_ALLOW_FALLBACK=1 accepts a missing plugin (the tests of the native force then skip).
    """
    if os.environ.get("BACKMAP_ALLOW_FALLBACK") == "1" and not restraints.native_available():
        pytest.skip(f"BACKMAP_ALLOW_FALLBACK=1: {plugins.native_plugin_error()}")
    assert restraints.native_available(), plugins.native_plugin_error()
    assert plugins.NATIVE_KERNEL_DIR.is_dir()


@native
def test_opencl_kernels_are_built_where_openmm_has_opencl():
    """Where OpenMM has an OpenCL platform (a driver), the build must have produced its kernels.

    The pip openmm wheel ships OpenMM's OpenCL platform, so a build finds it whenever the OpenCL
    headers are installed; a platform without kernels would make relaxation fall back silently.
    """
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if "OpenCL" not in names:
        pytest.skip("OpenMM has no OpenCL platform here (no OpenCL driver)")
    assert "OpenCL" in plugins.native_kernel_platforms(), plugins.native_kernel_error("OpenCL")


@native
def test_a_platform_without_native_kernels_falls_back_with_a_warning():
    assert plugins.native_kernel_error("Reference") is None
    assert "no kernels for a platform named 'HIP'" in plugins.native_kernel_error("HIP")
    with pytest.warns(NativePluginWarning, match="no native kernels for the HIP platform"):
        force = mapping_restraint_force([[0, 1]], k=10.0, platform="HIP")
    assert isinstance(force, CentroidRestraintFallback)
    with pytest.raises(BackmapError, match="no native kernels for the HIP platform"):
        mapping_restraint_force([[0, 1]], k=10.0, platform="HIP", native=True)
    assert not isinstance(mapping_restraint_force([[0, 1]], k=10.0, platform="CPU"), CentroidRestraintFallback)


@native
def test_native_force_is_a_real_openmm_force():
    force = mapping_restraint_force([[0, 1]], k=10.0, native=True)
    assert isinstance(force, openmm.Force)
    system = _system(force, 2)
    again = system.getForce(0)
    assert plugins.native_restraint_force_class().isinstance(again)
    view = plugins.native_restraint_force_class().cast(again)
    assert view.getNumGroups() == 1 and view.getGroupParameters(0) == ([0, 1], [], 10.0, 0.0)
    force.setForceGroup(5)
    assert system.getForce(0).getForceGroup() == 5


@native
def test_cpp_tests_pass_under_ctest():
    info_path = plugins.NATIVE_PLUGIN_DIR / "build_info.json"
    build_dir = json.loads(info_path.read_text())["cmake_build_dir"] if info_path.exists() else None
    if build_dir is None or not os.path.exists(os.path.join(build_dir, "CTestTestfile.cmake")):
        pytest.skip("no CMake build folder with tests (installed from a wheel?)")
    ctest = shutil.which("ctest")
    if ctest is None:
        try:
            import cmake

            ctest = os.path.join(cmake.CMAKE_BIN_DIR, "ctest")
        except ImportError:
            pytest.skip("ctest not found")
    # The tests were linked against the build environment's copy of the same openmm wheel, which
    # pip has removed since: point them at this environment's libOpenMM and plugin folder.
    openmm_lib = openmm.version.openmm_library_path
    env = dict(os.environ)
    # libOpenMMOpenCL.so, which the OpenCL kernels link against, is in the plugin folder.
    openmm_plugins = os.path.join(openmm_lib, "plugins")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [openmm_lib, openmm_plugins, env.get("LD_LIBRARY_PATH")]))
    env["OPENMM_BACKMAP_OPENMM_PLUGINS"] = openmm_plugins
    result = subprocess.run(
        [ctest, "--test-dir", build_dir, "--output-on-failure", "-V"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "100% tests passed" in result.stdout
    assert "CPU: ok" in result.stdout  # the CPU platform was tested, not only Reference
    if "OpenCL" in PLATFORMS:
        assert "OpenCL single: ok" in result.stdout and "OpenCL double: ok" in result.stdout


# ---------------------------------------------------------------- energies and forces


@pytest.mark.parametrize("flat_bottom", [False, True])
def test_energy_and_forces_match_numpy_and_finite_differences(kind, platform, flat_bottom):
    positions, groups, weights, k, r0, targets = _problem(seed=1, flat_bottom=flat_bottom)
    force = _filled(kind, groups, weights, k, r0, targets)
    context = _context(_system(force, len(positions)), platform)
    energy, forces = _evaluate(context, positions)
    expected_energy, expected_forces = _expected(positions, groups, weights, k, r0, targets)
    assert energy > 0
    assert energy == pytest.approx(expected_energy, rel=1e-9)
    assert _rel(forces, expected_forces) < 1e-9
    # Central differences, coordinate by coordinate, for the atoms of a few groups.
    h = 1e-5
    atoms = sorted({a for atoms in groups[:8] for a in atoms})
    numeric = np.zeros((len(atoms), 3))
    for row, atom in enumerate(atoms):
        for axis in range(3):
            shifted = positions.copy()
            shifted[atom, axis] += h
            e_plus, _ = _evaluate(context, shifted)
            shifted[atom, axis] -= 2 * h
            e_minus, _ = _evaluate(context, shifted)
            numeric[row, axis] = -(e_plus - e_minus) / (2 * h)
    assert _rel(numeric, forces[atoms]) < 1e-6


@native
@pytest.mark.parametrize("flat_bottom", [False, True])
@pytest.mark.parametrize("periodic", [False, True])
def test_native_matches_fallback(platform, flat_bottom, periodic):
    # Whole groups (atoms within 0.4 nm of each other) in a 4 nm box: both implementations agree
    # with and without periodic boundaries (targets may be an image away).
    _, _, _, k, r0, _ = _problem(seed=2, n_groups=30, flat_bottom=flat_bottom)
    rng = np.random.default_rng(3)
    positions = np.repeat(rng.uniform(0.5, 3.5, (20, 3)), 4, axis=0) + rng.uniform(-0.2, 0.2, (80, 3))
    groups = [list(range(4 * (g % 20), 4 * (g % 20) + 1 + g % 4)) for g in range(30)]
    weights = [rng.uniform(1, 16, len(atoms)).tolist() for atoms in groups]
    targets = rng.uniform(-4, 8, (30, 3))
    results = {}
    for kind in ("native", "fallback"):
        force = _filled(kind, groups, weights, k, r0, targets, periodic=periodic)
        results[kind] = _evaluate(_context(_system(force, 80, box=4.0), platform), positions)
    assert results["native"][0] == pytest.approx(results["fallback"][0], rel=1e-6)
    assert _rel(results["native"][1], results["fallback"][1]) < 1e-6
    expected = _expected(positions, groups, weights, k, r0, targets, box=4.0 if periodic else None)
    assert results["native"][0] == pytest.approx(expected[0], rel=1e-9)


def test_flat_bottom(kind, platform):
    force = _make(kind)
    force.addGroup([0, 1], [], 300.0, 0.25)
    force.setTargets(np.zeros((1, 3)))
    context = _context(_system(force, 2), platform)
    energy, forces = _evaluate(context, np.array([[0.1, 0, 0], [0.3, 0, 0]]))  # centroid at 0.2 < r0
    assert energy == 0.0 and not forces.any()
    energy, forces = _evaluate(context, np.array([[0.0, 0.5, 0], [0.0, 0.7, 0]]))  # centroid at 0.6
    assert energy == pytest.approx(0.5 * 300 * 0.35**2, rel=1e-12)
    np.testing.assert_allclose(forces, [[0, -0.5 * 300 * 0.35, 0]] * 2, rtol=1e-12, atol=1e-12)


@native
def test_group_split_across_the_periodic_box(platform):
    # A 4-atom group straddling the x = 0 face of a 3 nm box; its centroid is at x = 0.0 (= 3.0).
    whole = np.array([[-0.2, 1.0, 1.0], [-0.1, 1.1, 1.0], [0.1, 1.0, 1.1], [0.2, 1.1, 1.1]])
    split = whole.copy()
    split[:2, 0] += 3.0
    groups, weights, k, r0 = [[0, 1, 2, 3]], [[12.0, 1.0, 14.0, 1.0]], [500.0], [0.0]
    target = np.array([[2.95, 1.0, 1.0]])  # 0.05 nm from the centroid through the boundary
    force = _filled("native", groups, weights, k, r0, target, periodic=True)
    context = _context(_system(force, 4, box=3.0), platform)
    e_split, f_split = _evaluate(context, split)
    e_whole, f_whole = _evaluate(context, whole)
    expected = _expected(split, groups, weights, k, r0, target, box=3.0)
    assert e_split == pytest.approx(expected[0], rel=1e-10)
    assert e_split == pytest.approx(e_whole, rel=1e-10)
    np.testing.assert_allclose(f_split, f_whole, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(f_split, expected[1], rtol=1e-10, atol=1e-10)
    # The fallback on the whole group agrees; on the split group it would not (documented).
    fallback = _filled("fallback", groups, weights, k, r0, target, periodic=True)
    e_fallback, _ = _evaluate(_context(_system(fallback, 4, box=3.0), platform), whole)
    assert e_fallback == pytest.approx(e_split, rel=1e-6)


# ---------------------------------------------------------------- serialization and updates


@native
def test_xml_round_trip_gives_the_same_energy(platform):
    positions, groups, weights, k, r0, targets = _problem(seed=4, flat_bottom=True)
    force = _filled("native", groups, weights, k, r0, targets, periodic=True)
    force.setForceGroup(2)
    xml = openmm.XmlSerializer.serialize(force)
    copy = openmm.XmlSerializer.deserialize(xml)
    assert openmm.XmlSerializer.serialize(copy) == xml
    cls = plugins.native_restraint_force_class()
    assert cls.cast(copy).getForceGroup() == 2
    np.testing.assert_array_equal(cls.cast(copy).getTargets(), targets)
    pickled = pickle.loads(pickle.dumps(force))
    # (A System owns the forces added to it: each gets its own System, kept alive here.)
    systems = [_system(f, len(positions), box=2.0) for f in (force, copy, pickled)]
    energies = [_evaluate(_context(system, platform), positions)[0] for system in systems]
    assert energies[2] == energies[1] == energies[0] > 0
    # A whole System too.
    system = systems[0]
    system_copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    assert _evaluate(_context(system_copy, platform), positions)[0] == energies[0]


def test_set_targets_and_update_in_context(kind, platform):
    positions, groups, weights, k, r0, targets = _problem(seed=5, flat_bottom=True)
    force = _filled(kind, groups, weights, k, r0, targets)
    system = _system(force, len(positions))
    context = _context(system, platform)
    before, _ = _evaluate(context, positions)
    moved = targets + np.array([0.3, -0.2, 0.1])
    force.setTargets(moved * unit.nanometer)  # a Quantity is converted
    np.testing.assert_array_equal(force.getTargets(), moved)
    assert _evaluate(context, positions)[0] == before  # not in the Context until updated
    force.updateParametersInContext(context)
    energy, forces = _evaluate(context, positions)
    expected = _expected(positions, groups, weights, k, r0, moved)
    assert energy == pytest.approx(expected[0], rel=1e-9) and energy != pytest.approx(before)
    assert _rel(forces, expected[1]) < 1e-9
    # Targets at the centroids: zero energy. Then k and r0 of one group.
    centroids = np.array([np.average(positions[a], axis=0, weights=w) for a, w in zip(groups, weights)])
    force.setTargets(centroids)
    force.updateParametersInContext(context)
    assert _evaluate(context, positions)[0] == pytest.approx(0.0, abs=1e-9)
    force.setTarget(0, centroids[0] + [0.5, 0, 0])
    force.setGroupParameters(0, groups[0], weights[0], 40.0, 0.1)
    force.updateParametersInContext(context)
    assert _evaluate(context, positions)[0] == pytest.approx(0.5 * 40 * 0.4**2, rel=1e-9)
    assert force.getGroupParameters(0) == (groups[0], weights[0], 40.0, 0.1)


def test_minimising_under_the_restraint_reaches_the_targets(kind):
    positions, groups, weights, k, r0, targets = _problem(seed=6, n_atoms=40, n_groups=10)
    groups = [[4 * g, 4 * g + 1, 4 * g + 2, 4 * g + 3] for g in range(10)]  # disjoint groups
    weights = [[1.0] * 4] * 10
    force = _filled(kind, groups, weights, k, r0, targets)
    context = _context(_system(force, 40), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1e-3, 500)
    final = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    centroids = final.reshape(10, 4, 3).mean(axis=1)
    np.testing.assert_allclose(centroids, targets, atol=1e-3)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args, message",
    [
        (([], [], 1.0), "group 1: the group has no atoms"),
        (([0], [], -1.0), "group 1: the force constant k = -1 is negative"),
        (([0], [], 1.0, -0.5), "group 1: the flat-bottom radius r0 = -0.5 is negative"),
        (([0, 1], [1.0], 1.0), "group 1: 2 atoms but 1 weights"),
        (([0, 1], [0.0, 0.0], 1.0), "group 1: the weights sum to zero"),
        (([-2], [], 1.0), "group 1: atom index -2 is negative"),
    ],
)
def test_bad_groups_raise_naming_the_group(kind, args, message):
    force = _make(kind)
    force.addGroup([0], [], 1.0)
    with pytest.raises(openmm.OpenMMException, match="MappingRestraintForce: " + message):
        force.addGroup(*args)
    with pytest.raises(openmm.OpenMMException, match="group 0: the group has no atoms"):
        force.setGroupParameters(0, [], [], 1.0)
    assert force.getNumGroups() == 1


@pytest.mark.parametrize("shape", [(3, 3), (2, 2), (2, 3, 1), (5,)])
def test_targets_of_the_wrong_shape_raise(kind, shape):
    force = _make(kind)
    force.addGroup([0], [], 1.0)
    force.addGroup([1], [], 1.0)
    with pytest.raises(openmm.OpenMMException, match=r"expected targets of shape \(2, 3\).*got shape"):
        force.setTargets(np.zeros(shape))
    with pytest.raises(openmm.OpenMMException, match="group 1: the target is not finite"):
        force.setTargets(np.array([[0, 0, 0], [0, np.nan, 0]]))


def test_atom_out_of_range_raises_at_context_creation(kind, platform):
    force = _make(kind)
    force.addGroup([0, 1], [], 1.0)
    force.addGroup([1, 7], [], 1.0)
    system = _system(force, 3)
    # The fallback's message is CustomCentroidBondForce's, without the group's index.
    message = "group 1: atom index 7 is out of range" if kind == "native" else "7"
    with pytest.raises(openmm.OpenMMException, match=message):
        _context(system, platform)


def test_native_restraint_without_pbc_in_a_periodic_system_is_refused(platform):
    """GPU platforms wrap molecules into the box, so absolute centroids are not defined there; the
    native force refuses the combination on every platform alike and names the fix."""
    force = _make("native")
    force.addGroup([0, 1], [], 1.0)
    system = _system(force, 3, box=3.0)
    nonbonded = openmm.CustomNonbondedForce("0")
    nonbonded.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    for _ in range(3):
        nonbonded.addParticle([])
    system.addForce(nonbonded)
    with pytest.raises(openmm.OpenMMException, match=r"call setUsesPeriodicBoundaryConditions\(true\)"):
        _context(system, platform)
    force.setUsesPeriodicBoundaryConditions(True)
    _context(system, platform)


# ---------------------------------------------------------------- the factory


def test_factory_builds_groups_from_arrays(kind):
    if kind == "native" and not restraints.native_available():
        pytest.skip("native plugin not built")
    force = mapping_restraint_force(
        [[0, 1], [2]], weights=[[1.0, 3.0], None], k=[10.0, 20.0], r0=0.1 * unit.nanometer,
        targets=np.ones((2, 3)), periodic=True, native=(kind == "native"),
    )
    assert isinstance(force, CentroidRestraintFallback) == (kind == "fallback")
    assert force.getGroupParameters(0) == ([0, 1], [1.0, 3.0], 10.0, pytest.approx(0.1))
    assert force.getGroupParameters(1) == ([2], [], 20.0, pytest.approx(0.1))
    assert force.usesPeriodicBoundaryConditions()
    np.testing.assert_array_equal(force.getTargets(), np.ones((2, 3)))


def test_factory_warns_and_falls_back_without_the_native_plugin(monkeypatch):
    monkeypatch.setattr(plugins, "native_restraint_force_class", lambda: None)
    monkeypatch.setattr(plugins, "native_plugin_error", lambda: "not built here")
    with pytest.warns(NativePluginWarning, match="not built here"):
        force = mapping_restraint_force([[0]])
    assert isinstance(force, CentroidRestraintFallback)
    with pytest.raises(BackmapError, match="not built here"):
        mapping_restraint_force([[0]], native=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(mapping_restraint_force([[0]], native=False), CentroidRestraintFallback)
