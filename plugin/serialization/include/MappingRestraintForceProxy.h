#ifndef OPENMM_BACKMAP_MAPPINGRESTRAINTFORCEPROXY_H_
#define OPENMM_BACKMAP_MAPPINGRESTRAINTFORCEPROXY_H_

#include "internal/windowsExportBackmap.h"
#include "openmm/serialization/SerializationProxy.h"

namespace BackmapPlugin {

/** XML (de)serialization of MappingRestraintForce through OpenMM's XmlSerializer. */
class OPENMM_EXPORT_BACKMAP MappingRestraintForceProxy : public OpenMM::SerializationProxy {
public:
    MappingRestraintForceProxy();
    void serialize(const void* object, OpenMM::SerializationNode& node) const;
    void* deserialize(const OpenMM::SerializationNode& node) const;
};

} // namespace BackmapPlugin

#endif /*OPENMM_BACKMAP_MAPPINGRESTRAINTFORCEPROXY_H_*/
