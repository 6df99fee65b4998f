"""saescope.store stage."""
