"""Storage: the journal, engine snapshots, and recovery from both."""
