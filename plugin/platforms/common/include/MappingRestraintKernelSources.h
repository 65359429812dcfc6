#ifndef OPENMM_BACKMAP_MAPPINGRESTRAINTKERNELSOURCES_H_
#define OPENMM_BACKMAP_MAPPINGRESTRAINTKERNELSOURCES_H_

#include <string>

namespace BackmapPlugin {

/**
 * The source code of the GPU kernels (plugin/platforms/common/src/kernels/*.cc), embedded by
 * CMake at build time (MappingRestraintKernelSources.cpp.in).
 */
class MappingRestraintKernelSources {
public:
    static const std::string mappingRestraint;
};

} // namespace BackmapPlugin

#endif /*OPENMM_BACKMAP_MAPPINGRESTRAINTKERNELSOURCES_H_*/
