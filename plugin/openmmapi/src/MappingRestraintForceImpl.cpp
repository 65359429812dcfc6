#include "internal/MappingRestraintForceImpl.h"
#include "MappingRestraintKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include <sstream>

using namespace BackmapPlugin;
using namespace OpenMM;
using namespace std;

MappingRestraintForceImpl::MappingRestraintForceImpl(const MappingRestraintForce& owner) :
        owner(owner), numGroups(owner.getNumGroups()), usePeriodic(owner.usesPeriodicBoundaryConditions()) {
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
    // In a periodic System the GPU platforms wrap each molecule into the box when they reorder
    // atoms, so centroids in absolute coordinates would jump by a box vector there; refuse on
    // every platform, so that a script behaves the same on CPU and GPU.
    if (system.usesPeriodicBoundaryConditions() && !owner.usesPeriodicBoundaryConditions())
        throw OpenMMException("MappingRestraintForce: the System uses periodic boundary conditions but this force does not; "
                              "call setUsesPeriodicBoundaryConditions(true) (centroids and targets are then taken as minimum images)");
    numGroups = owner.getNumGroups();
    usePeriodic = owner.usesPeriodicBoundaryConditions();
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
    // Checked here, once for every platform: the kernels size their arrays and compile their
    // periodic or non-periodic code when the Context is created.
    if (owner.getNumGroups() != numGroups) {
        stringstream msg;
        msg << "MappingRestraintForce.updateParametersInContext: the number of groups changed from " << numGroups
            << " to " << owner.getNumGroups() << "; groups cannot be added or removed in a Context (create a new one)";
        throw OpenMMException(msg.str());
    }
    if (owner.usesPeriodicBoundaryConditions() != usePeriodic)
        throw OpenMMException("MappingRestraintForce.updateParametersInContext: setUsesPeriodicBoundaryConditions() cannot "
                              "change in a Context (create a new one)");
    checkAtomsInRange(owner, context.getSystem().getNumParticles());
    kernel.getAs<CalcMappingRestraintForceKernel>().copyParametersToContext(context, owner);
    context.systemChanged();
}
