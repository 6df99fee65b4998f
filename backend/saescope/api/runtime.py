"""The server's shared resources: the store reader, the lazily loaded engine and the model worker.

Owns `ModelWorker` (one thread does all model work; requests are admitted into one bounded queue
per class of work: `inference` for short jobs, `steer` for long generations, with a per-client
bound on live requests, and are refused beyond them without queueing; the thread takes short jobs
first but runs a waiting generation after `INFERENCE_BURST` short jobs in a row, so neither class
starves the other; a running generation lends the thread to waiting short jobs between two
tokens (`should_lend`, `run_waiting`), for about as long as it runs in between; queued inference requests are micro-batched into one forward; each request
waits at most the configured time-out, then 504, and its job is dropped if it has not started or
told to stop (`raise_if_abandoned`) if it has), `EngineHolder` (loads the served model on first use,
and each ready dictionary's weights the first time a request names it, from paths relative to the
atlas root) and `freeze_long_lived_objects` (keeps start-up objects out of garbage collections).
Model work never runs on the event loop. Nothing here writes to the store or to disk, or speaks HTTP.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeVar

from saescope.api.errors import QueueFullError, RequestTimeoutError
from saescope.api.settings import ApiSettings
from saescope.errors import NotFoundError
from saescope.store.reader import StoreReader

T = TypeVar("T")

JobClass = Literal["inference", "steer"]
JOB_CLASSES: tuple[JobClass, ...] = ("inference", "steer")
INFERENCE_BURST = 4  # short jobs run in a row while a generation waits, before the generation's turn


class Refusal(Enum):
    """Why a request was not admitted: its class's queue is full (503), or its client holds too many (429)."""

    QUEUE_FULL = "queue_full"
    CLIENT_LIMIT = "client_limit"


class JobAbandoned(Exception):
    """Raised on the model thread inside a job whose request has given up (timed out or cancelled)."""


@dataclass(frozen=True)
class WorkerLimits:
    """The bounds `ModelWorker` enforces (ApiLimits fields of the same meaning)."""

    max_queue: int = 16  # inference-class requests admitted at once
    max_steer_queue: int = 8  # steer-class requests admitted at once
    max_client_requests: int = 12  # live requests of one client address at once
    max_client_steers: int = 2  # steer requests of one client address at once
    timeout_s: float = 30.0


class Ticket:
    """One admitted request's slot in its class's queue (and its client's share). Freed when every
    holder has released it: the HTTP route that admitted it, and the job while it may still run."""

    __slots__ = ("_holds", "_worker", "client", "job_class")

    def __init__(self, worker: ModelWorker, job_class: JobClass, client: str | None) -> None:
        self._worker = worker
        self.job_class = job_class
        self.client = client
        self._holds = 1

    def hold(self) -> None:
        with self._worker._lock:
            self._holds += 1

    def release(self, _future: Any = None) -> None:
        worker = self._worker
        with worker._lock:
            self._holds -= 1
            if self._holds == 0:
                worker._free(self)


@dataclass
class _Batch:
    """Inference items queued under one key, run as one `batch_fn` call."""

    items: list[tuple[Any, Future[Any]]] = field(default_factory=list)


@dataclass(eq=False)
class _Job:
    """A unit of work for the model thread: `run()` sets the results of its future (a single job)
    or of its batch's futures."""

    run: Callable[[], None]
    future: Future[Any] | None = None
    batch: _Batch | None = None
    abandoned: bool = False

    def cancel(self) -> None:
        """Cancel the futures of a job that will never run."""
        futures = [self.future] if self.future is not None else [f for _, f in (self.batch.items if self.batch else [])]
        for fut in futures:
            fut.cancel()


