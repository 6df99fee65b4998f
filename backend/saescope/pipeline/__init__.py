"""saescope.pipeline stage: the offline job that strings the stages together.

`contexts` (corpus contexts for each step), `dictionaries` (train, evaluate, fit baselines, prune,
fine-tune, write dictionary folders), `activations` (activation files and caches for `train-sae`),
`publish` (precompute and analyse feature records, then persist them through `store.publish`),
`folders` (publish SAELens folders of any model) and `demo` (the built-in atlas: a preset config of
these steps). Each step is a function taking a pydantic config; the pipeline holds no algorithm of its
own. Only `cli.py` imports it.
"""
