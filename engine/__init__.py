"""The SBE schema, its codecs, and the deterministic matching and risk engine."""
