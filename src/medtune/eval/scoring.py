"""Scoring multiple-choice items: log-likelihood of each choice after the context (lm-evaluation-harness
conventions), or generation with a chat template and answer extraction; accuracy, macro-F1, per-subject
scores and bootstrap confidence intervals; perplexity on plain text.

Log-likelihood follows the harness's `_encode_pair`: trailing spaces of the context move to the front of
the continuation; the context alone and context + continuation are tokenised without special tokens; the
continuation's tokens are those of the whole past the context's length. The choice with the highest summed
log-probability wins (`acc`); `acc_norm` divides by the continuation's length in bytes.

Speed (`loglik_scores`): each context is run once, items sorted by context length and batched. When every
choice is one token (letters, yes/no/maybe), a batch is right-padded and run without an attention mask, and
the LM head runs only at each context's last position (the head is about a fifth of this model's forward, and
a log-softmax over every position is memory-bound). Otherwise the batch runs left-padded with a KV cache; the
first token of every choice is read off the last position, and only choices longer than one token run a second,
small forward over their remaining tokens on the cached context. `loglik_reference` is the
one-forward-per-(context, choice) baseline both must equal (docs/eval.md: what was measured and kept).

On a CPU with native bf16 (`loglik_checked`), a bf16 copy scores every item and fp32 re-scores a calibration
sample and every item whose decision is closer than twice the largest bf16 error seen there, so acc and
acc_norm stay fp32's.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

_LETTER = "ABCDEFGHIJ"


@dataclass
class Request:
    context: str
    continuations: list[str]


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-evaluation-harness splits them."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    if not ctx:  # the harness puts the end-of-text token before an empty context
        ctx = [tokenizer.eos_token_id]
        whole = ctx + whole
    return ctx, whole[len(ctx):]


def _encode(tokenizer, req: Request):
    pairs = [encode_pair(tokenizer, req.context, c) for c in req.continuations]
    contexts = {tuple(p[0]) for p in pairs}
    if len(contexts) == 1:
        return list(pairs[0][0]), [p[1] for p in pairs]
    # a choice whose first characters merge with the context's end: share the common context prefix
    common = min(len(p[0]) for p in pairs)
    for k in range(common):
        if len({p[0][k] for p in pairs}) > 1:
            common = k
            break
    ctx = list(pairs[0][0][:common])
    return ctx, [p[0][common:] + p[1] for p in pairs]


def loglik_reference(model, tokenizer, requests: list[Request], progress=None) -> list[list[float]]:
    """Baseline: one full forward per (context, choice) pair, as the harness does without its cache."""
    import torch

    device = model.get_input_embeddings().weight.device
    out = []
    with torch.no_grad():
        for req in requests:
            scores = []
            for cont in req.continuations:
                ctx, cont_ids = encode_pair(tokenizer, req.context, cont)
                ids = torch.tensor([ctx + cont_ids], device=device)
                logp = torch.log_softmax(model(input_ids=ids[:, :-1], use_cache=False).logits.float(), -1)[0]
                pos = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(cont_ids), device=device)
                scores.append(logp[pos, torch.tensor(cont_ids, device=device)].sum().item())
            out.append(scores)
            if progress:
                progress(1)
    return out


def encode_requests(tokenizer, requests: list[Request]) -> list[tuple[list[int], list[list[int]]]]:
    """Each request as (context ids, one id list per choice), the context shared by its choices."""
    return [_encode(tokenizer, r) for r in requests]


def tokenizer_fingerprint(tokenizer) -> str | None:
    """A hash of everything that decides how `tokenizer` splits text (None when it cannot be told): models whose
    tokenizers share it can share tokenised requests."""
    import hashlib

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    return hashlib.sha256(backend.to_str().encode()).hexdigest()


def loglik_scores(model, tokenizer, requests: list[Request], *, batch_size: int = 8, progress=None,
                  encoded=None) -> list[list[float]]:
    """Summed log-probability of each continuation after its context; each context is run once. `encoded`:
    `encode_requests(tokenizer, requests)` when it is already at hand.

    Items whose choices are all one token (" A".." D", " yes"/" no"/" maybe") take the fast path
    (`_single_token_items`); the others keep each context's KV cache for their longer choices (`_cached_items`).
    """
    import torch

    encoded = encoded if encoded is not None else encode_requests(tokenizer, requests)
    results: list[list[float]] = [[] for _ in requests]
    single = [i for i, (_, conts) in enumerate(encoded) if all(len(c) == 1 for c in conts)]
    chosen = set(single)
    multi = [i for i in range(len(requests)) if i not in chosen]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        _single_token_items(model, encoded, single, results, pad, batch_size, progress)
        _cached_items(model, encoded, multi, results, pad, batch_size, progress)
    return results


def _longest_first(encoded, indices: list[int]) -> list[int]:
    # similar lengths batch together; the longest batch comes first, so running out of memory shows at once
    return sorted(indices, key=lambda i: -len(encoded[i][0]))


def _accepts(model, argument: str) -> bool:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return argument in inspect.signature(base.forward).parameters


def _single_token_items(model, encoded, indices, results, pad, batch_size, progress) -> None:
    """One forward per batch of contexts, right-padded with no attention mask (causal attention never looks
    ahead, so padding after a context changes none of its positions, and attention runs its unmasked causal
    kernel); the LM head runs only at each context's last position, where every choice's only token is read."""
    import torch

    device = model.get_input_embeddings().weight.device
    keeps_logits = _accepts(model, "logits_to_keep")
    order = _longest_first(encoded, indices)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ctxs = [encoded[i][0] for i in idx]
        width = max(len(c) for c in ctxs)
        ids = torch.tensor([c + [pad] * (width - len(c)) for c in ctxs], device=device)
        ends = sorted({len(c) - 1 for c in ctxs})
        if keeps_logits:  # the head over the few distinct last positions, not over every token
            logits = model(input_ids=ids, use_cache=False, logits_to_keep=torch.tensor(ends, device=device)).logits
            column = {pos: k for k, pos in enumerate(ends)}
        else:
            logits = model(input_ids=ids, use_cache=False).logits
            column = {pos: pos for pos in ends}
        rows = torch.arange(len(idx), device=device)
        cols = torch.tensor([column[len(c) - 1] for c in ctxs], device=device)
        last = torch.log_softmax(logits[rows, cols].float(), -1)
        for b, i in enumerate(idx):
            results[i] = last[b, [c[0] for c in encoded[i][1]]].tolist()
        if progress:
            progress(len(idx))


def _cached_items(model, encoded, indices, results, pad, batch_size, progress) -> None:
    """Items with a longer choice: the batch of contexts runs left-padded with a KV cache; every choice's first
    token is read off the last column, and choices longer than one token run only their remaining tokens on
    top of the cached context (`_rest_of_choices`)."""
    import torch

    device = model.get_input_embeddings().weight.device
    keep = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    order = _longest_first(encoded, indices)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ctxs = [encoded[i][0] for i in idx]
        width = max(len(c) for c in ctxs)
        # left padding: every context ends at the last column, where its choices' first tokens are read
        ids = torch.tensor([[pad] * (width - len(c)) + c for c in ctxs], device=device)
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in ctxs], device=device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True, **keep)
        last = torch.log_softmax(out.logits[:, -1].float(), -1)
        rows = []  # (batch row, item, choice) for choices longer than one token
        for b, i in enumerate(idx):
            conts = encoded[i][1]
            results[i] = [last[b, c[0]].item() for c in conts]
            rows += [(b, i, j) for j, c in enumerate(conts) if len(c) > 1]
        if rows:
            cache = out["cache"] if "cache" in out else out["past_key_values"]
            _rest_of_choices(model, cache, mask, rows, encoded, results, pad, device)
        if progress:
            progress(len(idx))


def cache_argument(model) -> str:
    """The forward argument that takes a KV cache: `cache` since transformers 5.24 (`past_key_values` warns
    until 5.40), `past_key_values` in remote-code models written for the older name."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _rest_of_choices(model, cache, ctx_mask, rows, encoded, results, pad, device):
    """Tokens 2..n of multi-token choices, on the cached contexts (cache rows repeated per choice)."""
    import torch

    if not hasattr(cache, "reorder_cache"):  # a remote-code model's own cache (tuples, maybe sequence-first)
        for _, i, j in rows:  # cannot be regrouped by row: each such choice is scored by a full forward
            ctx, cont = encoded[i][0], encoded[i][1][j]
            logits = model(input_ids=torch.tensor([ctx + cont[:-1]], device=device), use_cache=False).logits
            logp = torch.log_softmax(logits[0, len(ctx):].float(), -1)
            results[i][j] += logp[torch.arange(len(cont) - 1), torch.tensor(cont[1:], device=device)].sum().item()
        return
    conts = [encoded[i][1][j] for _, i, j in rows]
    width = max(len(c) for c in conts) - 1
    inputs = torch.tensor([c[:-1][:width] + [pad] * (width - len(c) + 1) for c in conts], device=device)
    targets = [c[1:] for c in conts]
    select = torch.tensor([b for b, _, _ in rows], device=device)
    cache.reorder_cache(select)  # one cache row per choice: the row of its item's context
    ctx_mask = ctx_mask[select]
    cont_mask = torch.tensor([[1] * (len(c) - 1) + [0] * (width - len(c) + 1) for c in conts], device=device)
    mask = torch.cat([ctx_mask, cont_mask], dim=1)
    start = ctx_mask.sum(-1, keepdim=True)
    position_ids = start + torch.arange(width, device=device)[None]
    out = model(input_ids=inputs, attention_mask=mask, position_ids=position_ids, use_cache=True,
                **{cache_argument(model): cache})
    logp = torch.log_softmax(out.logits.float(), -1)
    for r, ((_, i, j), tgt) in enumerate(zip(rows, targets)):
        results[i][j] += logp[r, torch.arange(len(tgt), device=device), torch.tensor(tgt, device=device)].sum().item()


