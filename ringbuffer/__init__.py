"""Lock-free shared-memory rings, agents, idle strategies and counters."""
