#include "CommonMappingRestraintKernels.h"
#include "MappingRestraintKernelSources.h"
#include "openmm/common/CommonKernelUtilities.h"
#include "openmm/common/ComputeForceInfo.h"
#include "openmm/common/ComputeVectorTypes.h"
#include "openmm/common/ContextSelector.h"
#include <map>
#include <set>

using namespace BackmapPlugin;
using namespace OpenMM;
using namespace std;

/**
 * Tells the context which atoms must stay where they are when it reorders molecules: every atom
 * of a group is restrained to its own target, so no two are interchangeable (two identical
 * lipids restrained to different beads must not swap), and each group is kept in one piece.
 * It answers from the groups as uploaded to the device (the kernel's host copies), not from the
 * Force, which may have been edited since. Restrained molecules are therefore never reordered: a
 * restraint on every solvent molecule gives up the spatial sorting that speeds up nonbonded
 * forces.
 */
class CommonCalcMappingRestraintForceKernel::ForceInfo : public ComputeForceInfo {
public:
    ForceInfo(const vector<int>& offsets, const vector<int>& atoms) : offsets(offsets), atoms(atoms) {
        updateRestrainedAtoms();
    }
    void updateRestrainedAtoms() {
        restrained = set<int>(atoms.begin(), atoms.end());
    }
    bool areParticlesIdentical(int particle1, int particle2) {
        return particle1 == particle2 || (restrained.count(particle1) == 0 && restrained.count(particle2) == 0);
    }
    int getNumParticleGroups() {
        return offsets.size()-1;
    }
    void getParticlesInGroup(int index, vector<int>& particles) {
        particles.assign(atoms.begin()+offsets[index], atoms.begin()+offsets[index+1]);
    }
    bool areGroupsIdentical(int group1, int group2) {
        return group1 == group2;
    }
private:
    const vector<int>& offsets;
    const vector<int>& atoms;
    set<int> restrained;
};

void CommonCalcMappingRestraintForceKernel::initialize(const System& system, const MappingRestraintForce& force) {
    ContextSelector selector(cc);
    numGroups = force.getNumGroups();
    if (numGroups == 0)
        return;
    int elementSize = (cc.getUseDoublePrecision() ? sizeof(double) : sizeof(float));
    offsets.initialize<int>(cc, numGroups+1, "mappingRestraintOffsets");
    atoms.initialize<int>(cc, 1, "mappingRestraintAtoms");
    weights.initialize(cc, 1, elementSize, "mappingRestraintWeights");
    targets.initialize(cc, numGroups, 4*elementSize, "mappingRestraintTargets");
    flatBottom.initialize(cc, numGroups, elementSize, "mappingRestraintFlatBottom");
    uploadParameters(force);
    info = new ForceInfo(hostOffsets, hostAtoms);
    cc.addForce(info);

    map<string, string> defines;
    defines["PADDED_NUM_ATOMS"] = cc.intToString(cc.getPaddedNumAtoms());
    if (force.usesPeriodicBoundaryConditions())
        defines["USE_PERIODIC"] = "1";
    ComputeProgram program = cc.compileProgram(MappingRestraintKernelSources::mappingRestraint, defines);
    kernel = program->createKernel("computeMappingRestraint");
    kernel->addArg(numGroups);
    kernel->addArg(cc.getPosq());
    kernel->addArg(offsets);
    kernel->addArg(atoms);
    kernel->addArg(weights);
    kernel->addArg(targets);
    kernel->addArg(flatBottom);
    kernel->addArg(cc.getLongForceBuffer());
    for (int i = 0; i < 6; i++)
        kernel->addArg(); // the energy buffer and the periodic box, set before each execution
}

bool CommonCalcMappingRestraintForceKernel::uploadParameters(const MappingRestraintForce& force) {
    vector<int> newOffsets, newAtoms;
    vector<double> newWeights, k, r0;
    force.getFlattenedGroups(newOffsets, newAtoms, newWeights, k, r0);
    bool membershipChanged = (newOffsets != hostOffsets || newAtoms != hostAtoms);
    if (membershipChanged) {
        if (atoms.getSize() != newAtoms.size()) {
            atoms.resize(newAtoms.size());
            weights.resize(newAtoms.size());
        }
        offsets.upload(newOffsets);
        atoms.upload(newAtoms);
        hostOffsets.swap(newOffsets);
        hostAtoms.swap(newAtoms);
    }
    weights.upload(newWeights, true);
    const vector<double> flatTargets = force.getTargets();
    vector<mm_double4> targetsAndK(numGroups);
    for (int g = 0; g < numGroups; g++)
        targetsAndK[g] = mm_double4(flatTargets[3*g], flatTargets[3*g+1], flatTargets[3*g+2], k[g]);
    targets.upload(targetsAndK, true);
    flatBottom.upload(r0, true);
    return membershipChanged;
}

double CommonCalcMappingRestraintForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
    if (numGroups == 0)
        return 0.0;
    ContextSelector selector(cc);
    kernel->setArg(8, cc.getEnergyBuffer());
    setPeriodicBoxArgs(cc, kernel, 9);
    kernel->execute(numGroups);
    return 0.0; // the energy is in the context's energy buffer
}

void CommonCalcMappingRestraintForceKernel::copyParametersToContext(ContextImpl& context, const MappingRestraintForce& force) {
    if (numGroups == 0)
        return;
    ContextSelector selector(cc);
    if (uploadParameters(force)) {
        // Which atoms may be swapped in a reordering depends on the groups.
        info->updateRestrainedAtoms();
        cc.invalidateMolecules(info);
    }
}
