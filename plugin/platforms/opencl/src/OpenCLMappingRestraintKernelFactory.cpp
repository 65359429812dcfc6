// Registers the ComputeContext kernels of MappingRestraintForce (plugin/platforms/common) with
// OpenMM's OpenCL platform.
#include "CommonMappingRestraintKernelFactory.h"
#include "openmm/internal/windowsExport.h"
#include "openmm/opencl/OpenCLContext.h"
#include "openmm/opencl/OpenCLPlatform.h"

using namespace BackmapPlugin;
using namespace OpenMM;

extern "C" OPENMM_EXPORT void registerPlatforms() {
}

extern "C" OPENMM_EXPORT void registerKernelFactories() {
    registerCommonMappingRestraintKernelFactory<OpenCLPlatform::PlatformData>("OpenCL");
}

extern "C" OPENMM_EXPORT void registerBackmapOpenCLKernelFactories() {
    registerCommonMappingRestraintKernelFactory<OpenCLPlatform::PlatformData>("OpenCL");
}
