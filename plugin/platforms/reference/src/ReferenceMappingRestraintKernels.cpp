#include "ReferenceMappingRestraintKernels.h"
#include "openmm/internal/ContextImpl.h"
#include "openmm/reference/ReferencePlatform.h"
#include <cmath>

using namespace BackmapPlugin;
using namespace OpenMM;
using namespace std;

static ReferencePlatform::PlatformData& getPlatformData(ContextImpl& context) {
    return *reinterpret_cast<ReferencePlatform::PlatformData*>(context.getPlatformData());
}

// Nearest integer, branch-free and without a libm call (floor is a call unless SSE4.1 is
// enabled, and it dominated the periodic case): adding and subtracting 1.5*2^52 rounds to the
// nearest integer for |x| < 2^51, far beyond any displacement in box lengths. Needs strict IEEE
// arithmetic, so -ffast-math builds take floor.
static inline double nearestInteger(double x) {
#ifdef __FAST_MATH__
    return floor(x+0.5);
#else
    const double magic = 6755399441055744.0;
    return (x+magic)-magic;
#endif
}

// Minimum image of a displacement in a box in OpenMM's reduced (lower triangular) form.
namespace {
struct MinimumImage {
    Vec3 a, b, c, inverse;
    bool triclinic;
    MinimumImage(const Vec3* box) : a(box[0]), b(box[1]), c(box[2]),
            inverse(1.0/box[0][0], 1.0/box[1][1], 1.0/box[2][2]),
            triclinic(box[1][0] != 0.0 || box[2][0] != 0.0 || box[2][1] != 0.0) {
    }
    inline void apply(Vec3& d) const {
        if (triclinic) {
            d -= c*nearestInteger(d[2]*inverse[2]);
            d -= b*nearestInteger(d[1]*inverse[1]);
            d -= a*nearestInteger(d[0]*inverse[0]);
        }
        else {
            d[0] -= a[0]*nearestInteger(d[0]*inverse[0]);
            d[1] -= b[1]*nearestInteger(d[1]*inverse[1]);
            d[2] -= c[2]*nearestInteger(d[2]*inverse[2]);
        }
    }
};
}

void ReferenceCalcMappingRestraintForceKernel::initialize(const System& system, const MappingRestraintForce& force) {
    copyParameters(force);
}

void ReferenceCalcMappingRestraintForceKernel::copyParameters(const MappingRestraintForce& force) {
    force.getFlattenedGroups(offsets, atoms, weights, k, r0);
    targets = force.getTargets();
    usePeriodic = force.usesPeriodicBoundaryConditions();
}

void ReferenceCalcMappingRestraintForceKernel::copyParametersToContext(ContextImpl& context, const MappingRestraintForce& force) {
    copyParameters(force);
}

double ReferenceCalcMappingRestraintForceKernel::execute(ContextImpl& context, bool includeForces, bool includeEnergy) {
    ReferencePlatform::PlatformData& data = getPlatformData(context);
    const vector<Vec3>& pos = *data.positions;
    vector<Vec3>& force = *data.forces;
    const MinimumImage image(data.periodicBoxVectors);
    int numGroups = offsets.size()-1;
    double energy = 0.0;
    for (int g = 0; g < numGroups; g++) {
        int start = offsets[g], end = offsets[g+1];
        // The centroid, from positions made whole relative to the group's first atom.
        const Vec3 ref = pos[atoms[start]];
        Vec3 shift;
        for (int i = start+1; i < end; i++) {
            Vec3 d = pos[atoms[i]]-ref;
            if (usePeriodic)
                image.apply(d);
            shift += d*weights[i];
        }
        Vec3 delta = ref+shift-Vec3(targets[3*g], targets[3*g+1], targets[3*g+2]);
        if (usePeriodic)
            image.apply(delta);
        double r = sqrt(delta.dot(delta));
        double excess = r-r0[g];
        if (excess <= 0.0 || k[g] == 0.0)
            continue;
        energy += 0.5*k[g]*excess*excess;
        if (!includeForces)
            continue;
        // dE/dc; with r0 = 0 this is k*delta, which stays finite at r = 0.
        Vec3 dEdc = (r0[g] == 0.0 ? delta*k[g] : delta*(k[g]*excess/r));
        for (int i = start; i < end; i++)
            force[atoms[i]] -= dEdc*weights[i];
    }
    return energy;
}
