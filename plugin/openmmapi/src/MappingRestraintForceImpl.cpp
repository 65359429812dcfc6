#include "internal/MappingRestraintForceImpl.h"
#include "MappingRestraintKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include <sstream>

using namespace BackmapPlugin;
using namespace OpenMM;
using namespace std;

MappingRestraintForceImpl::MappingRestraintForceImpl(const MappingRestraintForce& owner) : owner(owner) {
}

MappingRestraintForceImpl::~MappingRestraintForceImpl() {
}

void MappingRestraintForceImpl::checkAtomsInRange(const MappingRestraintForce& force, int numParticles) {
    for (int g = 0; g < force.getNumGroups(); g++) {
        for (int atom : force.groups[g].atoms)
            if (atom < 0 || atom >= numParticles) {
                stringstream msg;
                msg << "MappingRestraintForce: group " << g << ": atom index " << atom
                    << " is out of range (the System has " << numParticles << " particles)";
                throw OpenMMException(msg.str());
            }
    }
}

void MappingRestraintForceImpl::initialize(ContextImpl& context) {
    const System& system = context.getSystem();
    checkAtomsInRange(owner, system.getNumParticles());
    kernel = context.getPlatform().createKernel(CalcMappingRestraintForceKernel::Name(), context);
    kernel.getAs<CalcMappingRestraintForceKernel>().initialize(system, owner);
}

double MappingRestraintForceImpl::calcForcesAndEnergy(ContextImpl& context, bool includeForces, bool includeEnergy, int groups) {
    if ((groups&(1<<owner.getForceGroup())) != 0)
        return kernel.getAs<CalcMappingRestraintForceKernel>().execute(context, includeForces, includeEnergy);
    return 0.0;
}

vector<string> MappingRestraintForceImpl::getKernelNames() {
    vector<string> names;
    names.push_back(CalcMappingRestraintForceKernel::Name());
    return names;
}

void MappingRestraintForceImpl::updateParametersInContext(ContextImpl& context) {
    checkAtomsInRange(owner, context.getSystem().getNumParticles());
    kernel.getAs<CalcMappingRestraintForceKernel>().copyParametersToContext(context, owner);
    context.systemChanged();
}
