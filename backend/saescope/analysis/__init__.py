"""saescope.analysis stage: every per-feature record, computed in one streaming pass.

`config.PrecomputeConfig` (settings), `streaming.FeatureStream` (bounded-memory one-pass statistics),
`precompute.run_precompute` (the forward/encode loop, checkpoints, example gathering),
`logit_effects`, `geometry` (neighbours, matches, UMAP) and `labels` (LLM-free labels). Arrays in,
arrays out: nothing here speaks SQL; `saescope.store.publish` writes the results.
"""
