#include "MappingRestraintForce.h"
#include "MappingRestraintForceProxy.h"
#include "openmm/serialization/SerializationProxy.h"
#include <typeinfo>

using namespace BackmapPlugin;
using namespace OpenMM;

// Runs when the library is loaded, so that XmlSerializer knows the force as soon as the Python
// module (or any program linked against the library) is.
extern "C" OPENMM_EXPORT_BACKMAP void registerBackmapSerializationProxies();

namespace {
struct ProxyRegistration {
    ProxyRegistration() {
        registerBackmapSerializationProxies();
    }
} registration;
}

extern "C" OPENMM_EXPORT_BACKMAP void registerBackmapSerializationProxies() {
    SerializationProxy::registerProxy(typeid(MappingRestraintForce), new MappingRestraintForceProxy());
}
