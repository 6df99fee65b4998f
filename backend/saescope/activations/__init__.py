"""saescope.activations: hook-point names, streaming activations from a model in batches, a seeded
shuffling buffer, a seekable chunk-shuffled stream (resumable training), and an on-disk activation
cache (memory-mapped shards) plus matrix files.
Imports only the corpus and lm stages (and shared modules), never dictionaries or later stages."""
