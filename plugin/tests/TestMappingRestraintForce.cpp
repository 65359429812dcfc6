/* C++ tests of MappingRestraintForce on every platform with kernels for it (run by ctest).
 * Usage: TestMappingRestraintForce [openmm-plugin-dir]; the CPU platform, and the OpenCL and CUDA
 * platforms when this test is linked with their kernels (BACKMAP_TEST_OPENCL, BACKMAP_TEST_CUDA),
 * are tested when OpenMM's plugin folder (given here, or in OPENMM_BACKMAP_OPENMM_PLUGINS)
 * provides them and they find a device. */

#include "MappingRestraintForce.h"
#include "openmm/Context.h"
#include "openmm/CustomNonbondedForce.h"
#include "openmm/HarmonicBondForce.h"
#include "openmm/OpenMMException.h"
#include "openmm/Platform.h"
#include "openmm/State.h"
#include "openmm/System.h"
#include "openmm/VerletIntegrator.h"
#include "openmm/internal/AssertionUtilities.h"
#include <cmath>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace BackmapPlugin;
using namespace OpenMM;
using namespace std;

extern "C" void registerBackmapReferenceKernelFactories();
#ifdef BACKMAP_TEST_OPENCL
extern "C" void registerBackmapOpenCLKernelFactories();
#endif
#ifdef BACKMAP_TEST_CUDA
extern "C" void registerBackmapCudaKernelFactories();
#endif

static void registerKernels() {
    registerBackmapReferenceKernelFactories();
#ifdef BACKMAP_TEST_OPENCL
    registerBackmapOpenCLKernelFactories();
#endif
#ifdef BACKMAP_TEST_CUDA
    registerBackmapCudaKernelFactories();
#endif
}

/** A platform with the properties (precision) to test it at and the relative tolerance that fits. */
struct TestPlatform {
    Platform* platform;
    map<string, string> properties;
    double tolerance;
    string label;
};

static double energyOf(Context& context) {
    return context.getState(State::Energy).getPotentialEnergy();
}

// Energy and forces computed independently of the plugin, for orthorhombic boxes.
static double expectedEnergy(const vector<Vec3>& pos, const vector<vector<int>>& groups, const vector<vector<double>>& weights,
                             const vector<double>& k, const vector<double>& r0, const vector<Vec3>& targets,
                             const Vec3* box, vector<Vec3>& forces) {
    forces.assign(pos.size(), Vec3());
    double energy = 0;
    for (size_t g = 0; g < groups.size(); g++) {
        double sum = 0;
        for (double w : weights[g])
            sum += w;
        Vec3 c;
        for (size_t i = 0; i < groups[g].size(); i++) {
            Vec3 d = pos[groups[g][i]]-pos[groups[g][0]];
            if (box != NULL)
                for (int j = 0; j < 3; j++)
                    d[j] -= box[j][j]*round(d[j]/box[j][j]);
            c += d*(weights[g][i]/sum);
        }
        c += pos[groups[g][0]];
        Vec3 delta = c-targets[g];
        if (box != NULL)
            for (int j = 0; j < 3; j++)
                delta[j] -= box[j][j]*round(delta[j]/box[j][j]);
        double r = sqrt(delta.dot(delta));
        if (r <= r0[g])
            continue;
        energy += 0.5*k[g]*(r-r0[g])*(r-r0[g]);
        Vec3 dEdc = delta*(k[g]*(r-r0[g])/r);
        for (size_t i = 0; i < groups[g].size(); i++)
            forces[groups[g][i]] -= dEdc*(weights[g][i]/sum);
    }
    return energy;
}

struct Setup {
    System system;
    MappingRestraintForce* force;
    vector<vector<int>> groups;
    vector<vector<double>> weights;
    vector<double> k, r0;
    vector<Vec3> targets, positions;
};