# ------------------------------------------------------------------------------------ bf16 with an fp32 check


def native_bf16_cpu() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX): there a bf16 forward is faster than fp32;
    elsewhere it is emulated and slower."""
    try:
        flags = " ".join(line for line in open("/proc/cpuinfo", encoding="utf-8") if line.startswith("flags"))
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def bf16_copy(model):
    """A bf16 copy of an fp32 model, for `loglik_checked`'s fast pass (the fp32 model stays as it is)."""
    import copy

    import torch

    return copy.deepcopy(model).to(torch.bfloat16).eval()


@dataclass
class Check:
    """How `loglik_checked` kept bf16's decisions equal to fp32's: the calibration items scored both ways, the
    largest bf16 error seen on them (on the difference between two choices, and on that difference per byte for
    acc_norm), the margins below which a decision was re-scored in fp32, and how many items were re-scored."""

    calibration_items: int
    max_error: float
    max_error_per_byte: float
    margin: float
    margin_per_byte: float
    rechecked: int

    def as_dict(self) -> dict:
        return {"precision": "bf16 with fp32 re-check", **{k: round(v, 4) if isinstance(v, float) else v
                                                          for k, v in vars(self).items()}}


def _gaps(scores: list[float], norm: list[float]) -> tuple[float, float]:
    def gap(x):
        top = sorted(x, reverse=True)
        return top[0] - top[1] if len(top) > 1 else math.inf
    return gap(scores), gap(norm)


