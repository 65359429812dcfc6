#include "ReferenceMappingRestraintKernelFactory.h"
#include "ReferenceMappingRestraintKernels.h"
#include "openmm/OpenMMException.h"
#include "openmm/internal/windowsExport.h"
#include "openmm/reference/ReferencePlatform.h"

using namespace BackmapPlugin;
using namespace OpenMM;

extern "C" OPENMM_EXPORT void registerPlatforms() {
}

// The CPU platform derives from the Reference platform and keeps positions and forces in the
// same PlatformData, so the Reference kernel serves both. The work of both entry points below,
// static so that a program linking several of these kernel libraries (the C++ tests) cannot
// interpose another library's registerKernelFactories.
static void registerFactories() {
    for (int i = 0; i < Platform::getNumPlatforms(); i++) {
        Platform& platform = Platform::getPlatform(i);
        if (platform.getName() == "Reference" || platform.getName() == "CPU" || dynamic_cast<ReferencePlatform*>(&platform) != NULL)
            platform.registerKernelFactory(CalcMappingRestraintForceKernel::Name(), new ReferenceMappingRestraintKernelFactory());
    }
}

extern "C" OPENMM_EXPORT void registerKernelFactories() {
    registerFactories();
}

extern "C" OPENMM_EXPORT void registerBackmapReferenceKernelFactories() {
    registerFactories();
}

KernelImpl* ReferenceMappingRestraintKernelFactory::createKernelImpl(std::string name, const Platform& platform, ContextImpl& context) const {
    if (name == CalcMappingRestraintForceKernel::Name())
        return new ReferenceCalcMappingRestraintForceKernel(name, platform);
    throw OpenMMException((std::string("ReferenceMappingRestraintKernelFactory: no kernel named ")+name).c_str());
}
