/**
 * MappingRestraintForce on the GPU platforms (compiled by OpenCL and CUDA alike): one thread per
 * group computes the weighted centroid, the flat-bottomed harmonic energy and the force on each
 * of its atoms.  Groups are small (one residue, one Martini bead), so a thread per group keeps
 * every atom's position in registers and needs no second pass for the forces.
 *
 * targets: x, y, z of the target and the force constant k in w; flatBottom: r0 per group.
 * Compiled with USE_PERIODIC when the force uses periodic boundary conditions: the centroid is
 * computed from positions made whole relative to the group's first atom (minimum image), and
 * the centroid-target vector is taken as its minimum image, as on the Reference platform.
 */
KERNEL void computeMappingRestraint(int numGroups, GLOBAL const real4* RESTRICT posq,
        GLOBAL const int* RESTRICT groupOffsets, GLOBAL const int* RESTRICT groupAtoms,
        GLOBAL const real* RESTRICT groupWeights, GLOBAL const real4* RESTRICT targets,
        GLOBAL const real* RESTRICT flatBottom, GLOBAL mm_ulong* RESTRICT forceBuffers,
        GLOBAL mixed* RESTRICT energyBuffer, real4 periodicBoxSize, real4 invPeriodicBoxSize,
        real4 periodicBoxVecX, real4 periodicBoxVecY, real4 periodicBoxVecZ) {
    mixed energy = 0;
    for (int group = GLOBAL_ID; group < numGroups; group += GLOBAL_SIZE) {
        const int start = groupOffsets[group];
        const int end = groupOffsets[group+1];
        const real4 target = targets[group];
        const real k = target.w;
        const real r0 = flatBottom[group];
        // The first atom's offset from the target first, then the weighted offsets of the other
        // atoms from the first: small differences, so single precision loses nothing to the
        // magnitude of absolute coordinates in a large box.
        const real3 first = trimTo3(posq[groupAtoms[start]]);
        real3 shift = make_real3(0);
        for (int i = start+1; i < end; i++) {
            real3 d = trimTo3(posq[groupAtoms[i]])-first;
#ifdef USE_PERIODIC
            APPLY_PERIODIC_TO_DELTA(d)
#endif
            shift += d*groupWeights[i];
        }
        real3 delta = (first-trimTo3(target))+shift;
#ifdef USE_PERIODIC
        APPLY_PERIODIC_TO_DELTA(delta)
#endif
        const real r = SQRT(dot(delta, delta));
        const real excess = r-r0;
        if (excess <= 0 || k == 0)
            continue;
        energy += 0.5f*k*excess*excess;
        // dE/dc; with r0 = 0 this is k*delta, which stays finite at r = 0.
        const real3 dEdc = (r0 == 0 ? delta*k : delta*(k*excess/r));
        for (int i = start; i < end; i++) {
            const int atom = groupAtoms[i];
            const real3 f = dEdc*(-groupWeights[i]);
            ATOMIC_ADD(&forceBuffers[atom], (mm_ulong) realToFixedPoint(f.x));
            ATOMIC_ADD(&forceBuffers[atom+PADDED_NUM_ATOMS], (mm_ulong) realToFixedPoint(f.y));
            ATOMIC_ADD(&forceBuffers[atom+2*PADDED_NUM_ATOMS], (mm_ulong) realToFixedPoint(f.z));
        }
    }
    energyBuffer[GLOBAL_ID] += energy;
}