def loglik_checked(model, fast_model, tokenizer, requests: list[Request], *, batch_size: int = 8, progress=None,
                   encoded=None, calibration: int = 16, min_margin: float = 0.25, safety: float = 2.0,
                   seed: int = 0) -> tuple[list[list[float]], Check]:
    """`loglik_scores` with `fast_model` (a bf16 copy) and the fp32 `model` as a check, so that every decision,
    acc and acc_norm, is the one fp32 makes:

    1. every item is scored by the fast model;
    2. `calibration` items, drawn with `seed`, are scored by fp32 too; the largest error of the fast model on the
       gap between two choices (and on that gap per byte) sets the margin: `safety` times that error, at least
       `min_margin` nats;
    3. every item whose best choice leads the next by less than the margin (raw, or per byte for acc_norm) is
       re-scored in fp32, and its fp32 scores are kept.

    A decision can still differ only if the fast model's error on an item exceeds `safety` times the largest
    error seen on the calibration sample; bench/eval_throughput.py counts such items against a full fp32 run.
    The scores of items not re-scored are bf16's (within the error above of fp32's)."""
    encoded = encoded if encoded is not None else encode_requests(tokenizer, requests)
    scores = loglik_scores(fast_model, tokenizer, requests, batch_size=batch_size, progress=progress, encoded=encoded)
    nbytes = [[max(1, len(c.encode("utf-8"))) for c in r.continuations] for r in requests]
    calib = sorted(random.Random(seed).sample(range(len(requests)), min(calibration, len(requests))))
    exact = _exact(model, tokenizer, requests, encoded, calib, batch_size)
    err = err_byte = 0.0
    for i in calib:
        fast, true = scores[i], exact[i]
        for a in range(len(fast)):
            for b in range(a + 1, len(fast)):
                e = abs((fast[a] - fast[b]) - (true[a] - true[b]))
                e_byte = abs((fast[a] / nbytes[i][a] - fast[b] / nbytes[i][b]) - (true[a] / nbytes[i][a] - true[b] / nbytes[i][b]))
                err, err_byte = max(err, e), max(err_byte, e_byte)
    longest = max((max(n) for n in nbytes), default=1)
    margin, margin_byte = max(min_margin, safety * err), max(min_margin / longest, safety * err_byte)
    close = []
    for i in range(len(requests)):
        gap, gap_byte = _gaps(scores[i], [s / n for s, n in zip(scores[i], nbytes[i])])
        if i not in exact and (gap < margin or gap_byte < margin_byte):
            close.append(i)
    exact.update(_exact(model, tokenizer, requests, encoded, close, batch_size))
    for i, sc in exact.items():
        scores[i] = sc
    return scores, Check(len(calib), err, err_byte, margin, margin_byte, len(close))


