"""The server's shared resources: the store reader, the lazily loaded engine and the model worker.

Owns `ModelWorker` (one thread does all model work, in order; a bounded number of requests may wait
or run at once, more are rejected with 503; each waits at most the configured time-out, then 504 and
its job is cancelled if it has not started; inference requests that queue up behind each other are
micro-batched into one forward), `EngineHolder` (loads the served model on first use, and each
ready dictionary's weights the first time a request names it, from paths relative to the atlas
root) and `freeze_long_lived_objects` (keeps start-up objects out of garbage collections). Model
work never runs on the event loop. Nothing here writes to the store or to disk.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from saescope.api.errors import QueueFullError, RequestTimeoutError
from saescope.errors import ConfigError, NotFoundError
from saescope.store.reader import StoreReader

T = TypeVar("T")


class ModelWorker:
    """Runs model jobs one at a time on a dedicated thread, with a bounded queue and a time-out."""

    def __init__(self, max_queue: int, timeout_s: float, torch_threads: int | None = None) -> None:
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._pending = 0
        self._lock = threading.Lock()
        self.torch_threads = torch_threads
        self._executor: ThreadPoolExecutor | None = None
        self._open: dict[Hashable, list[tuple[Any, Future[Any]]]] = {}  # batches not started yet
        self.batches_run = 0  # micro-batches executed (diagnostics)
        self.batched_items_run = 0  # requests they served

    def _init_thread(self) -> None:
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)

    def _get_executor(self) -> ThreadPoolExecutor:
        # created on demand, so an app can be started again after a shutdown (test clients do)
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="saescope-model", initializer=self._init_thread
                )
            return self._executor

    @property
    def pending(self) -> int:
        return self._pending

    def _release(self, _future: Any) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, fn: Callable[..., T], *args: Any, timeout_s: float | None = -1.0) -> T:
        """Run `fn(*args)` on the model thread; QueueFullError / RequestTimeoutError when it cannot.

        `timeout_s`: -1 (default) uses the configured time-out, None waits without limit."""
        timeout = self.timeout_s if timeout_s == -1.0 else timeout_s
        with self._lock:
            if self._pending >= self.max_queue:
                raise QueueFullError(
                    f"the model is busy ({self._pending} requests queued, limit {self.max_queue}): retry in a moment"
                )
            self._pending += 1
        try:
            future = self._get_executor().submit(fn, *args)
        except BaseException:
            self._release(None)
            raise
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=timeout)
        except asyncio.TimeoutError:
            future.cancel()  # drops it if it has not started; a running job finishes and is discarded
            raise RequestTimeoutError(
                f"the model request did not finish within {self.timeout_s:g} s: shorten the text or retry"
            ) from None

    async def run_batched(
        self, key: Hashable, item: Any, batch_fn: Callable[[list[Any]], list[Any]], max_batch: int = 32
    ) -> Any:
        """Run `item` as part of a micro-batch: items with the same `key` that arrive while the
        model thread is busy are handed to ONE `batch_fn(items)` call, which returns one result per
        item (an Exception instance fails only that item). Same queue bound and time-out as `run`;
        a single request on an idle worker starts at once (no waiting for company)."""
        future: Future[Any] = Future()
        with self._lock:
            if self._pending >= self.max_queue:
                raise QueueFullError(
                    f"the model is busy ({self._pending} requests queued, limit {self.max_queue}): retry in a moment"
                )
            self._pending += 1
            batch = self._open.get(key)
            start = batch is None or len(batch) >= max_batch
            if start:
                batch = []
                self._open[key] = batch
            batch.append((item, future))
        future.add_done_callback(self._release)
        if start:
            try:
                self._get_executor().submit(self._run_batch, key, batch, batch_fn)
            except BaseException as exc:
                future.set_exception(exc)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=self.timeout_s)
        except asyncio.TimeoutError:
            future.cancel()  # skipped by the batch if it has not started
            raise RequestTimeoutError(
                f"the model request did not finish within {self.timeout_s:g} s: shorten the text or retry"
            ) from None

    def _run_batch(self, key: Hashable, batch: list[tuple[Any, Future[Any]]], batch_fn: Callable[..., Any]) -> None:
        with self._lock:
            if self._open.get(key) is batch:
                del self._open[key]  # closed: later items start a new batch
        live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
        if not live:
            return
        self.batches_run += 1
        self.batched_items_run += len(live)
        try:
            results = batch_fn([item for item, _ in live])
        except BaseException as exc:  # the whole batch failed
            for _, fut in live:
                fut.set_exception(exc)
            return
        for (_, fut), result in zip(live, results):
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    def shutdown(self) -> None:
        """Stop the model thread (queued jobs are cancelled); a later `run` starts a new one."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def freeze_long_lived_objects() -> None:
    """Collect garbage once, then move every object the process holds now (imported modules, the
    loaded model) out of the garbage collector's view (`gc.freeze`).

    A server process holds hundreds of thousands of such objects (torch, transformers, FastAPI...).
    Left in the oldest generation, each full collection walks all of them while every request in
    flight waits. Frozen, later collections walk only what requests created since."""
    gc.collect()
    gc.freeze()