static void makeSetup(Setup& s, int numAtoms, int numGroups, bool flatBottom, bool periodic, double boxSize, unsigned seed) {
    mt19937 rng(seed);
    uniform_real_distribution<double> uniform(0.0, 1.0);
    for (int i = 0; i < numAtoms; i++) {
        s.system.addParticle(1.0);
        s.positions.push_back(Vec3(uniform(rng), uniform(rng), uniform(rng))*boxSize);
    }
    s.system.setDefaultPeriodicBoxVectors(Vec3(boxSize, 0, 0), Vec3(0, boxSize, 0), Vec3(0, 0, boxSize));
    s.force = new MappingRestraintForce();
    s.force->setUsesPeriodicBoundaryConditions(periodic);
    vector<double> flat;
    for (int g = 0; g < numGroups; g++) {
        vector<int> atoms;
        vector<double> w;
        int size = 1+g%4;
        for (int i = 0; i < size; i++) {
            atoms.push_back((g*3+i*7)%numAtoms);
            w.push_back(0.5+uniform(rng));
        }
        double kg = 100.0+1000.0*uniform(rng);
        double rg = (flatBottom ? 0.05*(g%3) : 0.0);
        ASSERT_EQUAL(g, s.force->addGroup(atoms, w, kg, rg));
        s.groups.push_back(atoms);
        s.weights.push_back(w);
        s.k.push_back(kg);
        s.r0.push_back(rg);
        Vec3 t = Vec3(uniform(rng), uniform(rng), uniform(rng))*boxSize;
        s.targets.push_back(t);
        flat.push_back(t[0]);
        flat.push_back(t[1]);
        flat.push_back(t[2]);
    }
    s.force->setTargets(flat);
    s.system.addForce(s.force);
}

static void testEnergyAndForces(const TestPlatform& p, bool flatBottom, bool periodic) {
    Setup s;
    double box = 3.0;
    makeSetup(s, 40, 15, flatBottom, periodic, box, 1234);
    VerletIntegrator integrator(0.001);
    Context context(s.system, integrator, *p.platform, p.properties);
    context.setPositions(s.positions);
    State state = context.getState(State::Energy | State::Forces);
    vector<Vec3> expectedForces;
    Vec3 boxVectors[3] = {Vec3(box, 0, 0), Vec3(0, box, 0), Vec3(0, 0, box)};
    double expected = expectedEnergy(s.positions, s.groups, s.weights, s.k, s.r0, s.targets, periodic ? boxVectors : NULL, expectedForces);
    ASSERT(expected > 0);
    ASSERT_EQUAL_TOL(expected, state.getPotentialEnergy(), p.tolerance);
    for (size_t i = 0; i < s.positions.size(); i++)
        ASSERT_EQUAL_VEC(expectedForces[i], state.getForces()[i], p.tolerance);

    // Finite differences along the forces.
    const vector<Vec3>& forces = state.getForces();
    double norm = 0;
    for (const Vec3& f : forces)
        norm += f.dot(f);
    norm = sqrt(norm);
    double step = 1e-5/norm;
    vector<Vec3> plus(s.positions), minus(s.positions);
    for (size_t i = 0; i < plus.size(); i++) {
        plus[i] += forces[i]*step;
        minus[i] -= forces[i]*step;
    }
    context.setPositions(plus);
    double ePlus = energyOf(context);
    context.setPositions(minus);
    double eMinus = energyOf(context);
    // Single precision cannot resolve the energy difference of so small a step.
    if (p.tolerance < 1e-8)
        ASSERT_EQUAL_TOL(norm, (eMinus-ePlus)/(2e-5), 1e-5);
}

static void testSplitGroupAcrossBox(const TestPlatform& p) {
    // Two atoms on either side of a periodic boundary: their centroid lies on the boundary, not mid-box.
    System system;
    system.addParticle(1.0);
    system.addParticle(1.0);
    system.setDefaultPeriodicBoxVectors(Vec3(3, 0, 0), Vec3(0, 3, 0), Vec3(0, 0, 3));
    MappingRestraintForce* force = new MappingRestraintForce();
    force->addGroup({0, 1}, {1.0, 1.0}, 100.0);
    force->setTargets({0.05, 0.0, 0.0});
    force->setUsesPeriodicBoundaryConditions(true);
    system.addForce(force);
    VerletIntegrator integrator(0.001);
    Context context(system, integrator, *p.platform, p.properties);
    context.setPositions({Vec3(0.1, 0, 0), Vec3(2.9, 0, 0)});  // centroid at 0.0 (= 3.0)
    State state = context.getState(State::Energy | State::Forces);
    ASSERT_EQUAL_TOL(0.5*100*0.05*0.05, state.getPotentialEnergy(), p.tolerance);
    ASSERT_EQUAL_VEC(Vec3(0.5*100*0.05, 0, 0), state.getForces()[0], p.tolerance);
    // A target one box away is the same target.
    force->setTargets({3.05, 3.0, -3.0});
    force->updateParametersInContext(context);
    ASSERT_EQUAL_TOL(0.5*100*0.05*0.05, energyOf(context), p.tolerance);
}

