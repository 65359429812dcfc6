#include "MappingRestraintForceProxy.h"
#include "MappingRestraintForce.h"
#include "openmm/OpenMMException.h"
#include "openmm/serialization/SerializationNode.h"
#include <sstream>

using namespace BackmapPlugin;
using namespace OpenMM;
using namespace std;

MappingRestraintForceProxy::MappingRestraintForceProxy() : SerializationProxy("MappingRestraintForce") {
}

void MappingRestraintForceProxy::serialize(const void* object, SerializationNode& node) const {
    node.setIntProperty("version", 1);
    const MappingRestraintForce& force = *reinterpret_cast<const MappingRestraintForce*>(object);
    node.setIntProperty("forceGroup", force.getForceGroup());
    node.setStringProperty("name", force.getName());
    node.setBoolProperty("usesPeriodic", force.usesPeriodicBoundaryConditions());
    SerializationNode& groups = node.createChildNode("Groups");
    vector<int> atoms;
    vector<double> weights;
    double k, r0;
    for (int g = 0; g < force.getNumGroups(); g++) {
        force.getGroupParameters(g, atoms, weights, k, r0);
        Vec3 target = force.getTarget(g);
        SerializationNode& group = groups.createChildNode("Group");
        group.setDoubleProperty("k", k).setDoubleProperty("r0", r0);
        group.setDoubleProperty("x", target[0]).setDoubleProperty("y", target[1]).setDoubleProperty("z", target[2]);
        group.setBoolProperty("equalWeights", weights.empty());
        for (int i = 0; i < (int) atoms.size(); i++) {
            SerializationNode& atom = group.createChildNode("Atom").setIntProperty("index", atoms[i]);
            if (!weights.empty())
                atom.setDoubleProperty("weight", weights[i]);
        }
    }
}

void* MappingRestraintForceProxy::deserialize(const SerializationNode& node) const {
    int version = node.getIntProperty("version");
    if (version != 1) {
        stringstream msg;
        msg << "MappingRestraintForce: unsupported serialization version " << version;
        throw OpenMMException(msg.str());
    }
    MappingRestraintForce* force = new MappingRestraintForce();
    try {
        force->setForceGroup(node.getIntProperty("forceGroup", 0));
        force->setName(node.getStringProperty("name", force->getName()));
        force->setUsesPeriodicBoundaryConditions(node.getBoolProperty("usesPeriodic", false));
        const SerializationNode& groups = node.getChildNode("Groups");
        vector<double> targets;
        for (const SerializationNode& group : groups.getChildren()) {
            bool equalWeights = group.getBoolProperty("equalWeights", false);
            vector<int> atoms;
            vector<double> weights;
            for (const SerializationNode& atom : group.getChildren()) {
                atoms.push_back(atom.getIntProperty("index"));
                if (!equalWeights)
                    weights.push_back(atom.getDoubleProperty("weight"));
            }
            force->addGroup(atoms, weights, group.getDoubleProperty("k"), group.getDoubleProperty("r0", 0.0));
            targets.push_back(group.getDoubleProperty("x"));
            targets.push_back(group.getDoubleProperty("y"));
            targets.push_back(group.getDoubleProperty("z"));
        }
        force->setTargets(targets);
    }
    catch (...) {
        delete force;
        throw;
    }
    return force;
}
