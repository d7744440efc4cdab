"""Sequence packing: several tokenised examples share one row of at most `block_size` tokens, with position
ids restarting at 0 for each example and no attention across examples.

No attention mask is passed: transformers (>=4.53) reads a row whose position ids restart as several
sequences and builds a block-diagonal causal mask for sdpa/eager/flash attention. `packing_supported`
checks that on the actual model before training relies on it (a model with its own attention code may
not do this; the stage then falls back to padded rows with an attention mask). Padding at the end of a
row is treated the same way: a short sequence of its own that no real token attends to and no label uses.

Row building for plain text (`tokenize`, `build_rows`) lives here too: continued pretraining trains on these rows
and `eval` scores general-text perplexity on them.
"""

from __future__ import annotations

import bisect
import random
from typing import Iterable, Iterator

import torch

from medtune.data import mixing


def best_fit_decreasing(lengths: list[int], block_size: int) -> list[list[int]]:
    """Group example indices into bins whose lengths sum to at most `block_size` (longest first, each into
    the fullest bin it fits). Returns the bins as lists of indices."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (space left, bin index)
    for i in order:
        n = lengths[i]
        if n > block_size:
            raise ValueError(f"example {i} has {n} tokens, more than block_size={block_size}")
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            space, b = free.pop(k)
            bins[b].append(i)
            bisect.insort(free, (space - n, b))
        else:
            bins.append([i])
            bisect.insort(free, (block_size - n, len(bins) - 1))
    return bins


def pack(examples: list[dict], block_size: int, seed: int = 0) -> list[dict]:
    """Pack examples ({"input_ids", "labels"}) into rows ({"input_ids", "labels", "position_ids"}).

    The first label of every example is masked so no example is trained to follow the one before it.
    Examples are shuffled with `seed` before binning so that equal lengths do not always share a row.
    """
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    bins = best_fit_decreasing([len(examples[i]["input_ids"]) for i in order], block_size)
    rows = []
    for b in bins:
        ids, labels, pos = [], [], []
        for j in b:
            ex = examples[order[j]]
            ids.extend(ex["input_ids"])
            labels.extend([-100] + list(ex["labels"][1:]))
            pos.extend(range(len(ex["input_ids"])))
        rows.append({"input_ids": ids, "labels": labels, "position_ids": pos})
    return rows


def unpacked(examples: list[dict]) -> list[dict]:
    """One example per row (no packing), in the same row format."""
    return [
        {"input_ids": list(ex["input_ids"]), "labels": [-100] + list(ex["labels"][1:]),
         "position_ids": list(range(len(ex["input_ids"])))}
        for ex in examples
    ]


def tokenize(texts: Iterable[str], tokenizer, batch: int = 256) -> Iterator[list[int]]:
    """Token ids of each document, EOS appended (the separator between documents), in batches for speed."""
    eos = tokenizer.eos_token_id
    for chunk in mixing.iter_chunks(texts, batch):
        for ids in tokenizer(chunk, add_special_tokens=True)["input_ids"]:
            yield ids + [eos] if not ids or ids[-1] != eos else ids


def build_rows(documents: Iterable[list[int]], block_size: int, mode: str, *, window: int = 0, seed: int = 0,
               stats: dict | None = None) -> Iterator[dict]:
    """Token lists -> training rows {"input_ids", "labels", "position_ids"}.

    documents: best-fit packing of `window` documents at a time (0 = all), positions restarting per document,
    a document longer than `block_size` cut into pieces; concat: one running stream cut every `block_size`
    tokens; none: one document (or piece) per row.
    """
    stats = stats if stats is not None else {}
    stats.setdefault("documents_split", 0)
    if mode == "concat":
        buf: list[int] = []
        for ids in documents:
            buf.extend(ids)
            while len(buf) >= block_size:
                row, buf = buf[:block_size], buf[block_size:]
                yield {"input_ids": row, "labels": list(row), "position_ids": list(range(block_size))}
        if len(buf) > 1:
            yield {"input_ids": buf, "labels": list(buf), "position_ids": list(range(len(buf)))}
        return

    def pieces() -> Iterator[dict]:
        for ids in documents:
            if len(ids) > block_size:
                stats["documents_split"] += 1
            for start in range(0, len(ids), block_size):
                piece = ids[start:start + block_size]
                if len(piece) > 1:
                    yield {"input_ids": piece, "labels": piece}

    batches = mixing.iter_chunks(pieces(), window) if window else [list(pieces())]
    for k, batch in enumerate(batches):
        yield from unpacked(batch) if mode == "none" else pack(batch, block_size, seed=seed + k)


class Collator:
    """Pad rows to the longest in the batch. With `attention_mask=False` (packing), padding becomes a
    sequence of its own through restarting position ids; otherwise a 2-D attention mask is returned."""

    def __init__(self, pad_token_id: int, *, attention_mask: bool = False, pad_to_multiple_of: int = 1):
        self.pad_token_id = pad_token_id
        self.attention_mask = attention_mask
        self.multiple = pad_to_multiple_of
        self.real_tokens = 0
        self.padded_tokens = 0

    def __call__(self, rows: list[dict]) -> dict:
        longest = max(len(r["input_ids"]) for r in rows)
        longest = -(-longest // self.multiple) * self.multiple
        ids, labels, pos, mask = [], [], [], []
        for r in rows:
            n = len(r["input_ids"])
            pad = longest - n
            ids.append(r["input_ids"] + [self.pad_token_id] * pad)
            labels.append(r["labels"] + [-100] * pad)
            pos.append(r["position_ids"] + list(range(pad)))
            mask.append([1] * n + [0] * pad)
            self.real_tokens += n
            self.padded_tokens += longest
        batch = {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "position_ids": torch.tensor(pos),
        }
        if self.attention_mask:
            batch["attention_mask"] = torch.tensor(mask)
        return batch


@torch.no_grad()
def packing_supported(model) -> bool:
    """True when `model` keeps packed sequences apart given restarting position ids (checked numerically)."""
    was_training = model.training
    model.eval()
    try:
        vocab = model.get_input_embeddings().weight.shape[0]
        device = model.get_input_embeddings().weight.device
        g = torch.Generator().manual_seed(0)
        a = torch.randint(0, vocab, (1, 5), generator=g).to(device)
        b = torch.randint(0, vocab, (1, 4), generator=g).to(device)
        alone = model(input_ids=b, use_cache=False).logits.float()
        row = torch.cat([a, b], dim=1)
        pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3]], device=device)
        packed = model(input_ids=row, position_ids=pos, use_cache=False).logits.float()[:, 5:]
        return bool(torch.allclose(packed, alone, atol=1e-3, rtol=1e-3))
    except Exception:
        return False
    finally:
        model.train(was_training)