static void testFlatBottom(const TestPlatform& p) {
    // A second, unrestrained particle: OpenMM's OpenCL platform on pocl crashes on a System of one.
    System system;
    system.addParticle(1.0);
    system.addParticle(1.0);
    MappingRestraintForce* force = new MappingRestraintForce();
    force->addGroup({0}, {}, 200.0, 0.1);
    system.addForce(force);
    VerletIntegrator integrator(0.001);
    Context context(system, integrator, *p.platform, p.properties);
    context.setPositions({Vec3(0.05, 0, 0), Vec3(1, 1, 1)});
    ASSERT_EQUAL(0.0, energyOf(context));
    context.setPositions({Vec3(0, 0.3, 0), Vec3(1, 1, 1)});
    State state = context.getState(State::Energy | State::Forces);
    ASSERT_EQUAL_TOL(0.5*200*0.2*0.2, state.getPotentialEnergy(), p.tolerance);
    ASSERT_EQUAL_VEC(Vec3(0, -200*0.2, 0), state.getForces()[0], p.tolerance);
}

static void testUpdateParametersInContext(const TestPlatform& p) {
    System system;
    for (int i = 0; i < 3; i++)
        system.addParticle(1.0);
    MappingRestraintForce* force = new MappingRestraintForce();
    force->addGroup({0, 1}, {}, 10.0);
    force->addGroup({2}, {}, 20.0);
    system.addForce(force);
    VerletIntegrator integrator(0.001);
    Context context(system, integrator, *p.platform, p.properties);
    context.setPositions({Vec3(0, 0, 0), Vec3(1, 0, 0), Vec3(0, 0, 1)});
    // Targets at the origin: group 0 centroid (0.5, 0, 0), group 1 at (0, 0, 1).
    ASSERT_EQUAL_TOL(0.5*10*0.25+0.5*20*1.0, energyOf(context), p.tolerance);
    force->setTargets({0.5, 0, 0, 0, 0, 0.5});
    // Not yet in the Context.
    ASSERT_EQUAL_TOL(0.5*10*0.25+0.5*20*1.0, energyOf(context), p.tolerance);
    force->updateParametersInContext(context);
    ASSERT_EQUAL_TOL(0.5*20*0.25, energyOf(context), p.tolerance);
    force->setGroupParameters(1, {2}, {}, 40.0, 0.1);
    force->updateParametersInContext(context);
    ASSERT_EQUAL_TOL(0.5*40*0.16, energyOf(context), p.tolerance);
    // A group that gains an atom: centroid (1/3, 0, 1/3), target (0.5, 0, 0).
    force->setGroupParameters(0, {0, 1, 2}, {}, 10.0);
    force->updateParametersInContext(context);
    ASSERT_EQUAL_TOL(0.5*10*5.0/36.0+0.5*40*0.16, energyOf(context), p.tolerance);
    force->addGroup({0}, {}, 1.0);
    try {
        force->updateParametersInContext(context);
        throw runtime_error("adding a group and updating the Context did not throw");
    }
    catch (const OpenMMException& e) {
        ASSERT(string(e.what()).find("number of groups") != string::npos);
    }
}


