"""The wire format: the SBE schema every ring, the journal and the binary gateway use, and the codecs derived from it."""
