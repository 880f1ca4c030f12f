"""Order-entry gateways (FIX 4.4, SBE over TCP)."""