class EngineHolder:
    """Loads the served model on first use and each dictionary the first time it is needed (again
    when its `created_at` changes, i.e. it was re-published).

    Call its methods only from the model thread (ModelWorker), so loading is never concurrent.
    """

    def __init__(self, reader: StoreReader, atlas_root: Path, device: str, model_id: str | None) -> None:
        self.reader = reader
        self.atlas_root = Path(atlas_root)
        self.device = device
        self.requested_model_id = model_id
        self._engine: Any = None
        self._versions: dict[str, str] = {}  # dictionary id -> created_at of the loaded weights
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def engine(self) -> Any:
        return self._engine

    def served_model_id(self) -> str | None:
        """The model id served live: the configured one, else the model of the first ready dictionary."""
        if self.requested_model_id:
            return self.requested_model_id
        if self._engine is not None:
            return str(self._engine.model_id)
        dictionaries = self.reader.list_dictionaries()
        if dictionaries:
            return str(dictionaries[0]["model_id"])
        models = self.reader.list_models()
        return str(models[0]["id"]) if models else None

    def _resolve(self, location: str) -> str:
        path = Path(location)
        if not path.is_absolute():
            candidate = self.atlas_root / path
            if candidate.exists():
                return str(candidate)
        return str(location)  # absolute path or a hub name

    def get_engine(self) -> Any:
        from saescope.engine.engine import Engine

        with self._lock:
            if self._engine is None:
                model_id = self.served_model_id()
                if model_id is None:
                    raise NotFoundError("the store holds no model: publish an atlas first")
                model = self.reader.get_model(model_id)
                self._engine = Engine.load(
                    self._resolve(model["location"]),
                    device=self.device,
                    vocab=self.reader.vocab(model_id),
                    model_id=model_id,
                )
                freeze_long_lived_objects()  # the model's objects live as long as the server
            return self._engine

    def engine_for(self, dictionaries: list[dict[str, Any]]) -> Any:
        """The engine with every dictionary in `dictionaries` (reader dicts) loaded."""
        engine = self.get_engine()
        for info in dictionaries:
            if info["model_id"] != engine.model_id:
                raise NotFoundError(
                    f"dictionary {info['id']!r} belongs to model {info['model_id']!r}, but this server runs "
                    f"{engine.model_id!r} live; start a server for that model (--model-id)"
                )
            version = str(info.get("created_at"))
            if not engine.has_dictionary(info["id"]) or self._versions.get(info["id"]) != version:
                # first use, or the dictionary was re-published since it was loaded
                folder = self.atlas_root / info["weights_path"]
                if not folder.exists():
                    raise ConfigError(f"weights of dictionary {info['id']!r} not found at {folder}")
                engine.load_dictionary(info["id"], folder, info["hook_name"])
                self._versions[info["id"]] = version
        return engine
