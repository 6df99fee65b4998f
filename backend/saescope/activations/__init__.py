"""saescope.activations stage."""
