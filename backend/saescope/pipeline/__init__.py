"""saescope.pipeline stage: the offline job that strings the stages together.

`contexts` (corpus contexts for each step), `dictionaries` (train, evaluate, fit baselines, prune,
fine-tune, write dictionary folders), `activations` (activation files and caches for `train-sae`),
`publish` (precompute and analyse feature records, then persist them through `store.publish`),
`folders` (publish SAELens folders of any model), `build_config` (the validated config of the whole
job and its presets: builtin = the demo, builtin-tiny, smollm2) and `build` (the job itself,
`saescope build` / `saescope demo`). Each step is a function taking a pydantic config; the pipeline holds no algorithm of its
own. Only `cli.py` imports it.
"""