class ModelWorker:
    """Runs model jobs one at a time on a dedicated thread (see the module docstring)."""

    def __init__(
        self,
        max_queue: int,
        timeout_s: float,
        torch_threads: int | None = None,
        limits: WorkerLimits | None = None,
    ) -> None:
        self.limits = limits or WorkerLimits(max_queue=max_queue, timeout_s=timeout_s)
        self.max_queue = self.limits.max_queue
        self.timeout_s = self.limits.timeout_s
        self.torch_threads = torch_threads
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queues: dict[JobClass, deque[_Job]] = {c: deque() for c in JOB_CLASSES}
        self._admitted: dict[JobClass, int] = dict.fromkeys(JOB_CLASSES, 0)
        self._per_client: dict[str, int] = {}
        self._steers_per_client: dict[str, int] = {}
        self._open: dict[Hashable, _Batch] = {}  # inference batches not started yet
        self._thread: threading.Thread | None = None
        self._epoch = 0  # bumped by shutdown: the thread of an older epoch stops
        self._current: _Job | None = None
        self._burst = 0  # inference jobs run in a row while a generation waited
        self._lent_s = 0.0  # seconds the running job last lent the thread to waiting jobs (run_waiting)
        self._resumed_at = 0.0  # when it got the thread back
        self.batches_run = 0  # micro-batches executed (diagnostics)
        self.batched_items_run = 0  # requests they served
        self.jobs_run: dict[JobClass, int] = dict.fromkeys(JOB_CLASSES, 0)

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> ModelWorker:
        """The worker for an app: the bounds and time-out of `settings.limits`, its torch threads."""
        limits = settings.limits
        return cls(
            limits.max_queue,
            limits.request_timeout_s,
            settings.torch_threads,
            WorkerLimits(
                max_queue=limits.max_queue,
                max_steer_queue=limits.max_steer_queue,
                max_client_requests=limits.max_client_requests,
                max_client_steers=limits.max_client_steers,
                timeout_s=limits.request_timeout_s,
            ),
        )

    # ------------------------------------------------------------------ admission

    @property
    def pending(self) -> int:
        """Requests admitted and not yet finished, all classes together."""
        return sum(self._admitted.values())

    def admitted(self, job_class: JobClass) -> int:
        return self._admitted[job_class]

    def admit(self, job_class: JobClass, client: str | None = None) -> Ticket | Refusal:
        """A slot for one request of `job_class` from `client` (an address; None: not counted per
        client), or why not. Cheap and raises nothing, so refusing costs next to nothing."""
        limits = self.limits
        with self._lock:
            bound = limits.max_queue if job_class == "inference" else limits.max_steer_queue
            if self._admitted[job_class] >= bound:
                return Refusal.QUEUE_FULL
            if client is not None:
                if self._per_client.get(client, 0) >= limits.max_client_requests:
                    return Refusal.CLIENT_LIMIT
                if job_class == "steer" and self._steers_per_client.get(client, 0) >= limits.max_client_steers:
                    return Refusal.CLIENT_LIMIT
                self._per_client[client] = self._per_client.get(client, 0) + 1
                if job_class == "steer":
                    self._steers_per_client[client] = self._steers_per_client.get(client, 0) + 1
            self._admitted[job_class] += 1
            return Ticket(self, job_class, client)

    def _free(self, ticket: Ticket) -> None:
        """Give `ticket`'s slot back (the caller holds the lock)."""
        self._admitted[ticket.job_class] -= 1
        client = ticket.client
        if client is not None:
            _decrement(self._per_client, client)
            if ticket.job_class == "steer":
                _decrement(self._steers_per_client, client)

    def _ticket(self, job_class: JobClass, ticket: Ticket | None) -> Ticket:
        """`ticket` held once more for a job, or a new one (QueueFullError when the class is full)."""
        if ticket is not None:
            ticket.hold()
            return ticket
        got = self.admit(job_class)
        if isinstance(got, Refusal):
            bound = self.limits.max_queue if job_class == "inference" else self.limits.max_steer_queue
            raise QueueFullError(f"the model is busy ({bound} {job_class} requests queued): retry in a moment")
        return got

    # ------------------------------------------------------------------ running

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        timeout_s: float | None = -1.0,
        job_class: JobClass = "inference",
        ticket: Ticket | None = None,
    ) -> T:
        """Run `fn(*args)` on the model thread in `job_class`'s queue; QueueFullError /
        RequestTimeoutError when it cannot. `ticket`: the slot the caller was admitted with (else
        one is taken here). `timeout_s`: -1 (default) uses the configured time-out, None waits
        without limit. A job still running at the time-out is abandoned: `raise_if_abandoned`,
        called by the job between steps, stops it."""
        timeout = self.timeout_s if timeout_s == -1.0 else timeout_s
        held = self._ticket(job_class, ticket)
        future: Future[T] = Future()
        future.add_done_callback(held.release)

        def run_job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                future.set_exception(exc)

        job = _Job(run_job, future=future)
        try:
            self._enqueue(job_class, job)
        except BaseException:
            held.release()
            raise
        return await self._wait(future, job, timeout)

    async def run_batched(
        self,
        key: Hashable,
        item: Any,
        batch_fn: Callable[[list[Any]], list[Any]],
        max_batch: int = 32,
        ticket: Ticket | None = None,
    ) -> Any:
        """Run `item` as part of a micro-batch: items with the same `key` that arrive while the
        model thread is busy are handed to ONE `batch_fn(items)` call, which returns one result per
        item (an Exception instance fails only that item). Inference class, same time-out as `run`;
        a single request on an idle worker starts at once (no waiting for company)."""
        held = self._ticket("inference", ticket)
        future: Future[Any] = Future()
        future.add_done_callback(held.release)
        with self._lock:
            batch = self._open.get(key)
            start = batch is None or len(batch.items) >= max_batch
            if start:
                batch = _Batch()
                self._open[key] = batch
            assert batch is not None
            batch.items.append((item, future))
        if start:
            try:
                self._enqueue("inference", _Job(lambda: self._run_batch(key, batch, batch_fn), batch=batch))
            except BaseException as exc:  # noqa: BLE001 - the thread could not start: fail this request
                future.set_exception(exc)
        return await self._wait(future, None, self.timeout_s)  # a batch serves others: never abandoned

    async def _wait(self, future: Future[T], job: _Job | None, timeout: float | None) -> T:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=timeout)
        except TimeoutError:
            self._give_up(future, job)
            raise RequestTimeoutError(
                f"the model request did not finish within {self.timeout_s:g} s: shorten the text or retry"
            ) from None
        except asyncio.CancelledError:
            self._give_up(future, job)
            raise

    def _give_up(self, future: Future[Any], job: _Job | None) -> None:
        """Drop a job that has not started; tell a running single job to stop at its next step."""
        if not future.cancel() and job is not None:
            job.abandoned = True

    def raise_if_abandoned(self) -> None:
        """Call from inside a job, between its steps: JobAbandoned when its request gave up."""
        job = self._current
        if job is not None and job.abandoned:
            raise JobAbandoned("the request gave up waiting")

    def has_waiting(self, job_class: JobClass) -> bool:
        """Whether jobs of `job_class` are queued (a cheap look, no lock)."""
        return bool(self._queues[job_class])

    def should_lend(self, job_class: JobClass = "inference") -> bool:
        """For the running job, between two of its steps: whether to lend the thread to waiting jobs
        of `job_class` now (`run_waiting`). Yes when some wait and the running job has had the thread
        back for at least as long as it last lent it, so a long job and the short jobs share the
        thread about equally while both have work (a generation is slowed at most about 2x)."""
        return bool(self._queues[job_class]) and time.perf_counter() - self._resumed_at >= self._lent_s

    def run_waiting(self, job_class: JobClass = "inference", limit: int = INFERENCE_BURST) -> int:
        """From inside the running job, between two of its steps (a generation between two tokens):
        run up to `limit` queued jobs of `job_class` now, then return to it; the number run. The
        caller makes the model ready for them first (its own hooks set aside)."""
        outer = self._current
        if outer is None or threading.current_thread() is not self._thread:
            raise RuntimeError("run_waiting is for the model thread, inside a running job")
        with self._lock:
            queue = self._queues[job_class]
            jobs = [queue.popleft() for _ in range(min(limit, len(queue)))]
            self.jobs_run[job_class] += len(jobs)
        started = time.perf_counter()
        for job in jobs:
            self._current = job
            try:
                job.run()
            finally:
                self._current = outer
        self._resumed_at = time.perf_counter()
        self._lent_s = self._resumed_at - started
        return len(jobs)

    def _enqueue(self, job_class: JobClass, job: _Job) -> None:
        with self._wake:
            self._queues[job_class].append(job)
            if self._thread is None:
                # started on demand, so an app can be started again after a shutdown (test clients do)
                self._epoch += 1
                self._thread = threading.Thread(
                    target=self._loop, args=(self._epoch,), name="saescope-model", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def _next_job(self) -> _Job | None:
        """The next job (the caller holds the lock): inference first, a waiting generation after
        INFERENCE_BURST inference jobs in a row."""
        inference, steer = self._queues["inference"], self._queues["steer"]
        if inference and (not steer or self._burst < INFERENCE_BURST):
            self._burst = self._burst + 1 if steer else 0
            self.jobs_run["inference"] += 1
            return inference.popleft()
        if steer:
            self._burst = 0
            self.jobs_run["steer"] += 1
            return steer.popleft()
        return None

    def _loop(self, epoch: int) -> None:
        """The model thread: runs jobs until `shutdown` starts a new epoch."""
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
        while True:
            with self._wake:
                job = self._next_job() if self._epoch == epoch else None
                while job is None and self._epoch == epoch:
                    self._wake.wait()
                    job = self._next_job() if self._epoch == epoch else None
                if job is None:
                    return
                self._current = job
                self._lent_s, self._resumed_at = 0.0, time.perf_counter()
            try:
                job.run()
            finally:
                self._current = None

    def _run_batch(self, key: Hashable, batch: _Batch, batch_fn: Callable[..., Any]) -> None:
        with self._lock:
            if self._open.get(key) is batch:
                del self._open[key]  # closed: later items start a new batch
        live = [(item, fut) for item, fut in batch.items if fut.set_running_or_notify_cancel()]
        if not live:
            return
        self.batches_run += 1
        self.batched_items_run += len(live)
        try:
            results = batch_fn([item for item, _ in live])
        except BaseException as exc:  # noqa: BLE001 - the whole batch failed
            for _, fut in live:
                fut.set_exception(exc)
            return
        for (_, fut), result in zip(live, results):
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    def shutdown(self) -> None:
        """Stop the model thread after its current job (queued jobs are cancelled); a later `run`
        starts a new one."""
        with self._wake:
            self._epoch += 1  # the running thread ends after its current job
            self._thread = None
            dropped = [job for queue in self._queues.values() for job in queue]
            for queue in self._queues.values():
                queue.clear()
            self._open.clear()
            if self._current is not None:
                self._current.abandoned = True
            self._wake.notify_all()
        for job in dropped:
            job.cancel()


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


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
                from saescope.api.weights_check import load_verified  # refuses weights changed since publish

                load_verified(engine, self.reader, self.atlas_root, info)
                self._versions[info["id"]] = version
        return engine
