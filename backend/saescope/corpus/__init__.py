"""saescope.corpus stage."""