static void testIdenticalMoleculesKeepTheirTargets(const TestPlatform& p) {
    // Identical two-atom molecules in a periodic box with a cutoff: GPU platforms reorder such
    // molecules by position, which must not hand one molecule's target to another.
    const int numMolecules = 64;
    const double box = 4.0;
    mt19937 rng(7);
    uniform_real_distribution<double> uniform(0.0, 1.0);
    System system;
    system.setDefaultPeriodicBoxVectors(Vec3(box, 0, 0), Vec3(0, box, 0), Vec3(0, 0, box));
    HarmonicBondForce* bonds = new HarmonicBondForce();
    CustomNonbondedForce* nonbonded = new CustomNonbondedForce("0.01*r");
    nonbonded->setNonbondedMethod(CustomNonbondedForce::CutoffPeriodic);
    nonbonded->setCutoffDistance(1.0);
    MappingRestraintForce* restraint = new MappingRestraintForce();
    restraint->setUsesPeriodicBoundaryConditions(true);
    vector<vector<int>> groups;
    vector<vector<double>> weights;
    vector<double> k, r0, flat;
    vector<Vec3> targets, positions;
    for (int m = 0; m < numMolecules; m++) {
        Vec3 centre = Vec3(uniform(rng), uniform(rng), uniform(rng))*box;
        for (int j = 0; j < 2; j++) {
            system.addParticle(12.0);
            nonbonded->addParticle();
            positions.push_back(centre+Vec3(0.05*j, 0, 0));
        }
        bonds->addBond(2*m, 2*m+1, 0.1, 1000.0);
        groups.push_back({2*m, 2*m+1});
        weights.push_back({1.0, 1.0});
        k.push_back(500.0);
        r0.push_back(0.0);
        Vec3 target = Vec3(uniform(rng), uniform(rng), uniform(rng))*box;
        targets.push_back(target);
        flat.insert(flat.end(), {target[0], target[1], target[2]});
        restraint->addGroup(groups.back(), weights.back(), k.back());
    }
    restraint->setTargets(flat);
    system.addForce(bonds);
    system.addForce(nonbonded);
    system.addForce(restraint);
    restraint->setForceGroup(1);
    VerletIntegrator integrator(0.0005);
    Context context(system, integrator, *p.platform, p.properties);
    context.setPositions(positions);
    // Past the 250 steps after which the context reorders molecules again.
    integrator.step(300);
    State state = context.getState(State::Positions | State::Energy | State::Forces, false, 1<<1);
    vector<Vec3> expectedForces;
    Vec3 boxVectors[3] = {Vec3(box, 0, 0), Vec3(0, box, 0), Vec3(0, 0, box)};
    double expected = expectedEnergy(state.getPositions(), groups, weights, k, r0, targets, boxVectors, expectedForces);
    ASSERT_EQUAL_TOL(expected, state.getPotentialEnergy(), 10*p.tolerance);
    for (int i = 0; i < 2*numMolecules; i++)
        ASSERT_EQUAL_VEC(expectedForces[i], state.getForces()[i], 10*p.tolerance);
}

static void expectThrow(const function<void()>& f, const string& fragment) {
    try {
        f();
    }
    catch (const OpenMMException& e) {
        if (string(e.what()).find(fragment) == string::npos)
            throw runtime_error("message \""+string(e.what())+"\" lacks \""+fragment+"\"");
        return;
    }
    throw runtime_error("expected an exception mentioning \""+fragment+"\"");
}

static void testFixedInContext(const TestPlatform& p) {
    // The periodic setting is compiled into the GPU kernels: changing it needs a new Context, on
    // every platform alike.
    System system;
    system.addParticle(1.0);
    system.addParticle(1.0);
    MappingRestraintForce* force = new MappingRestraintForce();
    force->addGroup({0, 1}, {}, 10.0);
    system.addForce(force);
    VerletIntegrator integrator(0.001);
    Context context(system, integrator, *p.platform, p.properties);
    force->setUsesPeriodicBoundaryConditions(true);
    expectThrow([&] { force->updateParametersInContext(context); }, "setUsesPeriodicBoundaryConditions() cannot change");
}

static void testBadInput(const TestPlatform& p) {
    MappingRestraintForce force;
    force.addGroup({0}, {}, 1.0);
    expectThrow([&] { force.addGroup({}, {}, 1.0); }, "group 1: the group has no atoms");
    expectThrow([&] { force.addGroup({0}, {}, -1.0); }, "group 1: the force constant k = -1 is negative");
    expectThrow([&] { force.addGroup({0}, {}, 1.0, -0.5); }, "group 1: the flat-bottom radius r0 = -0.5 is negative");
    expectThrow([&] { force.addGroup({0, 1}, {1.0}, 1.0); }, "group 1: 2 atoms but 1 weights");
    expectThrow([&] { force.addGroup({0, 1}, {0.0, 0.0}, 1.0); }, "group 1: the weights sum to zero");
    expectThrow([&] { force.addGroup({-3}, {}, 1.0); }, "group 1: atom index -3 is negative");
    expectThrow([&] { force.setGroupParameters(0, {}, {}, 1.0); }, "group 0: the group has no atoms");
    expectThrow([&] { force.setGroupParameters(4, {0}, {}, 1.0); }, "group 4 does not exist");
    expectThrow([&] { force.setTargets({1.0, 2.0}); }, "expected 3 values");
    expectThrow([&] { force.setTargets({1.0, NAN, 2.0}); }, "group 0: the target is not finite");
    ASSERT_EQUAL(1, force.getNumGroups());

    System system;
    system.addParticle(1.0);
    system.addParticle(1.0);
    MappingRestraintForce* restraint = new MappingRestraintForce();
    restraint->addGroup({0, 1}, {}, 1.0);
    restraint->addGroup({1, 2}, {}, 1.0);
    system.addForce(restraint);
    VerletIntegrator integrator(0.001);
    expectThrow([&] { Context context(system, integrator, *p.platform, p.properties); },
                "group 1: atom index 2 is out of range (the System has 2 particles)");

    // A periodic System (another force with a periodic cutoff) and a restraint without PBC.
    restraint->setGroupParameters(1, {1}, {}, 1.0);
    system.setDefaultPeriodicBoxVectors(Vec3(3, 0, 0), Vec3(0, 3, 0), Vec3(0, 0, 3));
    CustomNonbondedForce* nonbonded = new CustomNonbondedForce("0");
    nonbonded->setNonbondedMethod(CustomNonbondedForce::CutoffPeriodic);
    nonbonded->setCutoffDistance(1.0);
    nonbonded->addParticle();
    nonbonded->addParticle();
    system.addForce(nonbonded);
    expectThrow([&] { Context context(system, integrator, *p.platform, p.properties); },
                "the System uses periodic boundary conditions but this force does not");
    restraint->setUsesPeriodicBoundaryConditions(true);
    Context context(system, integrator, *p.platform, p.properties);
}

