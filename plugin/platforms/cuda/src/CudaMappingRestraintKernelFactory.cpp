// Registers the ComputeContext kernels of MappingRestraintForce (plugin/platforms/common) with
// OpenMM's CUDA platform.
#include "CommonMappingRestraintKernels.h"
#include "openmm/KernelFactory.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/internal/windowsExport.h"
#include "openmm/cuda/CudaContext.h"
#include "openmm/cuda/CudaPlatform.h"

using namespace BackmapPlugin;
using namespace OpenMM;

namespace {
class CudaMappingRestraintKernelFactory : public KernelFactory {
public:
    KernelImpl* createKernelImpl(std::string name, const Platform& platform, ContextImpl& context) const {
        // Like OpenMM's own plugins, the force runs on the context's first device.
        CudaPlatform::PlatformData& data = *static_cast<CudaPlatform::PlatformData*>(context.getPlatformData());
        CudaContext& cu = *data.contexts[0];
        if (name == CalcMappingRestraintForceKernel::Name())
            return new CommonCalcMappingRestraintForceKernel(name, platform, cu);
        throw OpenMMException("CudaMappingRestraintKernelFactory: no kernel named "+name);
    }
};
}

extern "C" OPENMM_EXPORT void registerPlatforms() {
}

// The work of both entry points below, static so that a program linking several of these kernel
// libraries (the C++ tests) cannot interpose another library's registerKernelFactories.
static void registerFactories() {
    try {
        Platform& platform = Platform::getPlatformByName("CUDA");
        platform.registerKernelFactory(CalcMappingRestraintForceKernel::Name(), new CudaMappingRestraintKernelFactory());
    }
    catch (std::exception& ex) {
        // No CUDA platform in this process (no CUDA driver): nothing to register.
    }
}

extern "C" OPENMM_EXPORT void registerKernelFactories() {
    registerFactories();
}

extern "C" OPENMM_EXPORT void registerBackmapCudaKernelFactories() {
    registerFactories();
}
