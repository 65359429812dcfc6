#ifndef OPENMM_WINDOWSEXPORTBACKMAP_H_
#define OPENMM_WINDOWSEXPORTBACKMAP_H_

/* Symbol export for the openmm-backmap plugin libraries, as OpenMM's own windowsExport.h. */

#ifdef _MSC_VER
    #pragma warning(disable:4996)
    #pragma warning(disable:4251)
    #if defined(OPENMM_BACKMAP_BUILDING_SHARED_LIBRARY)
        #define OPENMM_EXPORT_BACKMAP __declspec(dllexport)
    #else
        #define OPENMM_EXPORT_BACKMAP __declspec(dllimport)
    #endif
#else
    #define OPENMM_EXPORT_BACKMAP __attribute__((visibility("default")))
#endif

#endif /*OPENMM_WINDOWSEXPORTBACKMAP_H_*/
