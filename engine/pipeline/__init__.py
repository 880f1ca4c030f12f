"""The pipeline stages: the sequencer and the journaling engine agent."""