def _exact(model, tokenizer, requests, encoded, indices: list[int], batch_size: int) -> dict[int, list[float]]:
    if not indices:
        return {}
    sub = loglik_scores(model, tokenizer, [requests[i] for i in indices], batch_size=batch_size,
                        encoded=[encoded[i] for i in indices])
    return dict(zip(indices, sub))


def choose(scores: list[float], continuations: list[str] | None = None, *, normalise: bool = False) -> int:
    """Index of the best choice (first on ties, as argmax); `normalise` divides by continuation bytes (acc_norm)."""
    if normalise and continuations:
        scores = [s / max(1, len(c.encode("utf-8"))) for s, c in zip(scores, continuations)]
    return max(range(len(scores)), key=lambda k: (scores[k], -k))


# ------------------------------------------------------------------------------------ answers in text

_ANSWER_CUES = re.compile(
    r"(?:answer\s*(?:is|:)?|correct\s+(?:answer|option|choice)\s*(?:is|:)?|option|choice|答案\s*(?:是|为|：|:)?|"
    r"选\s*(?:项)?|正确(?:答案|选项)?\s*(?:是|为|：|:)?)\s*[\(\[（]?\s*([A-J])\b", re.IGNORECASE)


def extract_choice(text: str, labels: list[str], choices: list[str]) -> int | None:
    """The choice a free-text answer picks, or None when it cannot be told.

    Understands "The answer is C", "Answer: (C)", "C. Metformin", "C) ...", "答案：C", "选C", a lone letter,
    yes/no/maybe (and 是/否/可能) for PubMedQA-style labels, or exactly one option text named in the answer.
    """
    t = text.strip()
    if not t:
        return None
    letters = [lab for lab in labels if len(lab) == 1 and lab.isalpha()]
    if letters:
        if re.match(r"^\W*[A-J]\W*(?:or|and|/|或|和|、|,|，)\W*[A-J]\b", t):  # "A or B": hedged, no single answer
            return None
        m = _ANSWER_CUES.search(t)
        if m and m.group(1).upper() in letters:
            return letters.index(m.group(1).upper())
        m = re.match(r"^\s*[\(\[（]?([A-J])(?:[\)\]）.:：、,，\s]|$)", t) or re.match(r"^\s*[\(\[（]?([a-j])[\)\]）.:：]", t)
        if m and m.group(1).upper() in letters:  # a lower-case letter only before ")" or ".", never the article "a"
            return letters.index(m.group(1).upper())
    else:
        lowered = t.lower()
        synonyms = {"yes": ("yes", "是"), "no": ("no", "否", "不是"), "maybe": ("maybe", "可能", "不确定")}
        first = re.match(r"^\W*(yes|no|maybe)\b", lowered)
        if first and first.group(1) in labels:
            return labels.index(first.group(1))
        hits = {lab for lab in labels for w in synonyms.get(lab, (lab,)) if re.search(rf"(?<![a-z]){re.escape(w)}(?![a-z])", lowered)}
        if len(hits) == 1:
            return labels.index(hits.pop())
    named = [k for k, c in enumerate(choices) if c and c.strip().lower() in t.lower()]
    if len(named) == 1:
        return named[0]
    return None


