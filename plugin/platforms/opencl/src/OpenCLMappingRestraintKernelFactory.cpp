// Registers the ComputeContext kernels of MappingRestraintForce (plugin/platforms/common) with
// OpenMM's OpenCL platform.
#include "CommonMappingRestraintKernels.h"
#include "openmm/KernelFactory.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/internal/windowsExport.h"
#include "openmm/opencl/OpenCLContext.h"
#include "openmm/opencl/OpenCLPlatform.h"

using namespace BackmapPlugin;
using namespace OpenMM;

namespace {
class OpenCLMappingRestraintKernelFactory : public KernelFactory {
public:
    KernelImpl* createKernelImpl(std::string name, const Platform& platform, ContextImpl& context) const {
        // Like OpenMM's own plugins, the force runs on the context's first device.
        OpenCLPlatform::PlatformData& data = *static_cast<OpenCLPlatform::PlatformData*>(context.getPlatformData());
        OpenCLContext& cl = *data.contexts[0];
        if (name == CalcMappingRestraintForceKernel::Name())
            return new CommonCalcMappingRestraintForceKernel(name, platform, cl);
        throw OpenMMException("OpenCLMappingRestraintKernelFactory: no kernel named "+name);
    }
};
}

extern "C" OPENMM_EXPORT void registerPlatforms() {
}

// The work of both entry points below, static so that a program linking several of these kernel
// libraries (the C++ tests) cannot interpose another library's registerKernelFactories.
static void registerFactories() {
    try {
        Platform& platform = Platform::getPlatformByName("OpenCL");
        platform.registerKernelFactory(CalcMappingRestraintForceKernel::Name(), new OpenCLMappingRestraintKernelFactory());
    }
    catch (std::exception& ex) {
        // No OpenCL platform in this process (no OpenCL driver): nothing to register.
    }
}

extern "C" OPENMM_EXPORT void registerKernelFactories() {
    registerFactories();
}

extern "C" OPENMM_EXPORT void registerBackmapOpenCLKernelFactories() {
    registerFactories();
}
