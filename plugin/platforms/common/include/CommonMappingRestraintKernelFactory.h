#ifndef OPENMM_BACKMAP_COMMONMAPPINGRESTRAINTKERNELFACTORY_H_
#define OPENMM_BACKMAP_COMMONMAPPINGRESTRAINTKERNELFACTORY_H_

#include "CommonMappingRestraintKernels.h"
#include "openmm/KernelFactory.h"
#include "openmm/OpenMMException.h"
#include "openmm/Platform.h"
#include "openmm/internal/ContextImpl.h"
#include <exception>
#include <string>

// The GPU kernel libraries are built with hidden visibility (both would otherwise export the
// same common classes and kernel source string); only their OpenMM entry points are exported.
#if defined(_MSC_VER)
    #define BACKMAP_KERNEL_ENTRY_POINT extern "C" __declspec(dllexport)
#else
    #define BACKMAP_KERNEL_ENTRY_POINT extern "C" __attribute__((visibility("default")))
#endif

namespace BackmapPlugin {

/**
 * Creates the ComputeContext kernels of MappingRestraintForce on one GPU platform: PlatformData
 * is the platform's (OpenCLPlatform::PlatformData, CudaPlatform::PlatformData), whose first
 * context runs the force, as in OpenMM's own plugins.
 */
template <class PlatformData>
class CommonMappingRestraintKernelFactory : public OpenMM::KernelFactory {
public:
    OpenMM::KernelImpl* createKernelImpl(std::string name, const OpenMM::Platform& platform, OpenMM::ContextImpl& context) const {
        PlatformData& data = *static_cast<PlatformData*>(context.getPlatformData());
        if (name == CalcMappingRestraintForceKernel::Name())
            return new CommonCalcMappingRestraintForceKernel(name, platform, *data.contexts[0]);
        throw OpenMM::OpenMMException("MappingRestraintForce: no kernel named "+name+" for the "+platform.getName()+" platform");
    }
};

/** Register the factory with the platform called platformName, if this process has it (a driver). */
template <class PlatformData>
void registerCommonMappingRestraintKernelFactory(const std::string& platformName) {
    try {
        OpenMM::Platform& platform = OpenMM::Platform::getPlatformByName(platformName);
        platform.registerKernelFactory(CalcMappingRestraintForceKernel::Name(), new CommonMappingRestraintKernelFactory<PlatformData>());
    }
    catch (std::exception& ex) {
        // No such platform in this process: nothing to register.
    }
}

} // namespace BackmapPlugin

#endif /*OPENMM_BACKMAP_COMMONMAPPINGRESTRAINTKERNELFACTORY_H_*/
