#include "MappingRestraintForce.h"
#include "internal/MappingRestraintForceImpl.h"
#include "openmm/OpenMMException.h"
#include <cmath>
#include <sstream>

using namespace BackmapPlugin;
using namespace OpenMM;
using namespace std;

MappingRestraintForce::MappingRestraintForce() : usePeriodic(false) {
}

void MappingRestraintForce::checkGroup(int index, const vector<int>& atoms, const vector<double>& weights, double k, double r0) {
    stringstream prefix;
    prefix << "MappingRestraintForce: group " << index << ": ";
    if (atoms.empty())
        throw OpenMMException(prefix.str()+"the group has no atoms");
    for (int atom : atoms)
        if (atom < 0) {
            stringstream msg;
            msg << prefix.str() << "atom index " << atom << " is negative";
            throw OpenMMException(msg.str());
        }
    if (!weights.empty()) {
        if (weights.size() != atoms.size()) {
            stringstream msg;
            msg << prefix.str() << atoms.size() << " atoms but " << weights.size() << " weights";
            throw OpenMMException(msg.str());
        }
        double sum = 0.0;
        for (double w : weights) {
            if (!(w >= 0.0) || !std::isfinite(w)) {
                stringstream msg;
                msg << prefix.str() << "weight " << w << " is negative or not finite";
                throw OpenMMException(msg.str());
            }
            sum += w;
        }
        if (sum <= 0.0)
            throw OpenMMException(prefix.str()+"the weights sum to zero");
    }
    if (!(k >= 0.0) || !std::isfinite(k)) {
        stringstream msg;
        msg << prefix.str() << "the force constant k = " << k << " is negative or not finite";
        throw OpenMMException(msg.str());
    }
    if (!(r0 >= 0.0) || !std::isfinite(r0)) {
        stringstream msg;
        msg << prefix.str() << "the flat-bottom radius r0 = " << r0 << " is negative or not finite";
        throw OpenMMException(msg.str());
    }
}

static void checkIndex(int index, int numGroups, const char* method) {
    if (index < 0 || index >= numGroups) {
        stringstream msg;
        msg << "MappingRestraintForce." << method << ": group " << index << " does not exist (the force has "
            << numGroups << " groups)";
        throw OpenMMException(msg.str());
    }
}

int MappingRestraintForce::addGroup(const vector<int>& atoms, const vector<double>& weights, double k, double r0) {
    checkGroup(groups.size(), atoms, weights, k, r0);
    groups.push_back(GroupInfo(atoms, weights, k, r0));
    targets.resize(targets.size()+3, 0.0);
    return groups.size()-1;
}

void MappingRestraintForce::getGroupParameters(int index, vector<int>& atoms, vector<double>& weights, double& k, double& r0) const {
    checkIndex(index, groups.size(), "getGroupParameters");
    const GroupInfo& group = groups[index];
    atoms = group.atoms;
    weights = group.weights;
    k = group.k;
    r0 = group.r0;
}

void MappingRestraintForce::setGroupParameters(int index, const vector<int>& atoms, const vector<double>& weights, double k, double r0) {
    checkIndex(index, groups.size(), "setGroupParameters");
    checkGroup(index, atoms, weights, k, r0);
    groups[index] = GroupInfo(atoms, weights, k, r0);
}

void MappingRestraintForce::setTargets(const vector<double>& newTargets) {
    if (newTargets.size() != 3*groups.size()) {
        stringstream msg;
        msg << "MappingRestraintForce.setTargets: expected " << 3*groups.size() << " values (x, y, z for each of "
            << groups.size() << " groups), got " << newTargets.size();
        if (newTargets.size()%3 == 0)
            msg << " (targets for " << newTargets.size()/3 << " groups)";
        throw OpenMMException(msg.str());
    }
    for (size_t i = 0; i < newTargets.size(); i++)
        if (!std::isfinite(newTargets[i])) {
            stringstream msg;
            msg << "MappingRestraintForce.setTargets: group " << i/3 << ": the target is not finite";
            throw OpenMMException(msg.str());
        }
    targets = newTargets;
}

void MappingRestraintForce::setTarget(int index, const Vec3& target) {
    checkIndex(index, groups.size(), "setTarget");
    for (int i = 0; i < 3; i++)
        if (!std::isfinite(target[i])) {
            stringstream msg;
            msg << "MappingRestraintForce.setTarget: group " << index << ": the target is not finite";
            throw OpenMMException(msg.str());
        }
    targets[3*index] = target[0];
    targets[3*index+1] = target[1];
    targets[3*index+2] = target[2];
}

Vec3 MappingRestraintForce::getTarget(int index) const {
    checkIndex(index, groups.size(), "getTarget");
    return Vec3(targets[3*index], targets[3*index+1], targets[3*index+2]);
}

void MappingRestraintForce::getFlattenedGroups(vector<int>& offsets, vector<int>& atoms, vector<double>& normalizedWeights,
                                               vector<double>& k, vector<double>& r0) const {
    int numGroups = groups.size();
    offsets.resize(numGroups+1);
    k.resize(numGroups);
    r0.resize(numGroups);
    offsets[0] = 0;
    for (int g = 0; g < numGroups; g++)
        offsets[g+1] = offsets[g]+groups[g].atoms.size();
    atoms.resize(offsets[numGroups]);
    normalizedWeights.resize(offsets[numGroups]);
    for (int g = 0; g < numGroups; g++) {
        const GroupInfo& group = groups[g];
        int n = group.atoms.size();
        double sum = 0.0;
        for (int i = 0; i < n; i++)
            sum += (group.weights.empty() ? 1.0 : group.weights[i]);
        for (int i = 0; i < n; i++) {
            atoms[offsets[g]+i] = group.atoms[i];
            normalizedWeights[offsets[g]+i] = (group.weights.empty() ? 1.0 : group.weights[i])/sum;
        }
        k[g] = group.k;
        r0[g] = group.r0;
    }
}

ForceImpl* MappingRestraintForce::createImpl() const {
    return new MappingRestraintForceImpl(*this);
}

void MappingRestraintForce::updateParametersInContext(Context& context) {
    dynamic_cast<MappingRestraintForceImpl&>(getImplInContext(context)).updateParametersInContext(getContextImpl(context));
}
