#ifndef OPENMM_BACKMAP_MAPPINGRESTRAINTFORCE_H_
#define OPENMM_BACKMAP_MAPPINGRESTRAINTFORCE_H_

/* openmm-backmap: a native OpenMM force restraining weighted centroids of atom groups to target
 * points (the CG beads a structure was backmapped from). */

#include "openmm/Context.h"
#include "openmm/Force.h"
#include "openmm/Vec3.h"
#include "internal/windowsExportBackmap.h"
#include <vector>

namespace BackmapPlugin {

/**
 * Restrains the weighted centroid c of each group of atoms to a target point t with a harmonic,
 * optionally flat-bottomed potential
 *
 *     E = 0.5 * k * max(0, |c - t| - r0)^2
 *
 * The force on the centroid is distributed to the atoms of the group in proportion to
 * weight_i / sum(weights).  With periodic boundary conditions (setUsesPeriodicBoundaryConditions)
 * the centroid is computed from positions made whole relative to the group's first atom
 * (minimum image), and c - t is taken as its minimum image.
 *
 * Targets are kept apart from the group definitions so that moving every bead between two
 * resolution switches is one setTargets() and one updateParametersInContext() call, with no new
 * Context.
 */
class OPENMM_EXPORT_BACKMAP MappingRestraintForce : public OpenMM::Force {
public:
    MappingRestraintForce();
    /** The number of groups (restrained centroids). */
    int getNumGroups() const {
        return groups.size();
    }
    /**
     * Add a group.  Its target starts at the origin; set targets with setTargets().
     *
     * @param atoms    indices of the atoms in the group (at least one)
     * @param weights  one non-negative weight per atom, with a positive sum; empty means equal weights
     * @param k        force constant, kJ/mol/nm^2 (>= 0)
     * @param r0       flat-bottom radius, nm (>= 0); 0 gives a plain harmonic restraint
     * @return the index of the new group
     */
    int addGroup(const std::vector<int>& atoms, const std::vector<double>& weights, double k, double r0=0.0);
    /** Get the definition of a group (the weights as given, empty if equal weights were asked for). */
    void getGroupParameters(int index, std::vector<int>& atoms, std::vector<double>& weights, double& k, double& r0) const;
    /** Change the definition of a group; checked as in addGroup(). */
    void setGroupParameters(int index, const std::vector<int>& atoms, const std::vector<double>& weights, double k, double r0=0.0);
    /**
     * Set the targets of all groups at once: x, y, z of group 0, then group 1, ... (nm), so
     * exactly 3*getNumGroups() finite values.
     */
    void setTargets(const std::vector<double>& targets);
    /** The targets of all groups, flattened as in setTargets(). */
    std::vector<double> getTargets() const {
        return targets;
    }
    /** Set the target of one group (nm). */
    void setTarget(int index, const OpenMM::Vec3& target);
    /** Get the target of one group (nm). */
    OpenMM::Vec3 getTarget(int index) const;
    /**
     * Copy targets, force constants, flat-bottom radii and weights into a Context that already
     * holds this force, without reinitialising it.  The number of groups must not change.
     */
    void updateParametersInContext(OpenMM::Context& context);
    /** Whether centroids and centroid-target vectors use the minimum image convention. */
    bool usesPeriodicBoundaryConditions() const {
        return usePeriodic;
    }
    void setUsesPeriodicBoundaryConditions(bool periodic) {
        usePeriodic = periodic;
    }
    /** Check a group definition; throws an OpenMMException naming the group and the fault. */
    static void checkGroup(int index, const std::vector<int>& atoms, const std::vector<double>& weights, double k, double r0);
    /**
     * All groups in compressed form, for kernels: the atoms of group g are
     * atoms[offsets[g]] ... atoms[offsets[g+1]-1] with weights summing to 1.  @private
     */
    void getFlattenedGroups(std::vector<int>& offsets, std::vector<int>& atoms, std::vector<double>& normalizedWeights,
                            std::vector<double>& k, std::vector<double>& r0) const;
protected:
    OpenMM::ForceImpl* createImpl() const;
private:
    friend class MappingRestraintForceImpl;
    class GroupInfo;
    std::vector<GroupInfo> groups;
    std::vector<double> targets;
    bool usePeriodic;
};

/** @private */
class MappingRestraintForce::GroupInfo {
public:
    std::vector<int> atoms;
    std::vector<double> weights;
    double k, r0;
    GroupInfo() : k(0.0), r0(0.0) {
    }
    GroupInfo(const std::vector<int>& atoms, const std::vector<double>& weights, double k, double r0) :
        atoms(atoms), weights(weights), k(k), r0(r0) {
    }
};

} // namespace BackmapPlugin

#endif /*OPENMM_BACKMAP_MAPPINGRESTRAINTFORCE_H_*/