// Whether a platform can make a Context at all: a driver can be installed without a device.
static bool hasDevice(Platform& platform) {
    try {
        System system;
        system.addParticle(1.0);
        system.addParticle(1.0);
        VerletIntegrator integrator(0.001);
        Context context(system, integrator, platform);
        return true;
    }
    catch (const exception& e) {
        return false;
    }
}

int main(int argc, char* argv[]) {
    try {
        registerKernels();
        string pluginDir = (argc > 1 ? argv[1] : "");
        if (getenv("OPENMM_BACKMAP_OPENMM_PLUGINS") != NULL)
            pluginDir = getenv("OPENMM_BACKMAP_OPENMM_PLUGINS");
        if (!pluginDir.empty()) {
            Platform::loadPluginsFromDirectory(pluginDir);
            registerKernels();  // for the platforms that were just loaded
        }
        map<string, bool> available;
        for (int i = 0; i < Platform::getNumPlatforms(); i++)
            available[Platform::getPlatform(i).getName()] = true;
        vector<TestPlatform> platforms;
        platforms.push_back({&Platform::getPlatformByName("Reference"), {}, 1e-10, "Reference"});
        if (available["CPU"])
            platforms.push_back({&Platform::getPlatformByName("CPU"), {}, 1e-10, "CPU"});
        else
            cout << "CPU platform not found (OpenMM plugin folder: '" << pluginDir << "'); not tested" << endl;
        vector<string> gpuPlatforms;
#ifdef BACKMAP_TEST_OPENCL
        gpuPlatforms.push_back("OpenCL");
#endif
#ifdef BACKMAP_TEST_CUDA
        gpuPlatforms.push_back("CUDA");
#endif
        for (const string& name : gpuPlatforms) {
            if (!available[name]) {
                cout << name << " platform not found (no driver?); not tested" << endl;
                continue;
            }
            if (!hasDevice(Platform::getPlatformByName(name))) {
                cout << name << " platform has no usable device; not tested" << endl;
                continue;
            }
            // Single precision to the accuracy floats allow; double to that of the Reference platform.
            platforms.push_back({&Platform::getPlatformByName(name), {{"Precision", "single"}}, 2e-5, name+" single"});
            platforms.push_back({&Platform::getPlatformByName(name), {{"Precision", "double"}}, 1e-10, name+" double"});
        }
        for (const TestPlatform& p : platforms) {
            try {
                for (bool flatBottom : {false, true})
                    for (bool periodic : {false, true})
                        testEnergyAndForces(p, flatBottom, periodic);
                testSplitGroupAcrossBox(p);
                testFlatBottom(p);
                testUpdateParametersInContext(p);
                testIdenticalMoleculesKeepTheirTargets(p);
                testFixedInContext(p);
                testBadInput(p);
            }
            catch (const exception& e) {
                cout << p.label << ": " << e.what() << endl;
                return 1;
            }
            cout << p.label << ": ok" << endl;
        }
    }
    catch (const exception& e) {
        cout << "exception: " << e.what() << endl;
        return 1;
    }
    cout << "Done" << endl;
    return 0;
}
