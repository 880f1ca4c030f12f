"""Host tuning: checks and scripts for latency-sensitive hosts."""
