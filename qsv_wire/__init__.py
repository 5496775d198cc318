"""What the board and the verifier share: the wire format (protocol, lattice codec, token packing, limits, topics),
the C core binding (quantize, sample, pack), the lattice rule's reference, the throughput formulas, and the plumbing
every command uses (logging, argument types, process helpers, safe YAML). Depends on no role."""
