#ifndef OPENMM_BACKMAP_MAPPINGRESTRAINTFORCEIMPL_H_
#define OPENMM_BACKMAP_MAPPINGRESTRAINTFORCEIMPL_H_

#include "MappingRestraintForce.h"
#include "openmm/Kernel.h"
#include "openmm/internal/ForceImpl.h"
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace BackmapPlugin {

/** The ForceImpl of MappingRestraintForce: checks it against the System and drives its kernel. */
class OPENMM_EXPORT_BACKMAP MappingRestraintForceImpl : public OpenMM::ForceImpl {
public:
    MappingRestraintForceImpl(const MappingRestraintForce& owner);
    ~MappingRestraintForceImpl();
    void initialize(OpenMM::ContextImpl& context);
    const MappingRestraintForce& getOwner() const {
        return owner;
    }
    void updateContextState(OpenMM::ContextImpl& context, bool& forcesInvalid) {
        // The restraint never changes the state.
    }
    double calcForcesAndEnergy(OpenMM::ContextImpl& context, bool includeForces, bool includeEnergy, int groups);
    std::map<std::string, double> getDefaultParameters() {
        return std::map<std::string, double>();
    }
    std::vector<std::string> getKernelNames();
    void updateParametersInContext(OpenMM::ContextImpl& context);
    /** Throws an OpenMMException naming the first group with an atom outside [0, numParticles). */
    static void checkAtomsInRange(const MappingRestraintForce& force, int numParticles);
private:
    const MappingRestraintForce& owner;
    OpenMM::Kernel kernel;
    // What a Context fixes when it is created; updateParametersInContext refuses to change them.
    int numGroups;
    bool usePeriodic;
};

} // namespace BackmapPlugin

#endif /*OPENMM_BACKMAP_MAPPINGRESTRAINTFORCEIMPL_H_*/
