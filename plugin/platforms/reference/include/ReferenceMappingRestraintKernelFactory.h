#ifndef OPENMM_BACKMAP_REFERENCEMAPPINGRESTRAINTKERNELFACTORY_H_
#define OPENMM_BACKMAP_REFERENCEMAPPINGRESTRAINTKERNELFACTORY_H_

#include "openmm/KernelFactory.h"

namespace BackmapPlugin {

/** Creates the Reference kernels of MappingRestraintForce; serves the Reference and CPU platforms. */
class ReferenceMappingRestraintKernelFactory : public OpenMM::KernelFactory {
public:
    OpenMM::KernelImpl* createKernelImpl(std::string name, const OpenMM::Platform& platform, OpenMM::ContextImpl& context) const;
};

} // namespace BackmapPlugin

#endif /*OPENMM_BACKMAP_REFERENCEMAPPINGRESTRAINTKERNELFACTORY_H_*/
