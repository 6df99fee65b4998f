"""saescope.engine stage."""
