/* XML round trip of MappingRestraintForce through XmlSerializer (run by ctest). */

#include "MappingRestraintForce.h"
#include "openmm/Platform.h"
#include "openmm/internal/AssertionUtilities.h"
#include "openmm/serialization/XmlSerializer.h"
#include <iostream>
#include <sstream>

using namespace BackmapPlugin;
using namespace OpenMM;
using namespace std;

static void testSerialization() {
    MappingRestraintForce force;
    force.setForceGroup(3);
    force.setName("restraints");
    force.setUsesPeriodicBoundaryConditions(true);
    force.addGroup({0, 4, 5}, {12.0, 1.0, 16.0}, 1000.0, 0.05);
    force.addGroup({7}, {}, 250.5);
    force.setTargets({0.1, 0.2, 0.3, -1.5, 2.25, 1e-3});

    stringstream buffer;
    XmlSerializer::serialize<MappingRestraintForce>(&force, "Force", buffer);
    MappingRestraintForce* copy = XmlSerializer::deserialize<MappingRestraintForce>(buffer);

    ASSERT_EQUAL(force.getForceGroup(), copy->getForceGroup());
    ASSERT_EQUAL(force.getName(), copy->getName());
    ASSERT_EQUAL(force.usesPeriodicBoundaryConditions(), copy->usesPeriodicBoundaryConditions());
    ASSERT_EQUAL(force.getNumGroups(), copy->getNumGroups());
    for (int g = 0; g < force.getNumGroups(); g++) {
        vector<int> atoms1, atoms2;
        vector<double> weights1, weights2;
        double k1, k2, r01, r02;
        force.getGroupParameters(g, atoms1, weights1, k1, r01);
        copy->getGroupParameters(g, atoms2, weights2, k2, r02);
        ASSERT_EQUAL_CONTAINERS(atoms1, atoms2);
        ASSERT_EQUAL_CONTAINERS(weights1, weights2);
        ASSERT_EQUAL(k1, k2);
        ASSERT_EQUAL(r01, r02);
    }
    ASSERT_EQUAL_CONTAINERS(force.getTargets(), copy->getTargets());
    delete copy;
}

int main() {
    try {
        testSerialization();
    }
    catch (const exception& e) {
        cout << "exception: " << e.what() << endl;
        return 1;
    }
    cout << "Done" << endl;
    return 0;
}
