"""saescope.lm: language models as transformer_lens HookedTransformers.

`tokenizer` (byte-level BPE training and loading), `builtin` (the built-in model trained offline on
the standard library), `checkpoint` (the checkpoint folder format) and `loading` (load_lm for
checkpoint folders, local Hugging Face folders and pretrained names; lm_info for the store).
Imports only the corpus stage.
"""
