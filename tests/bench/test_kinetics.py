"""Temporal coherence, basin kinetics and MSM timescales on the bundled 1 ns alanine dipeptide run (1 ps frames)."""

import math

import mdtraj as md
import numpy as np
import pytest

from openmmbackmap.bench.kinetics import (
    ALPHA_R,
    BETA,
    basin_transition_rates,
    blockwise_time_metrics,
    implied_timescales,
    kinetics_comparison,
    ramachandran_states,
    temporal_coherence,
    throughput,
)

DT_PS = 1.0


@pytest.fixture(scope="module")
def shuffle(ala2):
    """A fixed permutation of the frames: a backmapper that ignores time."""
    return np.random.default_rng(0).permutation(len(ala2[1]))


def test_temporal_coherence(ala2, features, shuffle):
    _, xyz = ala2
    assert temporal_coherence(xyz, xyz, features) == pytest.approx(1.0)
    shuffled = temporal_coherence(xyz[shuffle], xyz, features)
    print(f"\ntemporal coherence of the time-shuffled trajectory: {shuffled:.2f}")
    assert shuffled > 1.4
    # Same stride, different frames: ~1. A stride mismatch is not corrected for (and shows).
    assert temporal_coherence(xyz[1::2], xyz[::2], features) == pytest.approx(1.0, abs=0.1)
    assert temporal_coherence(xyz[::2], xyz, features) > 1.05
    with pytest.raises(ValueError, match="at least 2 frames"):
        temporal_coherence(xyz[:1], xyz, features)


def test_ramachandran_states_follow_the_basins_of_mdtraj_angles_and_visit_two(ala2):
    topology, xyz = ala2
    trajectory = md.Trajectory(xyz, md.Topology.from_openmm(topology))
    phi = np.degrees(md.compute_phi(trajectory)[1][:, 0])
    psi = np.degrees(md.compute_psi(trajectory)[1][:, 0])
    states = ramachandran_states(xyz, topology)
    assert states.shape == (len(xyz),) and set(np.unique(states)) >= {BETA, ALPHA_R}
    left = phi < 0
    helical = left & (psi >= -75) & (psi < 50)
    np.testing.assert_array_equal(states == ALPHA_R, helical)
    np.testing.assert_array_equal(states == BETA, left & ~helical)


def test_basin_transition_rates(ala2):
    topology, xyz = ala2
    toy = basin_transition_rates(np.array([0, 0, 1, 1, 1, 0, 2, 2]), dt_ps=2.0)
    assert toy["n_transitions"] == 3 and toy["mean_dwell_ps"] == [3.0, 6.0, 4.0]
    total_ns = 7 * 2.0e-3
    assert toy["rate_per_ns"][0][1] == pytest.approx(1 / total_ns) and toy["rate_per_ns"][1][0] == pytest.approx(1 / total_ns)

    states = ramachandran_states(xyz, topology)
    rates = basin_transition_rates(states, DT_PS, n_states=3)
    assert rates["n_transitions"] >= 2
    assert np.sum(rates["rate_per_ns"]) == pytest.approx(rates["total_rate_per_ns"])
    assert sum(rates["populations"]) == pytest.approx(1.0)
    assert math.isnan(rates["mean_dwell_ps"][2]) == (rates["populations"][2] == 0)


def test_msm_timescales_and_comparison(ala2, shuffle):
    topology, xyz = ala2
    states = ramachandran_states(xyz, topology)
    lags = [1, 2, 5, 10]
    timescales = implied_timescales(states, lags, DT_PS)
    print("\nimplied timescales (ps) at lags", lags, "frames:", np.round(timescales[:, 0], 2).tolist())
    assert timescales.shape[0] == len(lags) and np.all(timescales[:, 0] > 0)
    np.testing.assert_allclose(implied_timescales(states, lags, 2 * DT_PS), 2 * timescales)

    same = kinetics_comparison(states, states, DT_PS, lag=5)
    assert same["ratio"] == pytest.approx(1.0)
    faster = kinetics_comparison(states[shuffle], states, DT_PS, lag=5)
    print("time-shuffled candidate:", faster)
    assert faster["ratio"] < 0.3
    with pytest.raises(ValueError, match="lag"):
        implied_timescales(states, [len(states)], DT_PS)
    assert math.isnan(kinetics_comparison(np.zeros(10, int), states, DT_PS, 1)["candidate_timescale_ps"])


def test_throughput_counts_output_frames():
    batch = np.zeros((64, 5, 3))
    rate = throughput(lambda b: np.repeat(b, 4, axis=1), batch, repeats=3)
    assert math.isfinite(rate) and rate > 0
    doubled = throughput(lambda b: np.concatenate([b, b]), batch, repeats=3)
    assert math.isfinite(doubled) and doubled > 0


def test_blockwise_time_metrics_pool_blocks_without_their_junctions(ala2, features, shuffle):
    topology, xyz = ala2
    blocks = [xyz[:300], xyz[600:]]
    same = blockwise_time_metrics(blocks, blocks, features, DT_PS)
    assert same["temporal_coherence"] == pytest.approx(1.0) and same["transition_rate_ratio"] == pytest.approx(1.0)
    # Counted inside blocks only: the jump from frame 299 to frame 600 is no step and no transition.
    states = [ramachandran_states(b, topology) for b in blocks]
    inside = sum(int((s[1:] != s[:-1]).sum()) for s in states)
    assert same["transitions_per_ns_reference"] == pytest.approx(inside / ((len(xyz[:300]) + len(xyz[600:]) - 2) * 1e-3))
    assert same["frames"] == 700 and same["blocks"] == 2 and np.isclose(sum(same["populations"]), 1.0)
    # Planted defect: one block time-shuffled (a backmapper that ignores time there) moves more and hops more.
    shuffled = [xyz[:300], xyz[600:][np.random.default_rng(1).permutation(400)]]
    worse = blockwise_time_metrics(shuffled, blocks, features, DT_PS)
    assert worse["temporal_coherence"] > 1.2 and worse["transition_rate_ratio"] > 1.5
    with pytest.raises(ValueError, match="one candidate block per reference block"):
        blockwise_time_metrics(blocks[:1], blocks, features, DT_PS)
    with pytest.raises(ValueError, match="same numbers of frames"):
        blockwise_time_metrics([xyz[:300], xyz[600:900]], blocks, features, DT_PS)
