"""The generation engine: continuous batching of chat requests over one shared KV cache.

Every reply medtune generates (`medtune serve`, `medtune chat`, `eval --health` and generate-mode eval) goes
through `Engine.step`, so there is one generation path. A request is prefilled alone (batch 1, no padding),
then joins the running batch between two decode steps: its KV cache is left-padded to the batch's length and
concatenated along the batch dimension; each decode step is one forward pass for every running request.
A finished or cancelled request leaves the batch at the next step, and the columns nobody needs any more are
trimmed. Each row keeps its own sampling settings, random generator, penalties and stop strings.

Models whose cache cannot be merged this way (sliding-window or other cache layouts, recurrent models that
return no cache) are served one request at a time through the same code (`Engine.batched` is False then).

Used from a server: `Engine(...).start()` runs `step` in a background thread and `submit(...)` takes
requests from any thread. Used inline (`medtune chat`): `Engine(...).run(prompt_ids, params)`.
"""

from __future__ import annotations

import inspect
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field

import torch


class QueueFull(Exception):
    """Every batch slot is busy and the waiting queue is full: the caller should retry later."""


@dataclass
class GenerationSettings:
    """The user-facing sampling defaults of `medtune chat`, `medtune serve` and generate-mode eval (chat.py turns
    them into SamplingParams), chosen for small models that tend to repeat themselves.

    temperature 0.7 (0 = greedy), top_p 0.9, max_new_tokens 256, repetition_penalty 1.1 (1.0 = off),
    no_repeat_ngram_size 0 (off; e.g. 4 forbids repeating any 4-gram).
    enable_thinking: for templates that know thinking (Qwen3's; docs/thinking.md): False asks for an answer
      without reasoning, True for reasoning first; None (default) leaves the template's own default.
    """

    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    repetition_penalty: float = 1.1
    no_repeat_ngram_size: int = 0
    enable_thinking: bool | None = None


@dataclass
class SamplingParams:
    """How one request is generated.

    max_new_tokens: at least 1. temperature: 0 = greedy, else softmax temperature (with top_p nucleus).
    repetition_penalty: 1.0 = off; > 1 divides positive (multiplies negative) logits of every token already in
      the prompt or the reply (as transformers does). frequency_penalty / presence_penalty: OpenAI's definition,
      -2..2: logit -= count * frequency_penalty + (count > 0) * presence_penalty, counts over the reply so far.
    no_repeat_ngram_size: 0 = off; n forbids any n-gram of prompt + reply from repeating.
    stop: strings that end the reply (not included in it). seed: makes sampling reproducible.
    timeout_s: wall-clock limit; past it the reply ends with finish_reason `length`.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    timeout_s: float | None = None


@dataclass
class Event:
    """What a request sends back: `delta` text as it is decoded; the last event has `finish_reason`
    (`stop`: the model ended its turn or a stop string came; `length`: max_new_tokens, the context or the
    time limit; `cancelled`; `error`, with `error` set) and the token counts."""

    delta: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_ids: list[int] | None = None  # on the last event: every generated id (the end-of-turn token included)
    error: str | None = None


@dataclass(eq=False)
class Request:
    """One submitted prompt. `sink(event)` is called from the engine's thread; `cancel()` from any thread."""

    prompt_ids: list[int]
    params: SamplingParams
    sink: object
    id: int = 0
    generated: list[int] = field(default_factory=list)
    sent_chars: int = 0
    cancelled: bool = False
    finished: bool = False
    started: float = field(default_factory=time.monotonic)
    generator: torch.Generator | None = None
    counts: dict = field(default_factory=dict)  # token id -> times in the reply (frequency/presence penalties)

    def cancel(self) -> None:
        self.cancelled = True


