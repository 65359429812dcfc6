"""The standard backmapping benchmark: metrics that score any backmapped trajectory against a reference.

Conventions shared by every metric module here:

- Metric functions are pure: numpy arrays (frames, atoms, 3) in nm and a
  :class:`~openmmbackmap.bench.structure.TopologyFeatures` in, plain numbers (or small dicts
  of numbers) out. They never read files and never change their inputs.
- Candidate and reference share one topology: candidates are matched to the reference atom
  by atom before scoring (:mod:`openmmbackmap.bench.matching`).
- Each function's docstring states its ideal value, and each is tested on planted defects
  and on the reference itself.

Modules: structure (topology features), structural (bonds, clashes, stereochemistry),
distributions, accuracy (RMSD, chi1, diversity), readiness (MD readiness), kinetics
(temporal coherence, Markov models, throughput).
"""
