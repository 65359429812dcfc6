// Registers the ComputeContext kernels of MappingRestraintForce (plugin/platforms/common) with
// OpenMM's CUDA platform.
#include "CommonMappingRestraintKernelFactory.h"
#include "openmm/cuda/CudaContext.h"
#include "openmm/cuda/CudaPlatform.h"

using namespace BackmapPlugin;
using namespace OpenMM;

BACKMAP_KERNEL_ENTRY_POINT void registerPlatforms() {
}

BACKMAP_KERNEL_ENTRY_POINT void registerKernelFactories() {
    registerCommonMappingRestraintKernelFactory<CudaPlatform::PlatformData>("CUDA");
}

BACKMAP_KERNEL_ENTRY_POINT void registerBackmapCudaKernelFactories() {
    registerCommonMappingRestraintKernelFactory<CudaPlatform::PlatformData>("CUDA");
}