class Engine:
    """Continuous batching over `model` (a causal LM in eval mode) for prompts already rendered to token ids.

    stop_ids: token ids that end a reply (the template's end-of-turn token and EOS).
    max_concurrency: most requests decoded together (batch rows). max_queue: most requests waiting for a row;
      `submit` raises QueueFull beyond that. max_context: prompt + reply never exceed it (default: the model's
      max_position_embeddings).
    """

    def __init__(self, model, tokenizer, stop_ids, *, max_concurrency: int = 8, max_queue: int = 64,
                 max_context: int | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.stop_ids = set(int(i) for i in stop_ids)
        self.max_concurrency, self.max_queue = max_concurrency, max_queue
        config = getattr(model, "config", None)
        self.max_context = max_context or getattr(config, "max_position_embeddings", None) or 1 << 30
        self.device = model.get_input_embeddings().weight.device
        accepted = inspect.signature(model.forward).parameters
        self._keeps_logits = "logits_to_keep" in accepted
        # transformers 5 renamed `past_key_values` to `cache` (the old name warns); older models keep the old one
        self._cache_kw = "cache" if "cache" in accepted else "past_key_values"
        self.batched: bool | None = None  # known after the first prefill: can caches be merged?
        self._waiting: list[Request] = []
        self._rows: list[Request] = []
        self._cache = None  # the batch's KV cache (rows in `_rows` order)
        self._mask = None  # (rows, cache length): 1 where a row has a real token
        self._next = None  # (rows,) the token each row feeds in next
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._closing = False
        self.steps = 0  # decode forward passes so far (tests and the benchmark read it)
        self.peak_batch = 0  # most rows decoded in one forward pass so far
        self.finished = {"stop": 0, "length": 0, "cancelled": 0, "error": 0}  # requests ended, by reason

    # --- submitting --------------------------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams, sink) -> Request:
        """Queue a request; `sink(Event)` receives its text. Raises QueueFull when no row or queue slot is free."""
        req = Request(list(prompt_ids), params, sink, id=next(self._ids))
        if params.temperature > 0:
            req.generator = torch.Generator().manual_seed(
                params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
        with self._lock:
            if len(self._rows) + len(self._waiting) >= self.capacity + self.max_queue:
                raise QueueFull(f"{len(self._rows)} requests running and {len(self._waiting)} waiting")
            self._waiting.append(req)
            self._lock.notify()
        return req

    @property
    def capacity(self) -> int:
        return 1 if self.batched is False else self.max_concurrency

    def load(self) -> tuple[int, int]:
        """(running, waiting) requests."""
        with self._lock:
            return len(self._rows), len(self._waiting)

    def run(self, prompt_ids: list[int], params: SamplingParams, on_delta=None) -> Event:
        """Generate one reply inline (no thread): `on_delta(text)` gets the text as it comes; returns the last
        event, whose `delta` holds the whole reply."""
        parts: list[str] = []
        last: list[Event] = []

        def sink(ev: Event):
            if ev.delta:
                parts.append(ev.delta)
                if on_delta is not None:
                    on_delta(ev.delta)
            if ev.finish_reason is not None:
                last.append(ev)

        self.submit(prompt_ids, params, sink)
        while not last:
            self.step()
        final = last[0]
        if final.error:
            raise RuntimeError(final.error)
        final.delta = "".join(parts)
        return final

    def run_many(self, prompts: list[list[int]], params: SamplingParams, on_done=None) -> list[Event]:
        """Generate replies to many prompts inline (no thread), `max_concurrency` decoded together: a prompt
        takes the row of the first reply to finish. `on_done(index, event)` is called as each reply ends.
        Returns the last events in prompt order, each `delta` holding its whole reply."""
        parts: list[list[str]] = [[] for _ in prompts]
        finals: list[Event | None] = [None] * len(prompts)

        def sink_for(k: int):
            def sink(ev: Event):
                if ev.delta:
                    parts[k].append(ev.delta)
                if ev.finish_reason is not None:
                    ev.delta = "".join(parts[k])
                    finals[k] = ev
                    if on_done is not None:
                        on_done(k, ev)
            return sink

        submitted = 0
        while any(f is None for f in finals):
            while submitted < len(prompts) and sum(self.load()) < self.capacity:  # never more than the free rows
                self.submit(prompts[submitted], params, sink_for(submitted))
                submitted += 1
            self.step()
        for ev in finals:
            if ev.error:
                raise RuntimeError(ev.error)
        return finals

    # --- the background thread ---------------------------------------------------------------------

    def start(self) -> "Engine":
        self._thread = threading.Thread(target=self._loop, name="medtune-engine", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._closing and not self._waiting and not self._rows:
                    self._lock.wait()
                if self._closing:
                    break
            try:
                self.step()
            except Exception as exc:  # a bug or an out-of-memory: fail the requests in flight, keep serving
                self._fail_all(f"{type(exc).__name__}: {exc}")
        self._fail_all("the server is shutting down")

    def _fail_all(self, message: str) -> None:
        with self._lock:
            doomed = self._rows + self._waiting
            self._rows, self._waiting = [], []
        self._cache = self._mask = self._next = None
        for req in doomed:
            self._finish(req, "error", error=message)

    # --- one step: retire, admit, decode -----------------------------------------------------------

    @torch.no_grad()
    def step(self) -> None:
        """Drop finished and cancelled rows, prefill waiting requests into free rows, then decode one token for
        every running row in a single forward pass."""
        self._retire()
        self._admit()
        if self._rows:
            self._decode()
        self._retire()

    def _retire(self) -> None:
        now = time.monotonic()
        for req in self._rows:
            if req.cancelled and not req.finished:
                self._finish(req, "cancelled")
            elif req.params.timeout_s is not None and now - req.started > req.params.timeout_s and not req.finished:
                self._finish(req, "length")
        with self._lock:
            for req in [r for r in self._waiting if r.cancelled]:
                self._waiting.remove(req)
                self._finish(req, "cancelled")
            keep = [i for i, r in enumerate(self._rows) if not r.finished]
            if len(keep) == len(self._rows):
                return
            self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._next = None
            return
        index = torch.tensor(keep, device=self.device)
        self._mask, self._next = self._mask[index], self._next[index]
        if self._cache is not None:
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[index], layer.values[index]
        # columns that only finished rows used: drop them, so attention never runs over them again
        first = int(self._mask.any(dim=0).nonzero()[0].item())
        if first > 0:
            self._mask = self._mask[:, first:]
            if self._cache is not None:
                for layer in self._cache.layers:
                    layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]

    def _admit(self) -> None:
        while True:
            with self._lock:
                if not self._waiting or len(self._rows) >= self.capacity:
                    return
                req = self._waiting.pop(0)
            req.started = time.monotonic()  # the time limit counts generation, not the wait for a row
            if len(req.prompt_ids) >= self.max_context:
                self._finish(req, "length")
                continue
            ids = torch.tensor([req.prompt_ids], device=self.device)
            extra = {"logits_to_keep": 1} if self._keeps_logits else {}  # the prompt's last logits only
            out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **extra)
            cache = _cache_of(out)
            if self.batched is None:
                self.batched = _mergeable(cache)
            token = self._sample([req], out.logits[:, -1, :].float())[0]
            if self._emit(req, token):
                continue
            mask, nxt = torch.ones_like(ids), torch.tensor([token], device=self.device)
            if self._rows:  # batched: the new row joins the running ones
                self._cache, self._mask = _concat(self._cache, self._mask, cache, mask)
                self._next = torch.cat([self._next, nxt])
            else:  # None for a model without a KV cache: each step then re-reads the whole sequence
                self._cache, self._mask, self._next = cache, mask, nxt
            with self._lock:
                self._rows.append(req)

    def _decode(self) -> None:
        rows = self._rows
        if self._cache is None:  # a model without a KV cache: one row, the whole sequence each step
            req = rows[0]
            ids = torch.tensor([req.prompt_ids + req.generated], device=self.device)
            out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids))
        else:
            positions = self._mask.sum(dim=1, keepdim=True)  # each row's next position, padding not counted
            self._mask = torch.cat([self._mask, torch.ones_like(positions)], dim=1)
            out = self.model(input_ids=self._next[:, None], attention_mask=self._mask, position_ids=positions,
                             use_cache=True, **{self._cache_kw: self._cache})
            self._cache = _cache_of(out)
        self.steps += 1
        self.peak_batch = max(self.peak_batch, len(rows))
        tokens = self._sample(rows, out.logits[:, -1, :].float())
        for i, (req, token) in enumerate(zip(rows, tokens)):
            self._emit(req, token)
        self._next = torch.tensor(tokens, device=self.device)

    # --- sampling and text -------------------------------------------------------------------------

    def _sample(self, rows: list[Request], logits: torch.Tensor) -> list[int]:
        """One token per row from `logits` (rows, vocab), each row under its own settings."""
        greedy_all = True
        for i, req in enumerate(rows):
            p = req.params
            row = logits[i]
            if p.repetition_penalty != 1.0:
                seen = torch.tensor(sorted(set(req.prompt_ids) | set(req.generated)), device=row.device)
                scores = row[seen]
                row[seen] = torch.where(scores < 0, scores * p.repetition_penalty, scores / p.repetition_penalty)
            if (p.frequency_penalty or p.presence_penalty) and req.counts:
                ids = torch.tensor(list(req.counts), device=row.device)
                counts = torch.tensor(list(req.counts.values()), dtype=row.dtype, device=row.device)
                row[ids] -= counts * p.frequency_penalty + p.presence_penalty
            if p.no_repeat_ngram_size > 0:
                banned = _banned_ngram_tokens(req.prompt_ids + req.generated, p.no_repeat_ngram_size)
                if banned:
                    row[torch.tensor(banned, device=row.device)] = float("-inf")
            greedy_all = greedy_all and p.temperature <= 0
        if greedy_all:
            return logits.argmax(dim=-1).tolist()
        tokens = []
        for i, req in enumerate(rows):
            p, row = req.params, logits[i]
            if p.temperature <= 0:
                tokens.append(int(row.argmax()))
                continue
            probs = torch.softmax(row / p.temperature, dim=-1)
            if p.top_p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                # keep the smallest set of tokens whose probability reaches top_p (the top token always stays)
                drop = sorted_probs.cumsum(0) - sorted_probs > p.top_p
                sorted_probs[drop] = 0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
            tokens.append(int(torch.multinomial(probs.cpu(), 1, generator=req.generator)))
        return tokens

    def _emit(self, req: Request, token: int) -> bool:
        """Record `token` for `req`, send the new text, finish it when it ends. Returns True once finished."""
        if req.finished:
            return True
        req.generated.append(token)
        req.counts[token] = req.counts.get(token, 0) + 1
        if token in self.stop_ids:
            self._finish(req, "stop")
            return True
        text = self._text(req)
        for s in req.params.stop:
            at = text.find(s)
            if at >= 0:
                self._finish(req, "stop", text=text[:at])
                return True
        if len(req.generated) >= req.params.max_new_tokens or len(req.prompt_ids) + len(req.generated) >= self.max_context:
            self._finish(req, "length")
            return True
        # hold back an unfinished character and any tail that may be the start of a stop string
        ready = len(text) - (1 if text.endswith("\ufffd") else 0)
        hold = 0
        for s in req.params.stop:
            hold = max([hold] + [k for k in range(1, len(s)) if text.endswith(s[:k], 0, ready)])
        ready -= hold
        if ready > req.sent_chars:
            delta = text[req.sent_chars:ready]
            req.sent_chars = ready
            try:
                req.sink(Event(delta=delta))
            except Exception:  # its reader is gone (e.g. the server's event loop closed): stop generating for it
                req.cancel()
        return False

    def _text(self, req: Request) -> str:
        ids = req.generated[:-1] if req.generated and req.generated[-1] in self.stop_ids else req.generated
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def _finish(self, req: Request, reason: str, *, text: str | None = None, error: str | None = None) -> None:
        if req.finished:
            return
        req.finished = True
        self.finished[reason] = self.finished.get(reason, 0) + 1
        if text is None:
            text = self._text(req) if reason in ("stop", "length") else ""
        delta = text[req.sent_chars:] if len(text) > req.sent_chars else ""
        req.sent_chars = max(req.sent_chars, len(text))
        try:
            req.sink(Event(delta=delta, finish_reason=reason, prompt_tokens=len(req.prompt_ids),
                           completion_tokens=len(req.generated), token_ids=list(req.generated), error=error))
        except Exception:  # a sink whose reader is gone must not stop the batch
            pass


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _mergeable(cache) -> bool:
    """A cache whose layers are plain growing K/V tensors (batch, heads, length, dim) can join a batch."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    return type(cache) is DynamicCache and bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


def _left_pad(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _concat(cache, mask, new_cache, new_mask):
    """The batch's cache and mask with one more row (`new_cache`), both left-padded to the longer length."""
    length = max(mask.shape[1], new_mask.shape[1])
    for layer, new in zip(cache.layers, new_cache.layers):
        layer.keys = torch.cat([_left_pad(layer.keys, length, 2), _left_pad(new.keys, length, 2)])
        layer.values = torch.cat([_left_pad(layer.values, length, 2), _left_pad(new.values, length, 2)])
    return cache, torch.cat([_left_pad(mask, length, 1), _left_pad(new_mask, length, 1)])


def _banned_ngram_tokens(ids: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in `ids` (what no_repeat_ngram_size forbids)."""
    if len(ids) < n:
        return []
    prefix = tuple(ids[len(ids) - n + 1:])
    return [ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i:i + n - 1]) == prefix]


class SyncSink:
    """A sink for threads that wait on a request: events land in a `queue.Queue`."""

    def __init__(self):
        self.events: queue.Queue = queue.Queue()

    def __call__(self, event: Event) -> None:
        self.events.put(event)
