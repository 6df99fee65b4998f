"""Automated interpretability: fragments, explainers, simulators and scorers of dictionary features.

The stage between `analysis` and `store`: it turns feature activations over a corpus into fragments
(64-token windows), explains each feature from its top fragments (LLM-free token lookup, any
OpenAI-compatible chat endpoint, or a local GGUF model) and scores the explanation (simulation,
detection, fuzzing). It writes nothing to the store; `pipeline/explain.py` does.
"""
