#ifndef OPENMM_BACKMAP_REFERENCEMAPPINGRESTRAINTKERNELS_H_
#define OPENMM_BACKMAP_REFERENCEMAPPINGRESTRAINTKERNELS_H_

#include "MappingRestraintKernels.h"
#include "openmm/Vec3.h"
#include <vector>

namespace BackmapPlugin {

/** MappingRestraintForce on the Reference platform (and on CPU, whose Context data it shares). */
class ReferenceCalcMappingRestraintForceKernel : public CalcMappingRestraintForceKernel {
public:
    ReferenceCalcMappingRestraintForceKernel(std::string name, const OpenMM::Platform& platform) :
        CalcMappingRestraintForceKernel(name, platform), usePeriodic(false) {
    }
    void initialize(const OpenMM::System& system, const MappingRestraintForce& force);
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy);
    void copyParametersToContext(OpenMM::ContextImpl& context, const MappingRestraintForce& force);
private:
    void copyParameters(const MappingRestraintForce& force);
    std::vector<int> offsets, atoms;
    std::vector<double> weights, k, r0, targets;
    bool usePeriodic;
};

} // namespace BackmapPlugin

#endif /*OPENMM_BACKMAP_REFERENCEMAPPINGRESTRAINTKERNELS_H_*/
