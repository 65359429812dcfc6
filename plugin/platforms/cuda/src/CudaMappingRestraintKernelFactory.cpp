// Registers the ComputeContext kernels of MappingRestraintForce (plugin/platforms/common) with
// OpenMM's CUDA platform.
#include "CommonMappingRestraintKernelFactory.h"
#include "openmm/cuda/CudaContext.h"
#include "openmm/cuda/CudaPlatform.h"
#include "openmm/internal/windowsExport.h"

using namespace BackmapPlugin;
using namespace OpenMM;

extern "C" OPENMM_EXPORT void registerPlatforms() {
}

extern "C" OPENMM_EXPORT void registerKernelFactories() {
    registerCommonMappingRestraintKernelFactory<CudaPlatform::PlatformData>("CUDA");
}

extern "C" OPENMM_EXPORT void registerBackmapCudaKernelFactories() {
    registerCommonMappingRestraintKernelFactory<CudaPlatform::PlatformData>("CUDA");
}