# ------------------------------------------------------------------------------------ metrics


def macro_f1(gold: list[int], pred: list[int], n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in gold or predictions."""
    f1s = []
    for c in range(n_classes):
        tp = sum(g == c and p == c for g, p in zip(gold, pred))
        fp = sum(g != c and p == c for g, p in zip(gold, pred))
        fn = sum(g == c and p != c for g, p in zip(gold, pred))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s) if f1s else 0.0


def bootstrap_ci(correct: list[bool], *, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy."""
    n = len(correct)
    if n == 0:
        return (0.0, 0.0)
    rng = random.Random(seed)
    means = sorted(sum(correct[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    lo = means[int(math.floor((1 - level) / 2 * resamples))]
    hi = means[min(resamples - 1, int(math.ceil((1 + level) / 2 * resamples)) - 1)]
    return (lo, hi)


def task_metrics(items, preds: list[int | None], *, seed: int = 0, f1: bool = False) -> dict:
    """accuracy, 95% CI, per-subject accuracy, unparseable count (None predictions), macro-F1 if asked."""
    gold = [it.answer for it in items]
    correct = [p == g for p, g in zip(preds, gold)]
    out = {"n": len(items), "accuracy": sum(correct) / max(1, len(items)),
           "ci95": list(bootstrap_ci(correct, seed=seed)), "unparseable": sum(p is None for p in preds)}
    if f1:
        n_classes = max(len(it.choices) for it in items)
        out["macro_f1"] = macro_f1(gold, [-1 if p is None else p for p in preds], n_classes)
    subjects: dict[str, list[bool]] = {}
    for it, c in zip(items, correct):
        subjects.setdefault(it.subject, []).append(c)
    out["by_subject"] = {s: {"n": len(v), "accuracy": sum(v) / len(v)} for s, v in sorted(subjects.items())}
    return out


# ------------------------------------------------------------------------------------ perplexity


def text_perplexity(model, tokenizer, documents: list[str], *, block_size: int = 1024, batch_size: int = 4) -> dict:
    """Mean next-token loss over documents (EOS after each, as in PT), each document scored on its own
    (packed with restarting positions; no attention across documents). Returns tokens, loss, perplexity."""
    import torch
    import torch.nn.functional as F

    from medtune.data import packing

    device = model.get_input_embeddings().weight.device
    rows = list(packing.build_rows(packing.tokenize(documents, tokenizer), block_size, "documents"))
    collator = packing.Collator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    total, count = 0.0, 0
    with torch.no_grad():
        for k in range(0, len(rows), batch_size):
            batch = {name: t.to(device) for name, t in collator(rows[k:k + batch_size]).items()}
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
            targets = batch["labels"][:, 1:]
            keep = targets != -100
            total += F.cross_entropy(logits[:, :-1][keep].float(), targets[keep], reduction="sum").item()
            count += int(keep.sum())
    loss = total / max(1, count)
    return {"documents": len(documents), "tokens": count, "loss": loss, "perplexity": math.exp(min(loss, 50))}
