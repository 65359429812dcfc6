/* C++ tests of MappingRestraintForce on the Reference and CPU platforms (run by ctest).
 * Usage: TestMappingRestraintForce [openmm-plugin-dir]; the CPU platform is tested when OpenMM's
 * plugin folder (given here, or in OPENMM_BACKMAP_OPENMM_PLUGINS) provides it. */

#include "MappingRestraintForce.h"
#include "openmm/Context.h"
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
#include <random>
#include <string>
#include <vector>

using namespace BackmapPlugin;
using namespace OpenMM;
using namespace std;

extern "C" void registerBackmapReferenceKernelFactories();

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

static void testEnergyAndForces(Platform& platform, bool flatBottom, bool periodic) {
    Setup s;
    double box = 3.0;
    makeSetup(s, 40, 15, flatBottom, periodic, box, 1234);
    VerletIntegrator integrator(0.001);
    Context context(s.system, integrator, platform);
    context.setPositions(s.positions);
    State state = context.getState(State::Energy | State::Forces);
    vector<Vec3> expectedForces;
    Vec3 boxVectors[3] = {Vec3(box, 0, 0), Vec3(0, box, 0), Vec3(0, 0, box)};
    double expected = expectedEnergy(s.positions, s.groups, s.weights, s.k, s.r0, s.targets, periodic ? boxVectors : NULL, expectedForces);
    ASSERT(expected > 0);
    ASSERT_EQUAL_TOL(expected, state.getPotentialEnergy(), 1e-10);
    for (size_t i = 0; i < s.positions.size(); i++)
        ASSERT_EQUAL_VEC(expectedForces[i], state.getForces()[i], 1e-10);

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
    ASSERT_EQUAL_TOL(norm, (eMinus-ePlus)/(2e-5), 1e-5);
}

static void testSplitGroupAcrossBox(Platform& platform) {
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
    Context context(system, integrator, platform);
    context.setPositions({Vec3(0.1, 0, 0), Vec3(2.9, 0, 0)});  // centroid at 0.0 (= 3.0)
    State state = context.getState(State::Energy | State::Forces);
    ASSERT_EQUAL_TOL(0.5*100*0.05*0.05, state.getPotentialEnergy(), 1e-10);
    ASSERT_EQUAL_VEC(Vec3(0.5*100*0.05, 0, 0), state.getForces()[0], 1e-10);
    // A target one box away is the same target.
    force->setTargets({3.05, 3.0, -3.0});
    force->updateParametersInContext(context);
    ASSERT_EQUAL_TOL(0.5*100*0.05*0.05, energyOf(context), 1e-10);
}

static void testFlatBottom(Platform& platform) {
    System system;
    system.addParticle(1.0);
    MappingRestraintForce* force = new MappingRestraintForce();
    force->addGroup({0}, {}, 200.0, 0.1);
    system.addForce(force);
    VerletIntegrator integrator(0.001);
    Context context(system, integrator, platform);
    context.setPositions({Vec3(0.05, 0, 0)});
    ASSERT_EQUAL(0.0, energyOf(context));
    context.setPositions({Vec3(0, 0.3, 0)});
    State state = context.getState(State::Energy | State::Forces);
    ASSERT_EQUAL_TOL(0.5*200*0.2*0.2, state.getPotentialEnergy(), 1e-12);
    ASSERT_EQUAL_VEC(Vec3(0, -200*0.2, 0), state.getForces()[0], 1e-12);
}

static void testUpdateParametersInContext(Platform& platform) {
    System system;
    for (int i = 0; i < 3; i++)
        system.addParticle(1.0);
    MappingRestraintForce* force = new MappingRestraintForce();
    force->addGroup({0, 1}, {}, 10.0);
    force->addGroup({2}, {}, 20.0);
    system.addForce(force);
    VerletIntegrator integrator(0.001);
    Context context(system, integrator, platform);
    context.setPositions({Vec3(0, 0, 0), Vec3(1, 0, 0), Vec3(0, 0, 1)});
    // Targets at the origin: group 0 centroid (0.5, 0, 0), group 1 at (0, 0, 1).
    ASSERT_EQUAL_TOL(0.5*10*0.25+0.5*20*1.0, energyOf(context), 1e-12);
    force->setTargets({0.5, 0, 0, 0, 0, 0.5});
    // Not yet in the Context.
    ASSERT_EQUAL_TOL(0.5*10*0.25+0.5*20*1.0, energyOf(context), 1e-12);
    force->updateParametersInContext(context);
    ASSERT_EQUAL_TOL(0.5*20*0.25, energyOf(context), 1e-12);
    force->setGroupParameters(1, {2}, {}, 40.0, 0.1);
    force->updateParametersInContext(context);
    ASSERT_EQUAL_TOL(0.5*40*0.16, energyOf(context), 1e-12);
    force->addGroup({0}, {}, 1.0);
    try {
        force->updateParametersInContext(context);
        throw runtime_error("adding a group and updating the Context did not throw");
    }
    catch (const OpenMMException& e) {
        ASSERT(string(e.what()).find("number of groups") != string::npos);
    }
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

static void testBadInput(Platform& platform) {
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
    expectThrow([&] { Context context(system, integrator, platform); },
                "group 1: atom index 2 is out of range (the System has 2 particles)");
}

int main(int argc, char* argv[]) {
    try {
        registerBackmapReferenceKernelFactories();
        string pluginDir = (argc > 1 ? argv[1] : "");
        if (getenv("OPENMM_BACKMAP_OPENMM_PLUGINS") != NULL)
            pluginDir = getenv("OPENMM_BACKMAP_OPENMM_PLUGINS");
        if (!pluginDir.empty()) {
            Platform::loadPluginsFromDirectory(pluginDir);
            registerBackmapReferenceKernelFactories();  // for the platforms that were just loaded
        }
        vector<string> names = {"Reference"};
        bool haveCpu = false;
        for (int i = 0; i < Platform::getNumPlatforms(); i++)
            if (Platform::getPlatform(i).getName() == "CPU")
                haveCpu = true;
        if (haveCpu)
            names.push_back("CPU");
        else
            cout << "CPU platform not found (OpenMM plugin folder: '" << pluginDir << "'); testing Reference only" << endl;
        for (const string& name : names) {
            Platform& platform = Platform::getPlatformByName(name);
            for (bool flatBottom : {false, true})
                for (bool periodic : {false, true})
                    testEnergyAndForces(platform, flatBottom, periodic);
            testSplitGroupAcrossBox(platform);
            testFlatBottom(platform);
            testUpdateParametersInContext(platform);
            testBadInput(platform);
            cout << name << ": ok" << endl;
        }
    }
    catch (const exception& e) {
        cout << "exception: " << e.what() << endl;
        return 1;
    }
    cout << "Done" << endl;
    return 0;
}
