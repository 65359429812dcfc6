#ifndef OPENMM_BACKMAP_MAPPINGRESTRAINTKERNELS_H_
#define OPENMM_BACKMAP_MAPPINGRESTRAINTKERNELS_H_

#include "MappingRestraintForce.h"
#include "openmm/KernelImpl.h"
#include "openmm/Platform.h"
#include "openmm/System.h"
#include <string>

namespace OpenMM {
class ContextImpl;
}

namespace BackmapPlugin {

/**
 * The kernel interface each platform implements for MappingRestraintForce.
 */
class CalcMappingRestraintForceKernel : public OpenMM::KernelImpl {
public:
    static std::string Name() {
        return "CalcMappingRestraintForce";
    }
    CalcMappingRestraintForceKernel(std::string name, const OpenMM::Platform& platform) : OpenMM::KernelImpl(name, platform) {
    }
    /** Initialise the kernel from the force (already checked against the System). */
    virtual void initialize(const OpenMM::System& system, const MappingRestraintForce& force) = 0;
    /** Add this force's contribution to the forces; return its energy. */
    virtual double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy) = 0;
    /**
     * Copy changed parameters (targets, k, r0, weights, group atoms) into the kernel; the number
     * of groups and the periodic setting are those it was initialised with (the ForceImpl checks).
     */
    virtual void copyParametersToContext(OpenMM::ContextImpl& context, const MappingRestraintForce& force) = 0;
};

} // namespace BackmapPlugin

#endif /*OPENMM_BACKMAP_MAPPINGRESTRAINTKERNELS_H_*/
