// Registers the ComputeContext kernels of MappingRestraintForce (plugin/platforms/common) with
// OpenMM's OpenCL platform.
#include "CommonMappingRestraintKernelFactory.h"
#include "openmm/opencl/OpenCLContext.h"
#include "openmm/opencl/OpenCLPlatform.h"

using namespace BackmapPlugin;
using namespace OpenMM;

BACKMAP_KERNEL_ENTRY_POINT void registerPlatforms() {
}

BACKMAP_KERNEL_ENTRY_POINT void registerKernelFactories() {
    registerCommonMappingRestraintKernelFactory<OpenCLPlatform::PlatformData>("OpenCL");
}

BACKMAP_KERNEL_ENTRY_POINT void registerBackmapOpenCLKernelFactories() {
    registerCommonMappingRestraintKernelFactory<OpenCLPlatform::PlatformData>("OpenCL");
}
