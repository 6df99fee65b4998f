"""saescope.analysis stage: every per-feature record, computed in one streaming pass.

`config.PrecomputeConfig` (settings), `streaming.FeatureStream` (bounded-memory one-pass statistics),
`precompute.run_precompute` (the forward/encode loop, checkpoints, example gathering),
`logit_effects`, `geometry` (neighbours, matches, UMAP), `labels` (LLM-free labels) and `records`
(the per-feature values the store persists). Arrays in, arrays out: nothing here speaks SQL;
`saescope.pipeline.publish` hands the results to `saescope.store.publish`.
"""
