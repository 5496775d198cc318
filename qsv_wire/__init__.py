"""What the board and the verifier share: the wire format (protocol, lattice codec, token packing, limits, topics),
the C core binding (quantize, sample, pack), the lattice rule's reference, the throughput formulas, and the plumbing
every command uses (logging, argument types, process helpers, safe YAML). Depends on no role."""

__version__ = "0.1.0"  # the package's version (setup.py); edge_runtime and cloud_verifier re-export it
