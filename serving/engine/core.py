"""The scheduler loop: continuous batching with batched prefill, one decode step per iteration for all rows.

Thread model: `submit`/`abort` may be called from any thread (the asyncio server calls them); everything else runs
on the engine thread (`start()`), or on the caller's thread when a test or a benchmark drives `step()` directly.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmrack.contracts.serving_defaults import DEFAULT_MAX_NUM_SEQS, DEFAULT_MAX_QUEUE, MAX_PREFILL_TOKENS
from serving.engine.batch import KVBatch, new_cache
from serving.engine.sampling import SamplingParams, sample
from serving.engine.sequence import FinishReason, IncrementalDetokenizer, RequestOutput, Sequence

log = logging.getLogger("serving.engine")

OutputCallback = Callable[[list[RequestOutput]], None]


class EngineError(Exception):
    """A request the engine refuses; `status` is the HTTP status the API layer maps it to."""

    status = 400


class QueueFullError(EngineError):
    status = 429


class PromptTooLongError(EngineError):
    status = 400


class EngineObserver:
    """Hooks for metrics; the default does nothing. Called on the engine thread."""

    def on_admitted(self, seq: Sequence, queue_seconds: float) -> None: ...

    def on_token(self, seq: Sequence, now: float) -> None: ...

    def on_finished(self, seq: Sequence, now: float) -> None: ...

    def on_step(self, running: int, waiting: int, kv_usage: float) -> None: ...


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    max_model_len: int = 2048
    max_queue: int = DEFAULT_MAX_QUEUE
    # Padded prompt tokens one prefill may take: bounds the memory of a prefill and how long it stalls decoding.
    max_prefill_tokens: int = MAX_PREFILL_TOKENS


class Engine:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        eos_token_ids: frozenset[int],
        config: EngineConfig,
        on_outputs: OutputCallback | None = None,
        observer: EngineObserver | None = None,
    ) -> None:
        import torch

        self.model = model
        self.tokenizer = tokenizer
        self._backend = tokenizer.backend_tokenizer
        self.eos_token_ids = eos_token_ids
        self.config = config
        self.on_outputs = on_outputs or (lambda outputs: None)
        self.observer = observer or EngineObserver()
        self.device = next(iter(model.parameters()), torch.empty(0)).device
        self.vocab_size = int(model.config.vocab_size)
        self._lock = threading.Condition()
        self._waiting: deque[Sequence] = deque()
        self._aborts: set[str] = set()
        self._running: list[Sequence] = []
        self._kv: KVBatch | None = None
        self._ids = itertools.count()
        self._orphans: list[Sequence] = []  # failed before holding a KV row (prefill); reported by _collect
        self._thread: threading.Thread | None = None
        self._stop = False
        self.steps = 0

    # ---- called from any thread -------------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, request_id: str | None = None,
               priority: int = 0) -> str:
        """Queue a request; raises PromptTooLongError or QueueFullError (nothing is queued then).

        `priority` follows vLLM: lower is admitted sooner, FIFO within one value; online requests carry 0 and batch
        requests more, so a waiting online request is always admitted before any waiting batch request. Requests
        with priority > 0 may fill only half the queue and take at most 7/8 of the rows, keeping room for online
        ones.
        """
        import torch

        if not prompt_ids:
            raise EngineError("the prompt is empty")
        if len(prompt_ids) >= self.config.max_model_len:
            raise PromptTooLongError(
                f"the prompt has {len(prompt_ids)} tokens; this server's max_model_len is {self.config.max_model_len} "
                "(prompt plus at least one generated token)"
            )
        generator = None
        if params.seed is not None and not params.greedy:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(params.seed)
        seq = Sequence(
            request_id=request_id or f"req-{next(self._ids)}",
            prompt_ids=list(prompt_ids),
            params=params,
            detok=IncrementalDetokenizer(self._backend, params.skip_special_tokens),
            eos_token_ids=self.eos_token_ids,
            max_model_len=self.config.max_model_len,
            generator=generator,
            priority=priority,
        )
        with self._lock:
            if len(self._waiting) >= self.config.max_queue:
                raise QueueFullError(
                    f"the server's queue is full ({self.config.max_queue} requests waiting); retry later"
                )
            if priority > 0 and len(self._waiting) >= max(1, self.config.max_queue // 2):
                raise QueueFullError(
                    f"the server's queue holds {len(self._waiting)} requests; lower-priority requests may take "
                    "only half of it; retry later"
                )
            self._enqueue(seq)
            self._lock.notify()
        return seq.request_id

    def _enqueue(self, seq: Sequence) -> None:
        """Insert after every waiting request of the same or a lower priority value (the queue stays sorted)."""
        if not self._waiting or self._waiting[-1].priority <= seq.priority:
            self._waiting.append(seq)
            return
        at = next(i for i, s in enumerate(self._waiting) if s.priority > seq.priority)
        self._waiting.insert(at, seq)

    def abort(self, request_id: str) -> None:
        """Cancel a request; its KV rows are dropped at the start of the next step."""
        with self._lock:
            self._aborts.add(request_id)
            self._lock.notify()

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def has_work(self) -> bool:
        return bool(self._running or self._waiting or self._aborts)

    def kv_cache_bytes(self) -> int:
        kv = self._kv
        return kv.nbytes() if kv is not None else 0

    def kv_usage(self) -> float:
        """Tokens held by running sequences over the capacity max_num_seqs x max_model_len."""
        used = sum(s.total_len for s in self._running)
        return used / (self.config.max_num_seqs * self.config.max_model_len)

    # ---- the loop ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="llmrack-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._lock:
                    while not self._stop and not self.has_work():
                        self._lock.wait()
                    if self._stop:
                        break
                try:
                    self.step()
                except Exception:  # the loop must survive anything; step() already failed the requests concerned
                    log.exception("engine step failed")
        self._fail_all("the server is shutting down", FinishReason.abort)

    def step(self) -> list[RequestOutput]:
        """One iteration: apply aborts, admit + prefill new requests, one decode step, retire finished ones.

        Returns every output of the step (they also went to `on_outputs`).
        """
        import torch

        with torch.inference_mode():
            # Each call to on_outputs gets a list of its own: the receiver may read it later, on another thread
            # (the server's event loop), so a list this step still appends to would deliver those outputs twice.
            early: list[RequestOutput] = []
            self._apply_aborts(early)
            new = self._admit()
            if new:
                self._prefill(new)
                # First tokens go out now rather than after this step's decode: that is the time to first token.
                self._collect(early)
            if early:
                self.on_outputs(early)
            late: list[RequestOutput] = []
            if self._running:
                self._decode()
            self._collect(late)
            self.steps += 1
            self.observer.on_step(len(self._running), len(self._waiting), self.kv_usage())
            if late:
                self.on_outputs(late)
            return early + late

    def _apply_aborts(self, outputs: list[RequestOutput]) -> None:
        with self._lock:
            if not self._aborts:
                return
            aborts, self._aborts = self._aborts, set()
            for seq in [s for s in self._waiting if s.request_id in aborts]:
                self._waiting.remove(seq)
                seq.finish_reason = FinishReason.abort
                self._finish(seq, outputs)
        for seq in self._running:
            if seq.request_id in aborts and not seq.finished:
                seq.finish_reason = FinishReason.abort
        self._retire(outputs)

    def _admit(self) -> list[Sequence]:
        free = self.config.max_num_seqs - len(self._running)
        # Rows lower-priority (batch) requests may not take: an online request arriving while a job runs gets a row
        # at the next step instead of waiting for a batch request to finish (the engine does not preempt).
        batch_free = free - self.config.max_num_seqs // 8
        admitted: list[Sequence] = []
        longest = 0
        with self._lock:
            while self._waiting and len(admitted) < free:
                if self._waiting[0].priority > 0 and len(admitted) >= batch_free:
                    break  # the queue is sorted: everything after this one is of lower priority too
                longest_if = max(longest, len(self._waiting[0].prompt_ids))
                if admitted and longest_if * (len(admitted) + 1) > self.config.max_prefill_tokens:
                    break
                admitted.append(self._waiting.popleft())
                longest = longest_if
        now = time.monotonic()
        for seq in admitted:
            seq.admitted = now
            self.observer.on_admitted(seq, now - seq.arrival)
        return admitted

    # ---- model calls ------------------------------------------------------------------------------------------
    def _prefill(self, seqs: list[Sequence]) -> None:
        """One left-padded forward over all new prompts; a failure is narrowed down to the request(s) causing it."""
        try:
            kv, logits = self._prefill_forward(seqs)
        except Exception as exc:
            if len(seqs) == 1:
                self._fail(seqs[0], exc)
                self._orphans.append(seqs[0])
                return
            half = len(seqs) // 2
            self._prefill(seqs[:half])
            self._prefill(seqs[half:])
            return
        self._sample_and_append(seqs, logits)
        self._kv = kv if self._kv is None else KVBatch.concat([self._kv, kv])
        self._running.extend(seqs)

    def _prefill_forward(self, seqs: list[Sequence]) -> tuple[KVBatch, Any]:
        import torch

        length = max(len(s.prompt_ids) for s in seqs)
        ids = torch.zeros((len(seqs), length), dtype=torch.long)
        valid = torch.zeros((len(seqs), length), dtype=torch.bool)
        for i, s in enumerate(seqs):
            n = len(s.prompt_ids)
            ids[i, length - n :] = torch.tensor(s.prompt_ids, dtype=torch.long)
            valid[i, length - n :] = True
        ids, valid = ids.to(self.device), valid.to(self.device)
        positions = (valid.long().cumsum(dim=1) - 1).clamp(min=0)
        causal = torch.ones((length, length), dtype=torch.bool, device=self.device).tril()
        mask = causal[None, None, :, :] & valid[:, None, None, :]
        # Padding query rows attend to themselves only: a fully masked row would make SDPA return NaN, and NaN in
        # a padded cache slot poisons every later step (0 attention weight x NaN value is still NaN).
        mask = mask | torch.eye(length, dtype=torch.bool, device=self.device)[None, None]
        cache = new_cache(self.model.config)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1
        )
        kv = KVBatch(cache, valid, valid.sum(dim=1))
        return kv, out.logits[:, -1, :]

    def _decode(self) -> None:
        import torch

        kv = self._kv
        assert kv is not None
        before = kv.layer_tensors()
        valid, mask = kv.decode_mask()
        last = torch.tensor([s.output_ids[-1] for s in self._running], dtype=torch.long, device=self.device)
        try:
            out = self.model(
                input_ids=last[:, None],
                attention_mask=mask,
                position_ids=kv.positions[:, None],
                cache=kv.cache,
                use_cache=True,
            )
        except Exception as exc:
            kv.set_layer_tensors(before)  # a failed forward may have appended to some layers and not others
            self._isolate_decode_failure(exc)
            return
        kv.advance(valid)
        self._sample_and_append(self._running, out.logits[:, -1, :])

    def _isolate_decode_failure(self, exc: Exception) -> None:
        """A batched step failed: run each row alone to find the culprit(s); only they fail, the rest continue."""
        import torch

        kv = self._kv
        assert kv is not None
        log.warning("batched decode step failed (%s); isolating the failing request(s)", exc)
        parts: list[KVBatch] = []
        survivors: list[Sequence] = []
        for i, seq in enumerate(self._running):
            part = kv.select([i])
            valid, mask = part.decode_mask()
            try:
                out = self.model(
                    input_ids=torch.tensor([[seq.output_ids[-1]]], device=self.device),
                    attention_mask=mask,
                    position_ids=part.positions[:, None],
                    cache=part.cache,
                    use_cache=True,
                )
            except Exception as row_exc:
                self._fail(seq, row_exc)
                self._orphans.append(seq)
                continue
            part.advance(valid)
            self._sample_and_append([seq], out.logits[:, -1, :])
            parts.append(part)
            survivors.append(seq)
        self._running = survivors  # rows of the new KV batch, in order; the failed ones are in _orphans
        self._kv = KVBatch.concat(parts) if parts else None

    def _sample_and_append(self, seqs: list[Sequence], logits: Any) -> None:
        try:
            tokens = sample(logits, [s.prepare_row() for s in seqs])
        except Exception:
            # A row's parameters broke the batched sampler: sample row by row so only that request fails.
            tokens = []
            for i, s in enumerate(seqs):
                try:
                    tokens.append(sample(logits[i : i + 1], [s.prepare_row()])[0])
                except Exception as exc:
                    self._fail(s, exc)
                    tokens.append(-1)
        now = time.monotonic()
        for seq, token in zip(seqs, tokens, strict=True):
            if seq.finished:
                continue
            try:
                seq.append(token)
            except Exception as exc:
                self._fail(seq, exc)
                continue
            self.observer.on_token(seq, now)
            if seq.first_token is None:
                seq.first_token = now
            seq.last_token = now

    # ---- bookkeeping ------------------------------------------------------------------------------------------
    def _fail(self, seq: Sequence, exc: Exception) -> None:
        log.error("request %s failed inside the engine: %s: %s", seq.request_id, type(exc).__name__, exc)
        seq.finish_reason = FinishReason.error
        # The client gets a generic message; the detail stays in the server log.
        seq.error = "the request failed inside the engine"

    def _collect(self, outputs: list[RequestOutput]) -> None:
        for seq in self._running:
            if seq.finished:
                continue  # reported by _retire, with its finish reason
            out = seq.take_output()
            if out is not None:
                outputs.append(out)
        self._retire(outputs)
        orphans, self._orphans = [s for s in self._orphans if s not in self._running], []
        for seq in orphans:
            self._finish(seq, outputs)

    def _retire(self, outputs: list[RequestOutput]) -> None:
        """Drop finished rows from the batch now, so their KV memory is released before the next step."""
        if not any(s.finished for s in self._running):
            return
        keep = [i for i, s in enumerate(self._running) if not s.finished]
        done = [s for s in self._running if s.finished]
        if self._kv is not None:
            self._kv = self._kv.select(keep) if keep else None
        self._running = [self._running[i] for i in keep]
        for seq in done:
            self._finish(seq, outputs)

    def _finish(self, seq: Sequence, outputs: list[RequestOutput]) -> None:
        out = seq.take_output()
        if out is not None:
            outputs.append(out)
        self.observer.on_finished(seq, time.monotonic())

    def _fail_all(self, message: str, reason: FinishReason) -> None:
        outputs: list[RequestOutput] = []
        with self._lock:
            pending = list(self._waiting) + self._running
            self._waiting.clear()
        for seq in pending:
            if not seq.finished:
                seq.finish_reason = reason
                seq.error = message if reason is FinishReason.error else None
            self._finish(seq, outputs)
        self._running, self._kv = [], None
        if outputs:
            self.on_outputs(outputs)

    # ---- offline use (tests, benchmarks, warm-up) -------------------------------------------------------------
    def run_until_idle(self) -> dict[str, list[RequestOutput]]:
        """Step until nothing is left; returns every output per request (only when no engine thread runs)."""
        if self._thread is not None:
            raise RuntimeError("run_until_idle() is for an engine without its own thread")
        collected: dict[str, list[RequestOutput]] = {}
        while self.has_work():
            for out in self.step():
                collected.setdefault(out.request_id, []).append(out)
        return collected
