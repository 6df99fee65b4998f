"""saescope: a self-hosted atlas of sparse-autoencoder features."""
__version__ = "0.1.0"
