"""Settings of the API server: where the store and atlas live, the device, request limits.

Owns `ApiSettings` and `ApiLimits` (pydantic, one description per field). The CLI builds them from
flags; `create_app(settings)` reads them. Nothing here touches the store, the model or HTTP.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from saescope.api import schemas


class ApiLimits(BaseModel):
    """Per-request limits; requests beyond them get a 422 naming the field (a body over
    `max_body_bytes` a 413), never a 500."""

    model_config = ConfigDict(extra="forbid")

    max_text_chars: int = Field(
        4000, ge=1, le=schemas.MAX_TEXT_CHARS, description="Most characters in a pasted text or prompt."
    )
    max_tokens: int = Field(
        1024, ge=2, description="Most tokens (with BOS) in a text; also capped by the model's n_ctx."
    )
    max_top_k: int = Field(50, ge=1, le=schemas.MAX_TOP_K, description="Largest top_k for inference.")
    max_n_tokens: int = Field(
        128, ge=1, le=schemas.MAX_N_TOKENS, description="Most tokens a steering request may generate."
    )
    max_strength: float = Field(
        1000.0, gt=0, le=schemas.MAX_STRENGTH, description="Largest |strength| of a steering intervention."
    )
    max_interventions: int = Field(
        8, ge=1, le=schemas.MAX_INTERVENTIONS, description="Most interventions in one steering request."
    )
    max_dictionaries: int = Field(
        32, ge=1, le=schemas.MAX_DICTIONARIES_PER_REQUEST, description="Most dictionaries per inference request."
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body in bytes; larger ones get 413 before being read."
    )
    max_queue: int = Field(
        16, ge=1, description="Short model requests (inference, ablation) waiting or running at once; more "
        "get 503 with Retry-After. Queued inference requests share forwards (micro-batching)."
    )
    max_steer_queue: int = Field(
        8, ge=1, description="Steering requests (long generations) waiting or running at once, in a queue of "
        "their own; more get 503 with Retry-After. Short requests never wait behind more than the one "
        "generation running."
    )
    max_client_requests: int = Field(
        12, ge=1, description="Live requests (all kinds) one client address may have waiting or running at "
        "once; more get 429 with Retry-After. Behind a reverse proxy, start uvicorn with proxy headers so "
        "the address is the client's."
    )
    max_client_steers: int = Field(
        2, ge=1, description="Steering requests one client address may have waiting or running at once; "
        "more get 429 with Retry-After."
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="Seconds a model request may wait and run before a 504 answer; a generation "
        "past it stops at its next token."
    )


class ApiSecurity(BaseModel):
    """Who may call the server and how long a connection may take to send its headers.

    Enforced by `saescope.api.request_guard` (key and Host) and `saescope.api.server` (time-outs)."""

    model_config = ConfigDict(extra="forbid")

    api_key: str | None = Field(
        None, repr=False,
        description="Key the live endpoints (inference, steer, ablate) require, sent as `Authorization: Bearer "
        "KEY` or `X-API-Key: KEY` (401 without it); None leaves them open.",
    )
    protect_reads: bool = Field(
        False, description="Require the API key on every /api/v1 endpoint, not only the live ones."
    )
    allowed_hosts: list[str] | None = Field(
        None,
        description="Host header names served (`name`, `*.domain`, or `*` for any); IP addresses and localhost "
        "names are always served; others get 400 (DNS rebinding). None: no check. `saescope serve` sets it.",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a connection may take to send a request's headers before it is closed."
    )
    keep_alive_s: float = Field(5.0, gt=0, description="Seconds an idle keep-alive connection stays open.")


class ApiSettings(BaseModel):
    """Everything `create_app` needs."""

    model_config = ConfigDict(extra="forbid")

    store_url: str = Field(..., description="SQLAlchemy URL of the atlas store (sqlite:///PATH or postgresql+psycopg://...).")
    atlas_root: Path = Field(..., description="Atlas folder; model and dictionary paths in the store are relative to it.")
    device: str = Field("auto", description="Torch device for live inference: auto, cpu, cuda, cuda:N.")
    model_id: str | None = Field(
        None, description="Model to serve live; default: the model of the ready dictionaries (first by id)."
    )
    limits: ApiLimits = Field(default_factory=ApiLimits, description="Request limits.")
    frontend_dir: Path | None = Field(
        None, description="Static frontend folder served at /; default: the repository's frontend/ if present."
    )
    preload_engine: bool = Field(
        False, description="Load the model and dictionaries at start-up instead of on the first live request."
    )
    torch_threads: int | None = Field(None, ge=1, description="torch.set_num_threads for model work; None keeps torch's default.")
    security: ApiSecurity = Field(default_factory=ApiSecurity, description="API key, Host allow-list, time-outs.")
    fast_paths: bool = Field(
        True,
        description="Answer stored feature pages, the hottest request, through a lean ASGI path in front of "
        "FastAPI (saescope.api.page_fast_path); same answers.",
    )
