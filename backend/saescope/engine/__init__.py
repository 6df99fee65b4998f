"""saescope.engine stage: a loaded model plus its dictionaries on one device (`engine.Engine`).

Live feature activations for pasted text, steering and ablation. Imports lm, activations,
dictionaries and corpus helpers; never the store writer, the API or the frontend.
"""
