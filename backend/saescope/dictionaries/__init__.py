"""Dictionaries: SAEs and baselines mapping hook-point activations to features, their training,
evaluation and SAELens-format files. Imports only corpus/lm/activations stages, never to the right."""
