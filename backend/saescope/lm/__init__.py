"""saescope.lm stage."""
