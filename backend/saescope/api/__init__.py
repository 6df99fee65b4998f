"""saescope.api stage."""
