#ifndef OPENMM_BACKMAP_COMMONMAPPINGRESTRAINTKERNELS_H_
#define OPENMM_BACKMAP_COMMONMAPPINGRESTRAINTKERNELS_H_

#include "MappingRestraintKernels.h"
#include "openmm/common/ComputeArray.h"
#include "openmm/common/ComputeContext.h"
#include "openmm/common/ComputeKernel.h"
#include <vector>

namespace BackmapPlugin {

/**
 * MappingRestraintForce on the platforms built on OpenMM's ComputeContext (OpenCL, CUDA): the
 * same kernel source serves both, each platform library compiles this file against its own
 * context (plugin/platforms/opencl, plugin/platforms/cuda).
 */
class CommonCalcMappingRestraintForceKernel : public CalcMappingRestraintForceKernel {
public:
    CommonCalcMappingRestraintForceKernel(std::string name, const OpenMM::Platform& platform, OpenMM::ComputeContext& cc) :
        CalcMappingRestraintForceKernel(name, platform), cc(cc), info(NULL), numGroups(0) {
    }
    void initialize(const OpenMM::System& system, const MappingRestraintForce& force);
    double execute(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy);
    void copyParametersToContext(OpenMM::ContextImpl& context, const MappingRestraintForce& force);
private:
    class ForceInfo;
    /** Upload groups, weights, targets, k and r0; returns whether the group membership changed. */
    bool uploadParameters(const MappingRestraintForce& force);
    OpenMM::ComputeContext& cc;
    ForceInfo* info;
    int numGroups;
    std::vector<int> hostOffsets, hostAtoms;
    OpenMM::ComputeArray offsets, atoms, weights, targets, flatBottom;
    OpenMM::ComputeKernel kernel;
};

} // namespace BackmapPlugin

#endif /*OPENMM_BACKMAP_COMMONMAPPINGRESTRAINTKERNELS_H_*/
