"""saescope.analysis stage."""
